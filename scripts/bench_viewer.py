"""What the live viewer costs training: the same run trained with and without ``--viewer``, with a
headless Chromium page open on the viewer the whole time, drawing frames between steps.

For each run kind the task and trainer are built as ``nfield`` builds them; the viewer run first
waits (untimed) for the page to connect, then both runs are timed from their first to their last
step by wall clock. The headline is the slowdown, wall(viewer) / wall(plain) - 1, with
``--repeats N`` the median over N pairs of a plain run and the viewer run after it (the machine's
speed drifts between runs; a pair shares the drift). It is what the viewer's
budget keeps near `nfield.viewer.live.RENDER_SHARE` (the target is at most 10 %); the viewer's own
accounting of its share and the frames it drew are reported beside it. The two runs end with the
same metrics (the viewer never touches the training's random streams), which is checked too.

The browser stands for the user's own machine: it runs on the last CPU core and training on the
others (both runs). On a 2-core machine the browser's software WebGL still slows training through
the shared memory system: ``--page all`` adds a control, the plain run beside a busy process on the
browser's core and no viewer at all.

    python scripts/bench_viewer.py --scale cpu   # image, SDF and NeRF runs sized for 2 CPU cores
    python scripts/bench_viewer.py --scale gpu   # GPU-sized runs (CUDA)
    python scripts/bench_viewer.py --scale gpu-short --page simulated  # what gpu_check.sh runs
    python scripts/bench_viewer.py --scale tiny  # smoke test
    python scripts/bench_viewer.py --scale cpu --repeats 7  # each side 7 times, alternated (see below)

``--page chromium`` needs Chromium (Debian's ``chromium``) and playwright (``pip install -e .[test]``);
``--page simulated`` stands for a page on another machine without a browser (its camera orbits, so
the viewer draws all the time), which is what a GPU machine without a browser measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import skimage.data
import skimage.transform
import torch
from bench_report import report_header, synchronize, write_report

from nfield.run_directory import RunDirectory
from nfield.runs.single import TASKS, build, new_config
from nfield.training.trainer import resolve_device
from nfield.viewer.live import RENDER_SHARE, LiveViewer
from nfield.viewer.server import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's scenes/ generators
from scenes.synthetic import generate  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The SDF run's data and evaluation sizes at CPU scale (its closing evaluation is untimed, but at the
#: task's defaults it took minutes on a CPU).
SMALL_SDF_EVALUATION = dict(
    pool_size=2**15, octree_points=2**16, eval_points=2**12, mesh_resolution=64, metric_points=2**13, iou_points=2**14
)
#: (kind, model, steps, task options, viewer rows) per scale.
SCALES: dict[str, list[tuple[str, str, int, dict[str, Any], int]]] = {
    "tiny": [("image", "siren", 60, {}, 48)],
    # gpu_check.sh's share (about 45 s): every run is trained twice. 400 steps (1.5 s on an H200)
    # ended before the page had connected; 3000 steps of 3 ms leave it about 9 s
    "gpu-short": [("image", "siren", 3000, {}, 720)],
    "cpu": [
        ("image", "siren", 150, {}, 240),
        ("sdf", "nglod", 200, {"batch_size": 4096, **SMALL_SDF_EVALUATION}, 160),
        ("nerf", "ngp", 40, {"batch_rays": 256}, 160),
    ],
    "gpu": [
        ("image", "siren", 5000, {}, 720),
        ("sdf", "nglod", 2000, {}, 720),
        ("nerf", "ngp", 3000, {}, 720),
    ],
}
CHROMIUM_ARGS = [
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


class StepClock:
    """An observer that notes the wall time of the first and the last step."""

    def __init__(self, device):
        self.device, self.first, self.last = device, None, None

    def after_step(self, trainer) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.first = self.first if self.first is not None else now
        self.last = now


def source_for(kind: str, scale: str, folder: Path) -> str:
    """The data of a `kind` run: the astronaut (256 x 256 for gpu-short, 512 x 512 for gpu), the bunny,
    a generated scene."""
    if kind == "image":
        size = {"tiny": 48, "cpu": 64, "gpu-short": 256}.get(scale, 512)
        path = folder / "astronaut.png"
        iio.imwrite(path, (skimage.transform.resize(skimage.data.astronaut(), (size, size)) * 255).astype(np.uint8))
        return str(path)
    if kind == "sdf":
        return str(SHARED / "sdf" / "bunny.obj")
    size = 48 if scale == "cpu" else 200
    return str(generate("primitives", folder / "primitives", size=size, n_train=40, n_val=1, n_test=4))


def train_once(kind: str, model: str, steps: int, options: dict, source: str, out: Path, device, page=None, rows=240):
    """Build the run as nfield does and train it, with the live viewer and a `page` ("chromium" or
    "simulated") on it, or without (None); returns (seconds from the first to the last step,
    metrics, the viewer's summary or None)."""
    train_cfg, task_part, data = TASKS[kind][2](source, model, {}, options, device)
    train_cfg = dataclasses.replace(train_cfg, steps=steps, progress=False, eval_every=0, checkpoint_every=0, log_every=25)
    config = new_config(kind, model, train_cfg, task_part)
    RunDirectory(out).prepare(resume=False, overwrite=True)
    RunDirectory(out).write_config(config)
    task, trainer = build(config, device, data, out)
    if callable(getattr(task, "write_run_files", None)):
        task.write_run_files(out)
    clock = StepClock(device)
    trainer.observers.append(clock)
    live = browser = None
    if page == "load":  # no viewer: a busy process on the browser's core stands for the browser's load
        browser = CoreLoad(BROWSER_CPUS)
    elif page is not None:
        live = LiveViewer.start(out, config, task, free_port("127.0.0.1"))
        live.viewer.resolution.value = rows
        browser = open_page(live) if page == "chromium" else SimulatedPage(live)
        trainer.observers.append(live)
    try:
        metrics = trainer.fit()
    finally:
        summary = None
        if page == "load":
            browser.close()
        if live is not None:
            share, frames = live.spent / max(live.trained, 1e-9), live.viewer.frames_sent
            summary = {"viewer_share": share, "frames": frames, "close": live.close()}
            browser.close()
    return clock.last - clock.first, metrics, summary


_PLAYWRIGHT: list = []


#: The cores headless Chromium runs on (set by `main`).
BROWSER_CPUS: set[int] = set()


class CoreLoad:
    """A memory-bound busy loop in its own process on `cpus`: what a browser drawing WebGL in software
    costs training on the same machine, without any viewer. On this 2-core machine it alone slows
    training about as much as the Chromium page does, so it is the control for the Chromium rows."""

    def __init__(self, cpus: set[int]):
        import subprocess

        code = "import numpy as np\na = np.random.rand(4_000_000)\nwhile True:\n    a.sum()\n    a *= 1.0000001"
        self.process = subprocess.Popen([sys.executable, "-c", code])
        if cpus:
            os.sched_setaffinity(self.process.pid, cpus)
        time.sleep(1.0)  # numpy imported and the loop running before training starts

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def start_browser(browser_cpus: set[int] | None) -> None:
    """Launch headless Chromium (and Playwright's driver) on `browser_cpus`: the browser stands for
    the user's own machine, so its WebGL drawing must not take the training's cores."""
    from playwright.sync_api import sync_playwright

    training_cpus = os.sched_getaffinity(0)
    if browser_cpus:
        os.sched_setaffinity(0, browser_cpus)  # inherited by the processes launched now
    try:
        runtime = sync_playwright().start()
        _PLAYWRIGHT.append(runtime)
        _PLAYWRIGHT.append(runtime.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS))
    finally:
        os.sched_setaffinity(0, training_cpus)


def open_page(live: LiveViewer):
    """A headless Chromium page on `live`'s viewer, returned once the page has sent its camera
    (untimed)."""
    page = _PLAYWRIGHT[1].new_page(viewport={"width": 400, "height": 300})  # little WebGL work in the browser
    page.goto(live.viewer.url)
    deadline = time.monotonic() + 120
    while not any(b.pose for b in live.viewer.browsers.values()):
        if time.monotonic() > deadline:
            raise SystemExit("the page never connected to the viewer")
        time.sleep(0.05)
    time.sleep(2.0)  # the page's first load (scene, controls, frustums) settles before the clock starts
    return page


class SimulatedPage:
    """Stands for a page on another machine, without a browser: its camera orbits the scene (a new
    pose every `MOVE_SECONDS`, so the viewer keeps drawing previews and full frames, the worst case
    for training), and each frame it receives is JPEG-encoded as viser encodes it, then dropped."""

    MOVE_SECONDS = 0.5

    def __init__(self, live: LiveViewer, aspect: float = 16 / 9):
        from types import SimpleNamespace

        from nfield.render.cameras import look_at
        from nfield.viewer.cameras import browser_pose
        from nfield.viewer.server import _Browser

        self.viewer, self.frames = live.viewer, 0
        framing = self.viewer.display.framing()
        self.centre, self.up = np.asarray(framing.look_at), np.asarray(framing.up) / np.linalg.norm(framing.up)
        self.offset, self.fov, self.aspect = np.asarray(framing.position) - self.centre, framing.fov_y, aspect
        self.look_at, self.browser_pose = look_at, browser_pose
        handle = SimpleNamespace(client_id=-1, scene=SimpleNamespace(set_background_image=self._receive))
        self.browser = _Browser(handle)
        self._move(0.0)
        with self.viewer.lock:
            self.viewer.browsers[-1] = self.browser
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._orbit, daemon=True)
        self.thread.start()

    def _move(self, angle: float) -> None:
        k, v = self.up, self.offset  # Rodrigues' rotation of the offset about the up axis
        rotated = v * math.cos(angle) + np.cross(k, v) * math.sin(angle) + k * np.dot(k, v) * (1 - math.cos(angle))
        c2w = self.look_at(tuple(self.centre + rotated), tuple(self.centre), tuple(self.up))
        wxyz, position = self.browser_pose(c2w)
        with self.viewer.lock:
            self.browser.pose = (tuple(wxyz.tolist()), tuple(position.tolist()), self.fov, self.aspect)
            self.browser.moved_at = time.perf_counter()

    def _orbit(self) -> None:
        angle = 0.0
        while not self.stopped.wait(self.MOVE_SECONDS):
            angle += math.radians(10)
            self._move(angle)

    def _receive(self, image, format="jpeg", jpeg_quality=90) -> None:
        if image is not None:
            iio.imwrite("<bytes>", image, extension=".jpg", quality=jpeg_quality)
            self.frames += 1

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--page",
        choices=("simulated", "chromium", "both", "all"),
        default="both",
        help="what looks at the viewer: headless Chromium (camera still), a simulated page (camera orbiting), "
        "both, or all: both and a control run without the viewer but with a busy process on the browser's core",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: print only)")
    parser.add_argument("--kinds", nargs="+", choices=("image", "sdf", "nerf"), default=None, help="only these runs")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, alternated; the table gives medians")
    args = parser.parse_args(argv)
    pages = {"both": ["simulated", "chromium"], "all": ["simulated", "chromium", "load"]}.get(args.page, [args.page])
    if "chromium" in pages and shutil.which("chromium") is None:
        raise SystemExit("--page chromium needs Chromium (Debian's chromium package); --page simulated does without")
    device = resolve_device(args.device)
    cpus = sorted(os.sched_getaffinity(0))
    browser_cpus = {cpus[-1]} if len(cpus) > 1 and "chromium" in pages else None
    BROWSER_CPUS.update(browser_cpus or ())
    if "chromium" in pages:
        start_browser(browser_cpus)
    if browser_cpus:  # training keeps the other cores, with or without the viewer
        os.sched_setaffinity(0, set(cpus) - browser_cpus)
        torch.set_num_threads(len(cpus) - 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind, model, steps, options, view_rows in SCALES[args.scale]:
            if args.kinds and kind not in args.kinds:
                continue
            source = source_for(kind, args.scale, folder)
            plain_times, live_times = [], {page: [] for page in pages}
            shares, frames, same = {page: [] for page in pages}, {page: [] for page in pages}, {page: True for page in pages}
            # alternated (plain, then each page) so a drift of the machine's speed hits both sides alike
            for repeat in range(args.repeats):
                plain, plain_metrics, _ = train_once(
                    kind, model, steps, options, source, folder / f"{kind}-plain-{repeat}", device
                )
                plain_times.append(plain)
                for page in pages:
                    live, live_metrics, viewer = train_once(
                        kind, model, steps, options, source, folder / f"{kind}-{page}-{repeat}", device, page=page, rows=view_rows
                    )
                    live_times[page].append(live)
                    shares[page].append(viewer["viewer_share"] if viewer else 0.0)
                    frames[page].append(viewer["frames"] if viewer else 0)
                    same[page] &= {k: v for k, v in plain_metrics.items() if isinstance(v, float)} == {
                        k: v for k, v in live_metrics.items() if isinstance(v, float)
                    }
            for page in pages:
                plain, live = statistics.median(plain_times), statistics.median(live_times[page])
                # each viewer run against the plain run just before it: the machine's speed drifts
                # (runs of the same thing differed by 20 % here), and adjacent runs share the drift
                paired = statistics.median(v / p for v, p in zip(live_times[page], plain_times))
                rows.append(
                    {
                        "kind": kind,
                        "model": model,
                        "page": page,
                        "steps": steps,
                        "viewer_rows": view_rows,
                        "repeats": args.repeats,
                        "plain_seconds": round(plain, 3),
                        "viewer_seconds": round(live, 3),
                        "slowdown_percent": round(100 * (paired - 1), 2),
                        "plain_seconds_each": [round(t, 3) for t in plain_times],
                        "viewer_seconds_each": [round(t, 3) for t in live_times[page]],
                        "viewer_share_percent": round(100 * statistics.median(shares[page]), 2),
                        "frames_drawn": int(statistics.median(frames[page])),
                        "same_final_metrics": same[page],
                    }
                )
                print(f"{kind}: {rows[-1]}", file=sys.stderr)
                write_report(args.out, {**report_header(device, scale=args.scale, render_share=RENDER_SHARE), "runs": rows})
    if _PLAYWRIGHT:
        _PLAYWRIGHT[1].close()
        _PLAYWRIGHT[0].stop()
    columns = ("run", "page", "steps", "plain s", "viewer s", "slowdown", "viewer share", "frames", "same metrics")
    print("  ".join(f"{c:>12}" for c in columns))
    for r in rows:
        cells = (f"{r['kind']} {r['model']}", r["page"], r["steps"], f"{r['plain_seconds']:.2f}", f"{r['viewer_seconds']:.2f}")
        cells += (f"{r['slowdown_percent']:.1f}%", f"{r['viewer_share_percent']:.1f}%")
        cells += (r["frames_drawn"], r["same_final_metrics"])
        print("  ".join(f"{str(c):>12}" for c in cells))
    placement = {"training_cpus": sorted(os.sched_getaffinity(0)), "browser_cpus": sorted(browser_cpus or [])}
    report = {**report_header(device, scale=args.scale, render_share=RENDER_SHARE, **placement), "runs": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
