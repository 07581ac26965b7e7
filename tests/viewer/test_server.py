"""The viewer's server without a browser: ports, the render queue, failures, the training share,
and `nfield view` waiting for a run's first checkpoint."""

import asyncio
import math
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from unittest.mock import MagicMock

import imageio.v3 as iio
import numpy as np
import pytest

from nfield.cli import main
from nfield.errors import NfieldError
from nfield.runs.single import load_run
from nfield.viewer import live
from nfield.viewer.live import LiveViewer
from nfield.viewer.server import (
    BAND_TO_FIXED_COST,
    MIN_PREVIEW_ROWS,
    PREVIEW_SECONDS,
    REFRESH_SECONDS,
    SETTLE_SECONDS,
    RenderSpeed,
    Viewer,
    _Browser,
    check_port,
    free_port,
    log_axis,
)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("image")
    iio.imwrite(folder / "target.png", np.random.default_rng(1).integers(0, 256, (10, 14, 3), dtype=np.uint8))
    out = folder / "run"
    assert (
        main(["fit-image", str(folder / "target.png"), "--steps", "4", "--out", str(out), "--no-progress", "--device", "cpu"])
        == 0
    )
    return out


@pytest.fixture
def busy_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_check_port(busy_port):
    check_port("127.0.0.1", free_port("127.0.0.1"))
    with pytest.raises(NfieldError, match=f"127.0.0.1:{busy_port} is not free"):
        check_port("127.0.0.1", busy_port)
    with pytest.raises(NfieldError, match="from 1 to 65535"):
        check_port("127.0.0.1", 70000)


def _viewer(run_dir, resolution=48):
    run = load_run(run_dir, "cpu", data=True)
    return Viewer(run_dir, run.config, run.task, "127.0.0.1", free_port("127.0.0.1"), resolution)


def _browser(handle, aspect=1.5):
    browser = _Browser(handle)
    browser.pose = ((1.0, 0.0, 0.0, 0.0), (0.5, 0.0, -3.0), 0.8, aspect)
    browser.moved_at = time.perf_counter()
    return browser


def _shapes(handle) -> list[tuple]:
    return [call.args[0].shape for call in handle.scene.set_background_image.call_args_list]


def _fixed_speed(viewer, per_pixel: float, fixed: float = 0.0) -> None:
    """The viewer's render speed set, and no longer measured."""
    viewer.speed.fixed, viewer.speed.per_pixel = fixed, per_pixel
    viewer.speed.add = lambda pixels, seconds: None


def test_a_moved_camera_gets_a_preview_then_finer_frames_up_to_the_full_one(image_run):
    viewer = _viewer(image_run, resolution=240)
    _fixed_speed(viewer, PREVIEW_SECONDS / (60 * 90))  # a preview affords 60 rows at aspect 1.5
    try:
        handle = MagicMock(client_id=1)
        viewer.browsers[1] = browser = _browser(handle)
        viewer.work(60.0)
        assert _shapes(handle) == [(56, 84, 3)]  # while the camera moves: the preview only
        assert handle.scene.set_background_image.call_args_list[0].args[0].dtype == np.uint8
        assert not viewer.has_work() and 0 < viewer.seconds_until_work() <= SETTLE_SECONDS
        time.sleep(SETTLE_SECONDS + 0.05)  # the camera settles: twice the rows, then the page's resolution
        viewer.work(60.0)
        assert _shapes(handle) == [(56, 84, 3), (112, 168, 3), (240, 360, 3)]
        assert viewer.frames_sent == 3 and not viewer.has_work() and viewer.seconds_until_work() == math.inf
        # new weights redraw the full frame (no preview) once the refresh interval has passed
        viewer.weights_changed()
        assert 0 < viewer.seconds_until_work() <= REFRESH_SECONDS
        browser.shown_at -= 10
        viewer.work(60.0)
        assert _shapes(handle)[-1] == (240, 360, 3) and viewer.frames_sent == 4
    finally:
        viewer.close()


def test_the_first_frame_is_small_and_a_begun_preview_is_finished_while_the_camera_moves(image_run):
    viewer = _viewer(image_run, resolution=240)
    try:
        handle = MagicMock(client_id=1)
        viewer.browsers[1] = browser = _browser(handle)
        viewer.work(0.0)  # nothing measured yet: the first frame is a whole MIN_PREVIEW_ROWS frame
        assert _shapes(handle) == [(MIN_PREVIEW_ROWS, 72, 3)]
        _fixed_speed(viewer, 1.0)  # slow: one row a band
        browser.pose = ((1.0, 0.0, 0.0, 0.0), (0.6, 0.0, -3.0), 0.8, 1.5)  # moved: a new preview
        viewer.work(0.0)
        begun = browser.frame
        assert begun is not None and begun.preview and begun.rows_done == 1
        browser.pose = ((1.0, 0.0, 0.0, 0.0), (0.7, 0.0, -3.0), 0.8, 1.5)  # moved again mid-preview
        _fixed_speed(viewer, 1e-9)
        viewer.work(60.0)
        assert _shapes(handle)[1] == (MIN_PREVIEW_ROWS, 72, 3)  # the begun preview was finished...
        assert viewer.browsers[1].shown[0][0] == browser.pose  # ...then the newest camera drawn
    finally:
        viewer.close()


def test_bands_are_sized_from_the_fixed_and_the_per_pixel_cost(image_run):
    """A band costs a fixed 0.1 s plus 1 ms a pixel: with no budget a band still takes at
    least BAND_TO_FIXED_COST times the fixed cost, and the rest of a frame that costs little more
    is drawn at once."""
    viewer = _viewer(image_run, resolution=240)
    _fixed_speed(viewer, 1e-3, fixed=0.1)
    try:
        viewer.browsers[1] = browser = _browser(MagicMock(client_id=1))
        browser.shown = (("elsewhere",), 240, 0)
        viewer.work(0.0)  # one band
        frame = browser.frame  # a 48-row preview (the fixed cost leaves no room for more), 72 pixels a row
        assert frame.rows == MIN_PREVIEW_ROWS and frame.rows_done == int((BAND_TO_FIXED_COST - 1) * 0.1 / 1e-3) // 72
        viewer.speed.fixed = 0.0
        viewer.speed.per_pixel = 0.15 / (MIN_PREVIEW_ROWS * 72)  # the rest now costs less than 1.5 bands
        browser.moved_at = time.perf_counter() + 100  # still moving: no refinement after the preview
        viewer.work(0.1)
        assert browser.frame is None and browser.shown[1] == MIN_PREVIEW_ROWS
    finally:
        viewer.close()


def test_the_render_speed_tells_the_fixed_cost_of_a_band_from_the_cost_of_a_pixel():
    speed = RenderSpeed()
    for pixels in (100, 1000, 5000, 200):
        speed.add(pixels, 0.05 + 2e-5 * pixels)
    assert speed.fixed == pytest.approx(0.05) and speed.per_pixel == pytest.approx(2e-5)
    assert speed.seconds(1000) == pytest.approx(0.07) and speed.pixels_in(0.07) == pytest.approx(1000, abs=1)
    assert speed.pixels_in(0.01) == 0  # less than the fixed cost
    steady = RenderSpeed()
    for _ in range(3):  # one band size: everything is the pixels' cost
        steady.add(1000, 0.02)
    assert steady.fixed == 0.0 and steady.per_pixel == pytest.approx(2e-5)


def test_the_camera_that_connects_a_page_is_drawn(image_run):
    """viser calls `_connected` when a page's first camera arrives, and that camera never reaches a
    callback registered there: the viewer reads it itself (the page used to stay blank until the
    camera moved)."""
    viewer = _viewer(image_run)
    try:
        camera = MagicMock(wxyz=np.array([1.0, 0.0, 0.0, 0.0]), position=np.array([0.5, 0.0, -3.0]), fov=0.8, aspect=1.5)
        client = MagicMock(client_id=3, camera=camera)
        asyncio.run(viewer._connected(client))
        assert viewer.browsers[3].pose == ((1.0, 0.0, 0.0, 0.0), (0.5, 0.0, -3.0), 0.8, 1.5)
        assert viewer.wake.is_set() and viewer.has_work()
        camera.on_update.assert_called_once()
    finally:
        viewer.close()


def test_an_idle_viewer_sleeps_until_a_browser_event(image_run):
    viewer = _viewer(image_run)
    try:
        started = time.perf_counter()
        viewer.wait_for_work(0.3)  # no browser: the whole timeout
        assert 0.28 < time.perf_counter() - started < 1.0
        threading.Timer(0.1, viewer.changed).start()  # a setting moves on the page's thread
        started = time.perf_counter()
        viewer.wait_for_work(5.0)
        assert time.perf_counter() - started < 1.0
    finally:
        viewer.close()


def test_the_loss_axis_has_a_labelled_tick_at_each_decade_only():
    scale, axis = log_axis(np.array([0.5, 0.02, 3e-4, np.nan, 0.0]))
    assert scale == {"distr": 3, "log": 10, "range": (1e-4, 1.0)}
    assert axis == {"splits": (1e-4, 1e-3, 0.01, 0.1, 1.0), "values": ("1e-4", "1e-3", "1e-2", "1e-1", "1")}
    scale, axis = log_axis(np.array([0.03, 0.05]))  # within a decade: its two ends
    assert scale["range"] == (0.01, 0.1) and axis["values"] == ("1e-2", "1e-1")
    scale, axis = log_axis(np.geomspace(1e-12, 10, 5))  # many decades: every other labelled, the top one always
    labels = axis["values"]
    assert len(axis["splits"]) == 14 and labels[-1] == "10" and labels[-2] is None and "0" not in labels
    assert log_axis(np.zeros(0))[0]["range"] == (1e-3, 1.0)  # nothing yet


def test_a_page_that_goes_away_mid_frame_is_forgotten(image_run):
    viewer = _viewer(image_run)
    try:
        handle = MagicMock(client_id=7)
        handle.scene.set_background_image.side_effect = RuntimeError("connection closed")
        viewer.browsers[7] = _browser(handle)
        viewer.work(60.0)
        assert 7 not in viewer.browsers and viewer.frames_sent == 0
    finally:
        viewer.close()


def test_a_failing_render_is_reported_and_never_raised(image_run, capsys):
    viewer = _viewer(image_run)
    try:
        viewer.display.render_rows = MagicMock(side_effect=RuntimeError("out of memory"))
        handle = MagicMock(client_id=2)
        viewer.browsers[2] = _browser(handle)
        viewer.work(60.0)
        assert "render failed: RuntimeError: out of memory" in capsys.readouterr().err
        assert "render failed" in viewer.progress.content
        assert not handle.scene.set_background_image.called
    finally:
        viewer.close()


class _SlowViewer:
    """Stands in for `Viewer`: every call of `work` costs at least a 20 ms band."""

    def __init__(self):
        self.browsers = {1: object()}
        self.frames_sent = 0
        self.curves = MagicMock(last_eval={})

    def work(self, budget):
        time.sleep(max(budget, 0.02))

    def refresh_curves(self):
        return {"loss": 0.5}

    def set_progress(self, text):
        self.text = text

    def weights_changed(self):
        pass

    def close(self):
        pass


def test_the_live_viewer_takes_its_share_of_the_training_time():
    viewer = LiveViewer(_SlowViewer(), total_steps=200)
    trainer = MagicMock(step=0)
    started = time.perf_counter()
    for step in range(200):
        time.sleep(0.005)  # a training step
        trainer.step = step + 1
        viewer.after_step(trainer)
    wall = time.perf_counter() - started
    share = viewer.spent / viewer.trained
    assert share <= live.RENDER_SHARE + 0.02, share
    assert viewer.spent > 0.02  # it did draw
    assert viewer.trained + viewer.spent == pytest.approx(wall, rel=0.05)
    assert "training: step 200 of 200" in viewer.viewer.text
    assert "drew 0 frame(s)" in viewer.close()


def test_the_live_viewer_moves_to_a_free_port_and_a_broken_viewer_never_stops_training(image_run, busy_port, capsys):
    run = load_run(image_run, "cpu", data=True)
    started = LiveViewer.start(image_run, run.config, run.task, busy_port)
    try:
        assert started is not None
        err = capsys.readouterr().err
        assert "is not free" in err and "serving on port" in err
        assert started.viewer.server.get_port() != busy_port
        started.viewer.refresh_curves = MagicMock(side_effect=OSError("disk gone"))
        started.after_step(MagicMock(step=1))
        assert started.viewer is None and "training goes on" in capsys.readouterr().err
        started.after_step(MagicMock(step=2))  # a stopped viewer is a no-op
    finally:
        started.close()


def _cli(*args):
    return [sys.executable, "-m", "nfield.cli", *map(str, args)]


def test_view_refuses_a_busy_port_a_missing_run_and_a_bad_resolution_in_one_line(image_run, busy_port, tmp_path, capsys):
    done = subprocess.run(_cli("view", image_run, "--port", busy_port), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"nfield: error: --port {busy_port}: 127.0.0.1:{busy_port} is not free (Address already in use); pick another with --port"
    ]
    assert main(["view", str(tmp_path / "nothing")]) == 1
    capsys.readouterr()
    assert main(["view", str(image_run), "--resolution", "8"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "nfield: error: --resolution 8: rows of a full frame, from 32 to 2160"
    ]


def _read_until(process, text, timeout=60.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}; got {seen}")


def test_view_waits_for_the_first_checkpoint_and_stops_on_sigterm(image_run, tmp_path):
    pending = tmp_path / "pending"
    pending.mkdir()
    shutil.copy(image_run / "config.json", pending / "config.json")
    port = free_port("127.0.0.1")
    process = subprocess.Popen(_cli("view", pending, "--port", port, "--device", "cpu"), stderr=subprocess.PIPE, text=True)
    try:
        _read_until(process, "has no checkpoint yet; waiting for the first one")
        shutil.copytree(image_run / "checkpoints", pending / "checkpoints")
        _read_until(process, "showing step 4")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the page is served
        process.send_signal(signal.SIGTERM)
        _read_until(process, "viewer: stopped")
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()


def test_training_commands_take_viewer_and_port(image_run, busy_port, tmp_path, capsys):
    target = image_run.parent / "target.png"
    argv = ["fit-image", str(target), "--steps", "3", "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]
    assert main([*argv, "--viewer", "--port", str(busy_port)]) == 0
    captured = capsys.readouterr()
    assert f"--port {busy_port}: 127.0.0.1:{busy_port} is not free" in captured.err and "serving on port" in captured.err
    assert "shows this run while it trains" in captured.err and "viewer: drew 0 frame(s) while training" in captured.err
    assert '"step": 3' in captured.out.strip().splitlines()[-1]  # the metrics stay the last stdout line
