"""The viewer's page: a viser server, one render queue for every connected browser, the run's status.

Why viser: it is the web viewer nerfstudio is built on, kept up on PyPI with its web client built
into the wheel (no Node.js at install time), and it already has what a field viewer needs: the
browser camera streamed to Python, a background image per browser, camera frustums, meshes, point
clouds, GUI controls and live plots (uPlot). The page is served over HTTP and a websocket, so it
works from a remote GPU machine through an SSH tunnel (``ssh -L 8080:localhost:8080 host``).

Rendering. Browser events (camera moves, GUI changes) only record what is wanted; all rendering
happens in `Viewer.work`, called by the thread that owns the model (the viewer's loop, or the
trainer between steps), so the model is never used by two threads at once. A moved camera first
gets a quick preview (`PREVIEW_ROWS` rows), then, once it has been still for `SETTLE_SECONDS`, the
full frame at the page's resolution. Frames are drawn in bands of rows sized from the measured
speed, so `work(budget)` returns close to its budget and a new camera abandons a stale frame.
New weights (a newer checkpoint, or training going on) redraw the frames at most every
`REFRESH_SECONDS`. Rendering never touches the random number generators or autograd state the
training uses (`torch.random.fork_rng`, evaluation mode restored afterwards).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from nfield.errors import NfieldError
from nfield.viewer.cameras import ViewCamera, frame_size, pose_from_browser
from nfield.viewer.scenes import scene_for

#: Rows of the quick frame drawn while the camera moves.
PREVIEW_ROWS = 96
#: Seconds without camera events before the full-resolution frame is drawn.
SETTLE_SECONDS = 0.25
#: Seconds between redraws while the weights change (training, new checkpoints).
REFRESH_SECONDS = 2.0
#: Seconds between re-reads of metrics.jsonl for the page's curves.
CURVES_SECONDS = 2.0


def check_port(host: str, port: int) -> None:
    """`NfieldError` in one line unless `host`:`port` can be listened on now."""
    if not 0 < port < 65536:
        raise NfieldError(f"--port {port}: a port is a number from 1 to 65535")
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise NfieldError(f"--host {host}: cannot resolve it ({err.strerror})") from None
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise NfieldError(f"--port {port}: {host}:{port} is not free ({err.strerror}); pick another with --port") from None


def free_port(host: str) -> int:
    """A port on `host` that the system says is free now."""
    family, kind, _, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind) as probe:
        probe.bind(address)
        return probe.getsockname()[1]


@dataclass
class _Frame:
    """A frame being drawn for one browser."""

    camera: ViewCamera
    want: tuple  # (camera pose, settings): what the frame shows
    preview: bool
    version: int  # the weights' version it is drawn with
    pixels: np.ndarray  # (H, W, 3) float32
    rows_done: int = 0
    seconds: float = 0.0  # spent drawing it so far


@dataclass
class _Browser:
    """One connected page: its latest camera, and what it shows."""

    handle: Any
    pose: Optional[tuple] = None  # (wxyz, position, fov_y, aspect)
    moved_at: float = 0.0
    frame: Optional[_Frame] = None
    shown: Optional[tuple] = None  # (want, preview, version) on screen, or ("cleared",)
    shown_at: float = 0.0


@dataclass
class _Curves:
    """What the page plots, read incrementally from metrics.jsonl."""

    offset: int = 0
    steps: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_psnr: list[float] = field(default_factory=list)
    eval_steps: list[float] = field(default_factory=list)
    eval_psnr: list[float] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    last_eval: dict[str, Any] = field(default_factory=dict)


class Viewer:
    """The page for one run, served on `host`:`port` until `close`.

    Args:
        run_dir: the run directory (metrics.jsonl, cameras.json, mesh.ply are read from it).
        config: the run's config.json.
        task: the run's task; its model is what is drawn (live weights while training).
        host, port: where to listen; the port must be free (see `check_port`).
        resolution: rows of a full frame (the page has a slider).
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], task: Any, host: str, port: int, resolution: int):
        import viser

        self.run_dir, self.config, self.task = Path(run_dir), config, task
        self.scene = scene_for(task, config, run_dir)
        self.lock = threading.Lock()
        self.browsers: dict[int, _Browser] = {}
        self.version = 0
        self.frames_sent = 0
        self.render_seconds = 0.0
        self.seconds_per_pixel: Optional[float] = None  # measured; None until the first band
        self.curves = _Curves()
        self.curves_read_at = 0.0
        self.failure: Optional[str] = None
        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner: the caller prints the address
            self.server = viser.ViserServer(host=host, port=port, label=f"nfield · {self.run_dir.name}", verbose=False)
        self.url = f"http://{'localhost' if host in ('0.0.0.0', '::') else host}:{self.server.get_port()}"
        self._build_page(resolution)
        self.server.on_client_connect(self._connected)
        self.server.on_client_disconnect(self._disconnected)

    # --- the page -----------------------------------------------------------------------------
    def _build_page(self, resolution: int) -> None:
        gui, config = self.server.gui, self.config
        self.status = gui.add_markdown(f"**{self.run_dir.name}** · {config['task']} · {config.get('model', '')}")
        self.progress = gui.add_markdown("")
        self.frame_info = gui.add_markdown("*no frame drawn yet*")
        self.resolution = gui.add_slider("resolution (rows)", min=32, max=2160, step=16, initial_value=resolution)
        self.resolution.on_update(lambda _: self.changed())
        self.scene.add_controls(self.server, self.changed)
        framing = self.scene.framing()
        self.server.scene.set_up_direction(framing.up)
        camera = self.server.initial_camera
        camera.position, camera.look_at, camera.up, camera.fov = framing.position, framing.look_at, framing.up, framing.fov_y
        empty = (np.zeros(0), np.zeros(0))
        self.loss_plot = gui.add_uplot(
            empty,
            ({"label": "step"}, {"label": "loss", "stroke": "#d62728", "width": 1.5}),
            title="training loss",
            scales={"x": {"time": False}, "y": {"distr": 3}},
            aspect=1.6,
        )
        self.psnr_plot = None if config["task"] == "sdf" else self._psnr_plot("train PSNR (dB)", "#1f77b4")
        self.eval_plot = None  # added with the first evaluation

    def _psnr_plot(self, title: str, colour: str) -> Any:
        """A uPlot chart of PSNR against step (each chart has its own steps: uPlot's aligned mode
        cannot leave gaps in a float array)."""
        return self.server.gui.add_uplot(
            (np.zeros(0), np.zeros(0)),
            ({"label": "step"}, {"label": "PSNR", "stroke": colour, "width": 1.5, "points": {"show": True, "size": 4}}),
            title=title,
            scales={"x": {"time": False}},
            aspect=1.6,
        )

    def changed(self) -> None:
        """A setting moved: every browser's frame is redrawn."""
        with self.lock:
            for browser in self.browsers.values():
                browser.moved_at = time.perf_counter()

    def _connected(self, client: Any) -> None:
        browser = _Browser(client)
        with self.lock:
            self.browsers[client.client_id] = browser

        def moved(camera: Any) -> None:
            wxyz, position = tuple(np.asarray(camera.wxyz).tolist()), tuple(np.asarray(camera.position).tolist())
            pose = (wxyz, position, camera.fov, camera.aspect)
            with self.lock:
                if pose != browser.pose:
                    browser.pose, browser.moved_at = pose, time.perf_counter()

        client.camera.on_update(moved)

    def _disconnected(self, client: Any) -> None:
        with self.lock:
            self.browsers.pop(client.client_id, None)

    def set_progress(self, text: str) -> None:
        """The status line under the run's name (step, loss, PSNR, what the viewer waits for)."""
        if self.progress.content != text:
            self.progress.content = text

    def weights_changed(self) -> None:
        """The model's weights changed (a new checkpoint was loaded, or training stepped)."""
        self.version += 1
        if callable(getattr(self.scene, "weights_changed", None)):
            self.scene.weights_changed()

    def refresh_curves(self, force: bool = False) -> dict[str, Any]:
        """Read what metrics.jsonl gained and update the plots (at most every `CURVES_SECONDS`);
        returns the newest train record."""
        now = time.perf_counter()
        if not force and now - self.curves_read_at < CURVES_SECONDS:
            return self.curves.last
        self.curves_read_at = now
        path = self.run_dir / "metrics.jsonl"
        curves = self.curves
        try:
            size = path.stat().st_size
        except OSError:
            return curves.last
        if size < curves.offset:  # rewritten (a resumed run dropped lines past its checkpoint)
            self.curves = curves = _Curves()
        with open(path, "rb") as f:
            f.seek(curves.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        curves.offset += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("kind") == "train" and "loss" in record:
                curves.steps.append(record["step"])
                curves.loss.append(record["loss"])
                curves.train_psnr.append(record.get("train_psnr", float("nan")))
                curves.last = record
            elif record.get("kind") == "eval":
                curves.last_eval = record
                if "psnr" in record:
                    curves.eval_steps.append(record["step"])
                    curves.eval_psnr.append(record["psnr"])
        if complete:
            self._plot()
        return curves.last

    def _plot(self) -> None:
        curves = self.curves
        steps = np.asarray(curves.steps, dtype=np.float64)
        self.loss_plot.data = (steps, np.asarray(curves.loss, dtype=np.float64))
        if self.psnr_plot is None:  # SDF runs have no PSNR
            return
        train = np.asarray(curves.train_psnr, dtype=np.float64)
        finite = np.isfinite(train)
        self.psnr_plot.data = (steps[finite], train[finite])
        if curves.eval_steps:
            if self.eval_plot is None:
                self.eval_plot = self._psnr_plot("held-out PSNR (dB)", "#2ca02c")
            self.eval_plot.data = (
                np.asarray(curves.eval_steps, dtype=np.float64),
                np.asarray(curves.eval_psnr, dtype=np.float64),
            )

    # --- rendering ----------------------------------------------------------------------------
    def has_work(self) -> bool:
        now = time.perf_counter()
        with self.lock:
            return any(self._wanted(b, now) is not None for b in self.browsers.values())

    def _wanted(self, browser: _Browser, now: float) -> Optional[tuple[tuple, bool]]:
        """(what to draw, preview?) for `browser` now, or None when its screen is up to date."""
        draws = getattr(self.scene, "draws_frames", lambda: True)()
        if browser.pose is None:
            return None
        if not draws:
            return (("cleared",), False) if browser.shown != ("cleared",) else None
        want = (browser.pose, self.scene.settings(), int(self.resolution.value))
        moving = now - browser.moved_at < SETTLE_SECONDS
        shown = browser.shown
        if shown is None or shown[0] != want:  # a new picture: a quick preview first, unless only the size changed
            return want, not _same_view(shown, want)
        if shown[1] and not moving:
            return want, False
        if shown[2] != self.version and now - browser.shown_at >= REFRESH_SECONDS and not moving:
            return want, False
        return None

    def work(self, budget: float) -> float:
        """Draw frames for up to about `budget` seconds (at least one band when there is work);
        returns the seconds spent. A failing render is reported on the page, never raised."""
        started = time.perf_counter()
        while True:
            now = time.perf_counter()
            with self.lock:
                jobs = [(b, w) for b in self.browsers.values() if (w := self._wanted(b, now)) is not None]
            if not jobs:
                break
            browser, (want, preview) = min(jobs, key=lambda job: job[0].shown_at)
            if want == ("cleared",):
                self._send(browser, None, ("cleared",))
                continue
            self._draw_band(browser, want, preview, budget - (now - started))
            if time.perf_counter() - started >= budget:
                break
        spent = time.perf_counter() - started
        self.render_seconds += spent
        return spent

    def _draw_band(self, browser: _Browser, want: tuple, preview: bool, budget: float) -> None:
        frame = browser.frame
        if frame is None or frame.want != want or frame.preview != preview:
            wxyz, position, fov_y, aspect = want[0]
            rows = min(PREVIEW_ROWS, want[2]) if preview else want[2]
            width, height = frame_size(aspect, rows)
            camera = ViewCamera(pose_from_browser(np.asarray(wxyz), np.asarray(position)), float(fov_y), width, height)
            frame = browser.frame = _Frame(camera, want, preview, self.version, np.zeros((height, width, 3), np.float32))
        camera = frame.camera
        if self.seconds_per_pixel is None:  # the first band is one row: it measures the cost of the rest
            rows = 1
        else:
            rows = int(max(budget, 0.02) / max(self.seconds_per_pixel * camera.width, 1e-9))
        last = min(camera.height, frame.rows_done + max(1, rows))
        started = time.perf_counter()
        try:
            with _quiet_rendering(self.task):
                frame.pixels[frame.rows_done : last] = self.scene.render_rows(camera, frame.rows_done, last)
        except Exception as err:  # the page says what failed; the caller (training) goes on
            self._failed(err)
            browser.frame = None
            browser.shown, browser.shown_at = (want, preview, self.version), time.perf_counter()
            return
        elapsed = time.perf_counter() - started
        pixels = (last - frame.rows_done) * camera.width
        measured = elapsed / max(pixels, 1)
        previous = self.seconds_per_pixel
        self.seconds_per_pixel = measured if previous is None else 0.7 * previous + 0.3 * measured
        frame.rows_done, frame.seconds = last, frame.seconds + elapsed
        if last == camera.height:
            image = (np.clip(frame.pixels, 0, 1) * 255 + 0.5).astype(np.uint8)
            self._send(browser, image, (want, preview, frame.version))
            browser.frame = None
            kind = "preview" if preview else "frame"
            self.frame_info.content = (
                f"{kind} {camera.width}x{camera.height} drawn in {frame.seconds:.2f} s · {self.frames_sent} frames drawn"
            )

    def _send(self, browser: _Browser, image: Optional[np.ndarray], shown: tuple) -> None:
        try:
            browser.handle.scene.set_background_image(image, format="jpeg", jpeg_quality=90)
        except Exception:  # the page went away mid-frame: forget it
            with self.lock:
                self.browsers.pop(browser.handle.client_id, None)
            return
        browser.shown, browser.shown_at = shown, time.perf_counter()
        if image is not None:
            self.frames_sent += 1

    def _failed(self, err: Exception) -> None:
        message = f"render failed: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        if message != self.failure:
            self.failure = message
            print(f"viewer: {message}", file=sys.stderr)
            with contextlib.suppress(Exception):
                self.set_progress(f"*{message}*")

    def close(self) -> None:
        """Stop serving (what viser prints on the way out goes to stderr, not stdout)."""
        with contextlib.redirect_stdout(sys.stderr):
            self.server.stop()


def _same_view(shown: Optional[tuple], want: tuple) -> bool:
    """Only the resolution changed: no preview needed."""
    return shown is not None and len(shown) == 3 and shown[0][:2] == want[:2]


@contextlib.contextmanager
def _quiet_rendering(task: Any):
    """Render without disturbing training: the random streams and the model's train/eval mode are
    restored afterwards, and CUDA work is finished so the time measured is the render's."""
    model = task.model
    device = torch.device(getattr(task, "device", "cpu"))
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    was_training = model.training
    with torch.random.fork_rng(devices=devices):
        model.eval()
        try:
            yield
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        finally:
            model.train(was_training)
