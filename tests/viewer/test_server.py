"""The viewer's server without a browser: ports, the render queue, failures, the training share,
and `nfield view` waiting for a run's first checkpoint."""

import shutil
import signal
import socket
import subprocess
import sys
import time
from unittest.mock import MagicMock

import imageio.v3 as iio
import numpy as np
import pytest

from nfield.cli import main
from nfield.errors import NfieldError
from nfield.run import load_run
from nfield.viewer import live
from nfield.viewer.live import LiveViewer
from nfield.viewer.server import PREVIEW_ROWS, Viewer, _Browser, check_port, free_port


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


def test_a_moved_camera_gets_a_preview_then_the_full_frame(image_run):
    viewer = _viewer(image_run)
    try:
        handle = MagicMock(client_id=1)
        viewer.browsers[1] = browser = _browser(handle)
        viewer.work(60.0)
        first = handle.scene.set_background_image.call_args_list[0].args[0]
        assert first.shape == (min(PREVIEW_ROWS, 48), 72, 3) and first.dtype == np.uint8
        time.sleep(0.3)  # the camera settles
        viewer.work(60.0)
        full = handle.scene.set_background_image.call_args_list[-1].args[0]
        assert full.shape == (48, 72, 3)
        assert viewer.frames_sent == 2 and not viewer.has_work()
        # new weights redraw the full frame (no preview) once the refresh interval has passed
        viewer.weights_changed()
        browser.shown_at -= 10
        viewer.work(60.0)
        assert handle.scene.set_background_image.call_args_list[-1].args[0].shape == (48, 72, 3)
    finally:
        viewer.close()


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
        viewer.scene.render_rows = MagicMock(side_effect=RuntimeError("out of memory"))
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


def test_view_refuses_a_busy_port_and_a_missing_run_in_one_line(image_run, busy_port, tmp_path):
    done = subprocess.run(_cli("view", image_run, "--port", busy_port), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"nfield: error: --port {busy_port}: 127.0.0.1:{busy_port} is not free (Address already in use); pick another with --port"
    ]
    assert main(["view", str(tmp_path / "nothing")]) == 1


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
