"""The viewer's page: a viser server, one render queue for every connected browser, the run's status.

Why viser: it is the web viewer nerfstudio is built on, kept up on PyPI with its web client built
into the wheel (no Node.js at install time), and it already has what a field viewer needs: the
browser camera streamed to Python, a background image per browser, camera frustums, meshes, point
clouds, GUI controls and live plots (uPlot). The page is served over HTTP and a websocket, so it
works from a remote GPU machine through an SSH tunnel (``ssh -L 8080:localhost:8080 host``).

Rendering. Browser events (camera moves, GUI changes) only record what is wanted and wake the
thread that draws (`Viewer.wake`); all rendering happens in `Viewer.work`, called by the thread that
owns the model (the viewer's loop, or the trainer between steps), so the model is never used by two
threads at once. With nothing to draw that thread sleeps in `Viewer.wait_for_work` until a browser
connects, moves its camera or changes a setting (an idle page costs no CPU).

Progressive refinement. A new picture (a moved camera, another setting) is first drawn as a preview
sized from the measured render speed to take about `PREVIEW_SECONDS` (never fewer than
`MIN_PREVIEW_ROWS` rows), and a preview once begun is finished even if the camera moves on, so a
dragged camera keeps getting pictures. Once the camera has been still for `SETTLE_SECONDS` the
picture is redrawn at about twice the rows each time up to the page's resolution; a refinement that
a newer camera makes stale is abandoned. Frames are drawn in bands of rows sized from what a band
was measured to cost (`RenderSpeed`: a fixed cost per band, large for sphere tracing, plus a cost
per pixel), so `work(budget)` returns close to its budget without drawing a frame as many thin bands
(a band costs at least `BAND_TO_FIXED_COST` times its fixed cost). New weights (a newer checkpoint,
or training going on) redraw the frames at most every `REFRESH_SECONDS`. Rendering never touches
the random number generators or autograd state the training uses (`torch.random.fork_rng`,
evaluation mode restored afterwards).

The page. The control panel is docked beside the 3D view, which it never covers, and each page's
first view is framed for its own 3D view's aspect (`display.framing(aspect)`) until the person moves
the camera. The loss is plotted on a log axis with a labelled tick at each decade only (`log_axis`).
"""

from __future__ import annotations

import contextlib
import io
import math
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from nfield.errors import NfieldError
from nfield.render.cameras import look_at
from nfield.run_directory import MetricsReader, RunDirectory
from nfield.viewer.cameras import ViewCamera, frame_size, pose_from_browser
from nfield.viewer.displays import DEFAULT_ASPECT, display_for

#: Fewest rows of a preview (and the rows of a page's first frame before the render speed is known).
MIN_PREVIEW_ROWS = 48
#: Seconds a preview may take at the measured render speed: its rows are sized from it.
PREVIEW_SECONDS = 0.12
#: A band of rows costs at least this many times a band's fixed cost (sphere tracing marches every
#: band to its end whatever its size: many thin bands would cost many times one whole frame).
BAND_TO_FIXED_COST = 4.0
#: Seconds without camera events before the picture is refined towards the page's resolution.
SETTLE_SECONDS = 0.25
#: Seconds between redraws while the weights change (training, new checkpoints).
REFRESH_SECONDS = 2.0
#: Seconds between re-reads of metrics.jsonl for the page's curves.
CURVES_SECONDS = 2.0
#: Default rows of a full frame: on a CUDA device, on the CPU (a display may ask for others, see `default_rows`).
CUDA_ROWS, CPU_ROWS = 720, 240
#: A narrow 3D view (width / height): a laptop's page beside the docked panel.
NARROW_ASPECT = 1.25
#: The rows a full frame may have (the page's slider).
MIN_ROWS, MAX_ROWS = 32, 2160


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


def default_rows(display: Any, device: Any) -> int:
    """Rows of a full frame when none are asked for: what the display asks for (an image run: its
    pixels one to one in the first view of a 3D view as narrow as `NARROW_ASPECT`, see
    `SignalDisplay.default_rows`), else `CUDA_ROWS` on a CUDA device and `CPU_ROWS` on the CPU."""
    on_cuda = getattr(device, "type", str(device)) == "cuda"
    asked = getattr(display, "default_rows", None)
    return int(asked(NARROW_ASPECT, on_cuda)) if callable(asked) else CUDA_ROWS if on_cuda else CPU_ROWS


def log_axis(values: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """A uPlot log scale and y axis for `values` (> 0; others are ignored): the scale spans whole
    decades and the axis has a tick, a grid line and a label ("1e-3", "1e-2": never rounded to "0")
    at each decade only, so no grid lines crowd into grey bands. Returns (scale, axis)."""
    positive = values[np.isfinite(values) & (values > 0)]
    low, high = (math.floor(math.log10(positive.min())), math.ceil(math.log10(positive.max()))) if len(positive) else (-3, 0)
    high = max(high, low + 1)
    exponents = range(low, high + 1)
    every = 1 + (len(exponents) - 1) // 6  # at most about 7 labels
    splits = [float(f"1e{k}") for k in exponents]
    labels = [_decade(k) if (high - k) % every == 0 else None for k in exponents]
    scale = {"distr": 3, "log": 10, "range": (splits[0], splits[-1])}
    return scale, {"splits": tuple(splits), "values": tuple(labels)}


def _decade(exponent: int) -> str:
    """10 ** `exponent` as a tick label: ..., 1e-2, 1e-1, 1, 10, 1e2, ..."""
    return {0: "1", 1: "10"}.get(exponent, f"1e{exponent}")


class RenderSpeed:
    """What drawing a band of rows costs: about `fixed` + `per_pixel` x pixels seconds, fitted by
    least squares to the latest `remembered` bands (a band's fixed cost: the march of a sphere tracer
    runs to its slowest ray, whatever the band's size; launches and Python per call)."""

    def __init__(self, remembered: int = 16):
        self.samples: deque[tuple[int, float]] = deque(maxlen=remembered)
        self.fixed = 0.0  # seconds per band
        self.per_pixel: Optional[float] = None  # seconds per pixel; None until a band was measured

    def add(self, pixels: int, seconds: float) -> None:
        """One band of `pixels` pixels took `seconds`."""
        self.samples.append((max(int(pixels), 1), max(float(seconds), 0.0)))
        counts = np.array([p for p, _ in self.samples], np.float64)
        times = np.array([t for _, t in self.samples], np.float64)
        if len(counts) >= 2 and counts.max() >= 2 * counts.min():  # sizes far enough apart to tell the two costs apart
            slope, intercept = np.polyfit(counts, times, 1)
            if slope > 0 and intercept >= 0:
                self.fixed, self.per_pixel = float(intercept), float(slope)
                return
        mean_time, mean_count = float(times.mean()), float(counts.mean())
        self.fixed = min(self.fixed, 0.75 * mean_time)  # keep the fixed cost, the rest is the pixels'
        self.per_pixel = max(mean_time - self.fixed, 1e-12) / mean_count

    def seconds(self, pixels: int) -> float:
        """Seconds a band of `pixels` pixels takes (0 before anything was measured)."""
        return self.fixed + (self.per_pixel or 0.0) * pixels

    def pixels_in(self, seconds: float) -> int:
        """Pixels a band of `seconds` seconds draws (0 when its fixed cost alone is longer)."""
        if self.per_pixel is None:
            raise ValueError("nothing measured yet")
        return int(max(seconds - self.fixed, 0.0) / self.per_pixel)


@dataclass
class _Frame:
    """A frame being drawn for one browser."""

    camera: ViewCamera
    want: tuple  # (camera pose, settings): what the frame shows
    rows: int  # its height in pixels
    preview: bool  # the first picture of `want`: finished even if the camera moves on
    version: int  # the weights' version it is drawn with
    pixels: np.ndarray  # (H, W, 3) float32
    rows_done: int = 0
    seconds: float = 0.0  # spent drawing it so far


@dataclass
class _Browser:
    """One connected page: its latest camera, what it shows, and how its first view is framed."""

    handle: Any
    pose: Optional[tuple] = None  # (wxyz, position, fov_y, aspect)
    moved_at: float = 0.0
    frame: Optional[_Frame] = None
    shown: Optional[tuple] = None  # (want, rows, version) on screen, or ("cleared",)
    shown_at: float = 0.0
    framed_position: Optional[np.ndarray] = None  # where the viewer put the camera; None once the person moved it
    framed_aspect: float = DEFAULT_ASPECT  # the 3D view's aspect that position is framed for
    framing_arrived: bool = False  # the page's camera has been at framed_position (before, it reports its default camera)


@dataclass
class _Curves:
    """What the page plots, read incrementally from metrics.jsonl."""

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
        resolution: rows of a full frame (the page has a slider); None: `default_rows`.
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], task: Any, host: str, port: int, resolution: Optional[int]):
        import viser

        self.run_dir, self.config, self.task = Path(run_dir), config, task
        self.display = display_for(task, config, run_dir)
        self.lock = threading.Lock()
        self.wake = threading.Event()  # set by every browser event: the drawing thread looks again
        self.browsers: dict[int, _Browser] = {}
        self.version = 0
        self.frames_sent = 0
        self.render_seconds = 0.0
        self.speed = RenderSpeed()
        self.curves = _Curves()
        self.metrics_reader = MetricsReader(RunDirectory(run_dir).metrics)
        self.curves_read_at = 0.0
        self.loss_decades: Optional[tuple] = None
        self.failure: Optional[str] = None
        if resolution is None:
            resolution = default_rows(self.display, getattr(task, "device", "cpu"))
        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner: the caller prints the address
            self.server = viser.ViserServer(host=host, port=port, label=f"nfield · {self.run_dir.name}", verbose=False)
        self.url = f"http://{'localhost' if host in ('0.0.0.0', '::') else host}:{self.server.get_port()}"
        self._build_page(resolution)
        self.server.on_client_connect(self._connected)
        self.server.on_client_disconnect(self._disconnected)

    # --- the page -----------------------------------------------------------------------------
    def _build_page(self, resolution: int) -> None:
        gui, config = self.server.gui, self.config
        # Docked, the panel takes its own column: the 3D view beside it is never covered by it.
        gui.main_panel.dock_right()
        self.status = gui.add_markdown(f"**{self.run_dir.name}** · {config['task']} · {config.get('model', '')}")
        self.progress = gui.add_markdown("")
        self.frame_info = gui.add_markdown("*no frame drawn yet*")
        self.resolution = gui.add_slider("resolution (rows)", min=MIN_ROWS, max=MAX_ROWS, step=16, initial_value=resolution)
        self.resolution.on_update(lambda _: self.changed())
        self.display.add_controls(self.server, self.changed)
        framing = self.display.framing(DEFAULT_ASPECT)
        self.server.scene.set_up_direction(framing.up)
        camera = self.server.initial_camera
        camera.position, camera.look_at, camera.up, camera.fov = framing.position, framing.look_at, framing.up, framing.fov_y
        empty = (np.zeros(0), np.zeros(0))
        scale, axis = log_axis(np.zeros(0))
        self.loss_plot = gui.add_uplot(
            empty,
            ({"label": "step"}, {"label": "loss", "stroke": "#d62728", "width": 1.5}),
            title="training loss",
            scales={"x": {"time": False}, "y": scale},
            axes=({}, axis),
            aspect=2.0,
            padding=(12, 24, 0, 0),  # room above the plot for the top decade's label
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
            aspect=2.0,
        )

    def changed(self) -> None:
        """A setting moved: every browser's frame is redrawn."""
        with self.lock:
            for browser in self.browsers.values():
                browser.moved_at = time.perf_counter()
        self.wake.set()

    async def _connected(self, client: Any) -> None:
        """A page connected (viser calls this on its event loop when the page's first camera
        arrives, before it hands that camera to the camera callbacks: the callback registered here
        would miss it, so the camera is read here too)."""
        browser = _Browser(client, framed_position=np.asarray(self.display.framing(DEFAULT_ASPECT).position, np.float64))
        with self.lock:
            self.browsers[client.client_id] = browser
        client.camera.on_update(lambda camera: self._camera_moved(browser, camera))
        self._camera_moved(browser, client.camera)

    def _camera_moved(self, browser: _Browser, camera: Any) -> None:
        """A browser's camera (viser's `CameraHandle`) changed: record it; while the person has not
        moved it, frame the display for the 3D view's aspect (its width is known only now)."""
        wxyz, position = tuple(np.asarray(camera.wxyz).tolist()), tuple(np.asarray(camera.position).tolist())
        pose = (wxyz, position, float(camera.fov), float(camera.aspect))
        with self.lock:
            if pose == browser.pose:
                return
            browser.pose, browser.moved_at = pose, time.perf_counter()
        self.wake.set()
        self._frame_for_aspect(browser, camera)

    def _frame_for_aspect(self, browser: _Browser, camera: Any) -> None:
        """Re-frame the display (`framing(aspect)`) while the camera is where the viewer put it and the
        3D view's aspect changed (the page's first camera has its default aspect; the docked panel,
        a resized window change it). A page reports its own default camera until the viewer's
        arrives; once it has, a camera elsewhere was moved by the person and is left alone."""
        framed = browser.framed_position
        if framed is None:
            return
        position = np.asarray(camera.position, np.float64)
        if np.linalg.norm(position - framed) > 1e-3 * max(1.0, float(np.linalg.norm(framed))):
            if browser.framing_arrived:
                browser.framed_position = None  # the person moved the camera: it is theirs from now on
            return
        browser.framing_arrived = True
        aspect = float(camera.aspect)
        if not math.isfinite(aspect) or aspect <= 0 or abs(aspect / browser.framed_aspect - 1) < 0.01:
            return
        framing = self.display.framing(aspect)
        browser.framed_aspect = aspect
        target = np.asarray(framing.position, np.float64)
        if np.allclose(target, framed):
            return
        browser.framed_position, browser.framing_arrived = target, False
        try:  # position first: viser's setter moves the look-at point with it
            camera.position = framing.position
            camera.look_at = framing.look_at
        except Exception:  # the page went away meanwhile
            pass

    def _disconnected(self, client: Any) -> None:
        with self.lock:
            self.browsers.pop(client.client_id, None)
        self.wake.set()

    def set_progress(self, text: str) -> None:
        """The status line under the run's name (step, loss, PSNR, what the viewer waits for)."""
        if self.progress.content != text:
            self.progress.content = text

    def weights_changed(self) -> None:
        """The model's weights changed (a new checkpoint was loaded, or training stepped)."""
        self.version += 1
        if callable(getattr(self.display, "weights_changed", None)):
            self.display.weights_changed()

    def refresh_curves(self, force: bool = False) -> dict[str, Any]:
        """Read what metrics.jsonl gained and update the plots (at most every `CURVES_SECONDS`);
        returns the newest train record."""
        now = time.perf_counter()
        if not force and now - self.curves_read_at < CURVES_SECONDS:
            return self.curves.last
        self.curves_read_at = now
        records, restarted = self.metrics_reader.read_new()
        if restarted:  # rewritten (a resumed run dropped lines past its checkpoint)
            self.curves = _Curves()
        curves = self.curves
        for record in records:
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
        if records:
            self._plot()
        return curves.last

    def _plot(self) -> None:
        curves = self.curves
        steps = np.asarray(curves.steps, dtype=np.float64)
        loss = np.asarray(curves.loss, dtype=np.float64)
        scale, axis = log_axis(loss)
        if scale["range"] != self.loss_decades:  # the axis follows the loss down, a decade at a time
            self.loss_decades = scale["range"]
            self.loss_plot.scales = {"x": {"time": False}, "y": scale}
            self.loss_plot.axes = ({}, axis)
        self.loss_plot.data = (steps, loss)
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
        """Whether some browser wants a frame drawn now."""
        return self.seconds_until_work() == 0.0

    def seconds_until_work(self) -> float:
        """0 when some browser wants a frame drawn now, else the seconds until one will without any
        new event (a settling camera, weights waiting for their refresh), inf when none will."""
        now = time.perf_counter()
        with self.lock:
            return min((self._plan(b, now)[1] for b in self.browsers.values()), default=math.inf)

    def wait_for_work(self, timeout: float, drawing: bool = True) -> None:
        """Sleep up to `timeout` seconds, less when a browser event comes in (`wake`) or, with
        `drawing`, when a frame is due; returns at once when one is due now."""
        self.wake.clear()  # an event from here on ends the wait below
        if drawing:
            timeout = min(timeout, self.seconds_until_work())
        if timeout > 0:
            self.wake.wait(timeout)

    def _plan(self, browser: _Browser, now: float) -> tuple[Optional[tuple[tuple, int]], float]:
        """((what to draw, rows), 0.0) when `browser` wants a frame now, else (None, seconds until
        it will without a new event, or inf)."""
        frame = browser.frame
        if frame is not None and frame.preview:  # a begun preview is finished whatever the camera did since
            return (frame.want, frame.rows), 0.0
        if browser.pose is None:
            return None, math.inf
        if not getattr(self.display, "draws_frames", lambda: True)():
            return ((("cleared",), 0), 0.0) if browser.shown != ("cleared",) else (None, math.inf)
        want = (browser.pose, self.display.settings())
        full, aspect = int(self.resolution.value), browser.pose[3]
        shown = browser.shown
        if shown is None or shown[0] != want:  # a new picture: a preview first
            return (want, self._preview_rows(aspect, full)), 0.0
        settled_in = browser.moved_at + SETTLE_SECONDS - now
        rows = shown[1]
        if rows != full:
            if settled_in > 0:
                return None, settled_in
            return (want, full if rows > full else self._refined_rows(rows, aspect, full)), 0.0
        if shown[2] != self.version:
            due_in = max(settled_in, browser.shown_at + REFRESH_SECONDS - now)
            return ((want, full), 0.0) if due_in <= 0 else (None, due_in)
        return None, math.inf

    def _preview_rows(self, aspect: float, full: int) -> int:
        """Rows of a preview: what the measured speed draws in `PREVIEW_SECONDS`, at least
        `MIN_PREVIEW_ROWS` (and `MIN_PREVIEW_ROWS` before anything was measured), at most `full`."""
        if self.speed.per_pixel is None:
            return min(MIN_PREVIEW_ROWS, full)
        affordable = math.sqrt(self.speed.pixels_in(PREVIEW_SECONDS) / max(aspect, 1e-3))
        return max(min(MIN_PREVIEW_ROWS, full), min(full, int(affordable) // 8 * 8))

    def _refined_rows(self, shown_rows: int, aspect: float, full: int) -> int:
        """Rows of the next refinement of a picture shown at `shown_rows`: about twice as many (or
        what a preview affords, if more), and `full` once that is within 1.5 times."""
        rows = max(2 * shown_rows, self._preview_rows(aspect, full))
        return full if 1.5 * rows >= full else rows

    def work(self, budget: float) -> float:
        """Draw frames for up to about `budget` seconds (at least one band when there is work);
        returns the seconds spent. A failing render is reported on the page, never raised."""
        started = time.perf_counter()
        while True:
            now = time.perf_counter()
            with self.lock:
                jobs = [(b, job) for b in self.browsers.values() if (job := self._plan(b, now)[0]) is not None]
            if not jobs:
                break
            browser, (want, rows) = min(jobs, key=lambda job: job[0].shown_at)
            if want == ("cleared",):
                browser.frame = None
                self._send(browser, None, ("cleared",))
                continue
            self._draw_band(browser, want, rows, budget - (now - started))
            if time.perf_counter() - started >= budget:
                break
        spent = time.perf_counter() - started
        self.render_seconds += spent
        return spent

    def _draw_band(self, browser: _Browser, want: tuple, rows: int, budget: float) -> None:
        frame = browser.frame
        if frame is None or frame.want != want or frame.rows != rows:  # a stale refinement is abandoned
            wxyz, position, fov_y, aspect = want[0]
            width, height = frame_size(aspect, rows)
            camera = ViewCamera(pose_from_browser(np.asarray(wxyz), np.asarray(position)), float(fov_y), width, height)
            preview = browser.shown is None or browser.shown[0] != want
            pixels = np.zeros((height, width, 3), np.float32)
            frame = browser.frame = _Frame(camera, want, rows, preview, self.version, pixels)
        camera = frame.camera
        rest = camera.height - frame.rows_done
        if self.speed.per_pixel is None:  # nothing measured yet: the whole (small) frame in one band
            band = rest
        else:
            seconds = max(budget, BAND_TO_FIXED_COST * self.speed.fixed, 0.02)
            band = (
                rest
                if self.speed.seconds(rest * camera.width) <= 1.5 * seconds
                else self.speed.pixels_in(seconds) // camera.width
            )
        last = min(camera.height, frame.rows_done + max(1, band))
        started = time.perf_counter()
        try:
            with _quiet_rendering(self.task):
                frame.pixels[frame.rows_done : last] = self.display.render_rows(camera, frame.rows_done, last)
        except Exception as err:  # the page says what failed; the caller (training) goes on
            self._failed(err)
            browser.frame = None
            # shown at the page's resolution: nothing is retried until the picture or the weights change
            browser.shown, browser.shown_at = (want, int(self.resolution.value), self.version), time.perf_counter()
            return
        elapsed = time.perf_counter() - started
        self.speed.add((last - frame.rows_done) * camera.width, elapsed)
        frame.rows_done, frame.seconds = last, frame.seconds + elapsed
        if last == camera.height:
            image = (np.clip(frame.pixels, 0, 1) * 255 + 0.5).astype(np.uint8)
            browser.frame = None
            self._send(browser, image, (want, rows, frame.version))
            kind = "frame" if rows == int(self.resolution.value) else "preview"  # at the page's resolution, or on its way
            self.frame_info.content = (
                f"{kind} {camera.width}x{camera.height} drawn in {frame.seconds:.2f} s · {self.frames_sent} frames drawn"
            )

    def calibrate(self) -> None:
        """Draw a small frame from the page's first camera and throw it away: the render's one-off
        costs (caches, first calls) are paid before a browser connects, and the first preview and
        bands are sized from measured costs (a band of two rows and the whole frame: the fixed cost
        of a band and the cost of a pixel). A failure is left for the first real frame to report."""
        framing = self.display.framing(DEFAULT_ASPECT)
        if not getattr(self.display, "draws_frames", lambda: True)():
            return
        width, height = frame_size(DEFAULT_ASPECT, MIN_PREVIEW_ROWS)
        try:
            camera = ViewCamera(look_at(framing.position, framing.look_at, framing.up).float(), framing.fov_y, width, height)
            for rows, measured in ((height, False), (height, True), (2, True)):  # the first call pays the one-off costs
                started = time.perf_counter()
                with _quiet_rendering(self.task):
                    self.display.render_rows(camera, height // 2 - rows // 2, height // 2 + (rows + 1) // 2)
                if measured:
                    self.speed.add(rows * width, time.perf_counter() - started)
        except Exception:
            pass

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
