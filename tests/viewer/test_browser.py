"""The viewer in a real browser (headless Chromium driven by Playwright): `nfield view` shows a
trained run and follows the camera, an SDF run's surface appears within seconds, an image run's
first view shows every pane whole with a readable loss axis, an idle `nfield view` sleeps, and
`--viewer` training ends exactly as training without it."""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import skimage.data
import skimage.transform

from nfield.runs.single import RunRequest, train
from nfield.viewer import live
from nfield.viewer.displays import PANEL_BACKGROUND
from nfield.viewer.live import LiveViewer, live_viewer
from nfield.viewer.server import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the test extra)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="the browser tests need Chromium (Debian's chromium; .ci/run installs it)"
)
#: Chromium as root in a sandbox without network or GPU: software WebGL (SwiftShader) for the page's canvas.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 800, "height": 520}
CANVAS = (slice(160, 520), slice(0, 440))  # rows, columns of the 3D view clear of the panel and notices


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "astronaut.png"
    iio.imwrite(path, (skimage.transform.resize(skimage.data.astronaut(), (32, 32)) * 255).astype(np.uint8))
    return path


def _request(image: Path, out: Path) -> RunRequest:
    return RunRequest("image", str(image), out=out, device="cpu", train={"steps": 80, "progress": False})


@pytest.fixture(scope="module")
def plain_run(astronaut, tmp_path_factory) -> tuple[Path, dict]:
    """A small trained run, and its final metrics (trained without the viewer)."""
    out = tmp_path_factory.mktemp("plain") / "run"
    return out, train(_request(astronaut, out))


def _frames_drawn(page) -> int:
    found = re.search(r"(\d+) frames drawn", page.inner_text("body"))
    return int(found.group(1)) if found else 0


def _wait_for_full_frame(page, after: int = 0, timeout: float = 90.0) -> None:
    """Until a frame at the page's resolution is on the page, more than `after` frames were drawn,
    and no frame came for half a second."""
    deadline = time.monotonic() + timeout
    seen = (-1, "")
    while True:
        text = page.inner_text("body")
        now = (_frames_drawn(page), text)
        if now == seen and now[0] > after and re.search(r"\bframe \d+x\d+ drawn", text):
            break
        assert time.monotonic() < deadline, f"no settled full frame in {timeout} s: {text}"
        seen = now
        time.sleep(0.5)
    time.sleep(0.5)  # the last image reaches the canvas


def _canvas(page) -> np.ndarray:
    return iio.imread(page.screenshot(), extension=".png")[CANVAS][..., :3].astype(np.float32)


def test_view_shows_a_trained_run_and_follows_the_camera(browser, plain_run):
    run_dir = plain_run[0]
    port = free_port("127.0.0.1")
    server = subprocess.Popen(
        [sys.executable, "-m", "nfield.cli", "view", str(run_dir), "--port", str(port), "--device", "cpu", "--resolution", "128"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "viewer: http://127.0.0.1" in server.stderr.readline()
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"http://127.0.0.1:{port}")
        _wait_for_full_frame(page)  # a preview, then the full frame (or the full frame at once)
        assert "checkpoint step 80 of 80" in page.inner_text("body")
        before = _canvas(page)
        dark = (before.max(axis=-1) < 60).mean()  # the panels' grey surround
        assert 0.2 < dark < 0.95, dark
        assert before.std() > 20  # the picture, not an empty canvas
        # the astronaut's orange suit: a pixel of the reconstruction and of the target
        assert ((before[..., 0] > 150) & (before[..., 2] < 100)).sum() > 50
        drawn = _frames_drawn(page)
        page.mouse.move(250, 380)
        page.mouse.down()
        page.mouse.move(330, 400, steps=8)
        page.mouse.up()
        _wait_for_full_frame(page, after=drawn)
        after = _canvas(page)
        assert np.abs(after - before).mean() > 5
        page.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_training_with_the_viewer_open_ends_as_training_without_it(browser, astronaut, plain_run, tmp_path, monkeypatch, capsys):
    plain = plain_run[1]
    monkeypatch.setattr(live, "RENDER_SHARE", 0.5)  # draw a lot between steps: the metrics must not move
    port = free_port("127.0.0.1")
    connected = threading.Event()
    after_step = LiveViewer.after_step

    def wait_for_the_page(self, trainer):  # hold training at step 10 until the page has its camera
        if trainer.step == 10:
            deadline = time.monotonic() + 90
            while not any(b.pose for b in self.viewer.browsers.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            connected.set()
        after_step(self, trainer)

    monkeypatch.setattr(LiveViewer, "after_step", wait_for_the_page)
    result = {}
    training = threading.Thread(target=lambda: result.update(train(_request(astronaut, tmp_path / "live"), live_viewer(port))))
    training.start()
    page = browser.new_page(viewport=VIEWPORT)
    deadline = time.monotonic() + 60
    while True:
        try:
            page.goto(f"http://127.0.0.1:{port}")
            break
        except playwright.Error:
            assert time.monotonic() < deadline, "the live viewer never served its page"
            time.sleep(0.3)
    assert connected.wait(90)
    training.join(timeout=300)
    assert not training.is_alive()
    err = capsys.readouterr().err
    page.close()
    drew = re.search(r"viewer: drew (\d+) frame\(s\) while training, [\d.]+ s \(([\d.]+)% of the training time\)", err)
    assert drew and int(drew.group(1)) >= 1, err
    assert {k: result[k] for k in ("step", "psnr", "ssim")} == {k: plain[k] for k in ("step", "psnr", "ssim")}


# --- an SDF run, the first view of an image run, an idle server ----------------------------------


@contextlib.contextmanager
def _serving(run_dir: Path, *flags):
    """`nfield view run_dir` on a free port, once it shows the run's checkpoint: (process, url)."""
    port = free_port("127.0.0.1")
    argv = [sys.executable, "-m", "nfield.cli", "view", str(run_dir), "--port", str(port), "--device", "cpu", *map(str, flags)]
    server = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        while not any("viewer: showing step" in line for line in seen):
            line = server.stderr.readline()
            assert line, f"nfield view ended before it showed the run: {seen}"
            seen.append(line)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def image_view(plain_run):
    """`nfield view` of the image run, shared by the tests below: (process, url)."""
    with _serving(plain_run[0]) as served:
        yield served


@pytest.fixture(scope="module")
def sdf_view(bunny_run):
    """`nfield view` of the suite's NGLOD bunny (tests/conftest.py), shared by the tests below: (process, url)."""
    with _serving(bunny_run[0]) as served:
        yield served


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads) so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


@pytest.mark.parametrize("kind", ["image", "sdf"])
def test_an_idle_view_sleeps(kind, request):
    """No browser: `nfield view` takes well under 5% of a core (it used to spin at 100%)."""
    server, _ = request.getfixturevalue(f"{kind}_view")
    time.sleep(0.5)  # past the start-up, or a page that just closed
    cpu, wall = _cpu_seconds(server.pid), time.monotonic()
    time.sleep(3.0)
    share = (_cpu_seconds(server.pid) - cpu) / (time.monotonic() - wall)
    assert share < 0.05, f"an idle nfield view used {100 * share:.0f}% of a core"


def _canvas_box(page, timeout: float = 15.0) -> dict:
    """The 3D view's box on the page (CSS pixels): the largest canvas (the plots are canvases too),
    once the page has laid it out."""
    deadline = time.monotonic() + timeout
    while True:
        box = page.evaluate(
            """() => Array.from(document.querySelectorAll("canvas"), c => c.getBoundingClientRect())
                .map(r => ({x: r.left, y: r.top, width: r.width, height: r.height}))
                .reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a), {x: 0, y: 0, width: 0, height: 0})"""
        )
        if box["width"] > 100 and box["height"] > 100:
            return box
        assert time.monotonic() < deadline, f"no 3D view on the page after {timeout} s"
        time.sleep(0.1)


def _shot(page, box: dict) -> np.ndarray:
    """(H, W, 3) float32 screenshot of `box` (CSS pixels of the page; device scale 1)."""
    image = iio.imread(page.screenshot(), extension=".png")[..., :3].astype(np.float32)
    top, left = round(box["y"]), round(box["x"])
    return image[top : top + round(box["height"]), left : left + round(box["width"])]


#: Seconds after the page loads by which an SDF page shows the surface, and a frame at its full resolution
#: (a 2-core CPU, Chromium rendering beside the server; the old 1-row bands took 12 s for the full frame alone).
SURFACE_SECONDS, FULL_FRAME_SECONDS = 8.0, 12.0


def test_the_sdf_page_shows_the_surface_within_seconds(browser, sdf_view, tmp_path):
    """The middle of the 3D view turns from the empty page to the sphere-traced bunny within
    seconds of the page loading on a CPU, and the frame at the page's resolution follows soon."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(sdf_view[1])
    started = time.monotonic()
    while True:
        view = _shot(page, _canvas_box(page))  # laid out anew while the panel docks
        height, width = view.shape[:2]
        background = np.median(view[:8].reshape(-1, 3), axis=0)  # the top rows: above the bunny
        centre = view[int(0.4 * height) : int(0.6 * height), int(0.4 * width) : int(0.6 * width)]
        surface = (np.abs(centre - background).max(axis=-1) > 40).mean()
        if surface > 0.5 and centre.std() > 5:
            break
        waited = time.monotonic() - started
        assert waited < SURFACE_SECONDS, f"no surface in the middle of the view after {waited:.1f} s ({surface:.0%} differs)"
        time.sleep(0.25)
    surface_seconds = time.monotonic() - started
    while not re.search(r"\bframe \d+x240 drawn", page.inner_text("body")):
        waited = time.monotonic() - started
        assert waited < FULL_FRAME_SECONDS, f"no 240-row frame after {waited:.1f} s: {page.inner_text('body')}"
        time.sleep(0.25)
    full_seconds = time.monotonic() - started
    page.screenshot(path=str(tmp_path / "sdf_page.png"))
    page.close()
    print(f"the surface showed {surface_seconds:.1f} s after the page loaded, the full frame {full_seconds:.1f} s")


def _runs(mask: np.ndarray, shortest: int) -> list[tuple[int, int]]:
    """[first, last) of the runs of True in the 1-D `mask` at least `shortest` long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= shortest]


def test_the_image_page_shows_every_pane_whole(browser, image_view, tmp_path):
    """At 1280x720 the first view shows the reconstruction, the target and the error map whole
    beside the panel, drawn at the image's resolution or finer, and the loss plot whole with a
    labelled tick and a grid line at each decade of its log axis only."""
    viewport = {"width": 1280, "height": 720}
    page = browser.new_page(viewport=viewport)
    page.goto(image_view[1])
    _wait_for_full_frame(page, timeout=30.0)
    page.screenshot(path=str(tmp_path / "image_page.png"))
    rows = int(re.search(r"\bframe \d+x(\d+) drawn", page.inner_text("body")).group(1))
    box = _canvas_box(page)
    assert box["x"] >= 0 and box["y"] >= 0
    assert box["x"] + box["width"] <= viewport["width"] and box["y"] + box["height"] <= viewport["height"]
    view = _shot(page, box)
    height, width = view.shape[:2]
    # not the grey around the panes (dark image pixels may be: panes are found from the share of such pixels)
    pane = np.abs(view - 255 * PANEL_BACKGROUND).max(axis=-1) > 12
    panes = _runs(pane.mean(axis=0) > 0.3, shortest=width // 20)  # columns: the panes, and the gaps between them
    assert len(panes) == 3, f"panes across the view: {panes} (width {width})"
    assert panes[0][0] > 0 and panes[-1][1] < width, f"a pane touches the side of the view: {panes}"
    for first, last in panes:
        top, bottom = max(_runs(pane[:, first:last].mean(axis=1) > 0.5, 1), key=lambda run: run[1] - run[0])
        assert top > 0 and bottom < height, f"a pane touches the top or bottom of the view: rows {top}..{bottom} of {height}"
        assert view[top:bottom, first:last].std() > 10, "a blank pane"
        # uncovered: a pane is the 32x32 image's square, nothing (the panel) runs on from its side
        assert abs((last - first) / (bottom - top) - 1) < 0.1, f"a pane {last - first}x{bottom - top} is not the image's square"
        panel_rows = (bottom - top) * rows / height  # the frame's rows across the pane
        assert panel_rows >= 32 - 1, f"a pane is {panel_rows:.0f} rows of the frame tall, the image 32"
    chart = page.evaluate(
        """() => {
            const charts = Object.values(window.__viserTestpoints.uplots).map(t => t.chart);
            const loss = charts.find(c => c.series[1].label === "loss");
            const r = loss.root.getBoundingClientRect();
            return {box: [r.left, r.top, r.right, r.bottom], splits: loss.axes[1]._splits, labels: loss.axes[1]._values};
        }"""
    )
    left, top, right, bottom = chart["box"]
    assert 0 <= left < right <= viewport["width"] and 0 <= top < bottom <= viewport["height"], chart["box"]
    plot = iio.imread(page.screenshot(), extension=".png")[round(top) : round(bottom), round(left) : round(right), :3]
    red = (plot[..., 0] > 150) & (plot[..., 1] < 110) & (plot[..., 2] < 110)  # the loss curve, #d62728
    assert red.sum() > 20, "no loss curve"
    exponents = np.log10(chart["splits"])
    assert np.allclose(exponents, np.round(exponents)), f"grid lines between the decades: {chart['splits']}"
    labelled = [label for label in chart["labels"] if label is not None]
    assert len(labelled) >= 2 and "0" not in labelled, chart["labels"]
    for split, label in zip(chart["splits"], chart["labels"]):
        assert label is None or float(label) == pytest.approx(split), (split, label)
    page.close()
