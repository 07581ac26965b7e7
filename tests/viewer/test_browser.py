"""The viewer in a real browser (headless Chromium driven by Playwright): `nfield view` shows a
trained run and follows the camera, and `--viewer` training ends exactly as training without it."""

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

from nfield.run import RunRequest, train
from nfield.viewer import live
from nfield.viewer.live import LiveViewer
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


def _request(image: Path, out: Path, viewer_port=None) -> RunRequest:
    return RunRequest("image", str(image), out=out, device="cpu", train={"steps": 80, "progress": False}, viewer_port=viewer_port)


@pytest.fixture(scope="module")
def plain_run(astronaut, tmp_path_factory) -> tuple[Path, dict]:
    """A small trained run, and its final metrics (trained without the viewer)."""
    out = tmp_path_factory.mktemp("plain") / "run"
    return out, train(_request(astronaut, out))


def _frames_drawn(page) -> int:
    found = re.search(r"(\d+) frames drawn", page.inner_text("body"))
    return int(found.group(1)) if found else 0


def _wait_for_frames(page, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while _frames_drawn(page) < count:
        assert time.monotonic() < deadline, f"fewer than {count} frames drawn in {timeout} s"
        time.sleep(0.2)
    time.sleep(1.0)  # the last image reaches the canvas


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
        _wait_for_frames(page, 2)  # the preview, then the full frame
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
        _wait_for_frames(page, drawn + 2)
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
    training = threading.Thread(target=lambda: result.update(train(_request(astronaut, tmp_path / "live", port))))
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
