"""The viewer while a run trains: the trainer's model drawn between steps, within a share of its time.

`LiveViewer.after_step` is called by the trainer after every step. It banks `RENDER_SHARE` of the
time the trainer spent since the previous call and draws only while the bank is positive, so over
a run the viewer takes about that share of the training time whatever the render costs (a band of
rows is the smallest unit, and the bank may go negative by one band). The page also shows the step,
the loss and the PSNR curves (read from metrics.jsonl). Nothing the viewer does can stop training:
it starts on another port when the asked one is taken, and any failure turns it off with one line.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional, Sequence

from nfield.distributed import writes_run_files
from nfield.errors import NfieldError
from nfield.viewer.server import REFRESH_SECONDS, Viewer, check_port, free_port

#: Share of the training time the live viewer may spend drawing and updating the page.
RENDER_SHARE = 0.03
#: Most seconds of drawing banked at once (a long evaluation does not buy a long stall).
MAX_BANK_SECONDS = 0.25
#: Seconds between updates of the page's status line.
STATUS_SECONDS = 0.5


class LiveViewer:
    """Serves a training run's page; see the module docstring. Make one with `LiveViewer.start`."""

    def __init__(self, viewer: Viewer, total_steps: int):
        self.viewer, self.total_steps = viewer, total_steps
        self.bank = 0.0
        self.spent = 0.0
        self.trained = 0.0
        self.returned_at = time.perf_counter()
        self.status_at = self.weights_at = 0.0

    @classmethod
    def start(cls, run_dir: Path, config: dict[str, Any], task: Any, port: int, host: str = "127.0.0.1") -> Optional[LiveViewer]:
        """Serve `task`'s page on `host`:`port` (another free port if that one is taken); None, with a
        line on stderr, when the viewer cannot start (training then goes on without it)."""
        try:
            try:
                check_port(host, port)
            except NfieldError as err:
                fallback = free_port(host)
                print(f"viewer: {err}; serving on port {fallback} instead", file=sys.stderr)
                port = fallback
            viewer = Viewer(run_dir, config, task, host, port, None)
        except Exception as err:
            print(f"viewer: cannot start ({type(err).__name__}: {err}); training goes on without it", file=sys.stderr)
            return None
        print(f"viewer: {viewer.url} shows this run while it trains", file=sys.stderr)
        return cls(viewer, int(config["train"]["steps"]))

    def after_step(self, trainer: Any) -> None:
        """Called by the trainer after each step: update the page, draw within the bank."""
        if self.viewer is None:
            return
        now = time.perf_counter()
        trained = now - self.returned_at
        self.trained += trained
        self.bank = min(self.bank + RENDER_SHARE * trained, MAX_BANK_SECONDS)
        try:
            if now - self.status_at >= STATUS_SECONDS or trainer.step >= self.total_steps:
                self.status_at = now
                self._status(trainer.step)
            if now - self.weights_at >= REFRESH_SECONDS:
                self.weights_at = now
                self.viewer.weights_changed()
            if self.bank > 0 and self.viewer.browsers:
                self.viewer.work(self.bank)
        except Exception as err:  # the viewer is off from here on; training goes on
            print(f"viewer: stopped ({type(err).__name__}: {err}); training goes on", file=sys.stderr)
            self._stop()
        spent = time.perf_counter() - now
        self.spent += spent
        self.bank -= spent
        self.returned_at = time.perf_counter()

    def _status(self, step: int) -> None:
        record = self.viewer.refresh_curves()
        last_eval = self.viewer.curves.last_eval
        parts = [f"training: step {step:,} of {self.total_steps:,}"]
        if "loss" in record:
            parts.append(f"loss {record['loss']:.4g}")
        if "train_psnr" in record:
            parts.append(f"train PSNR {record['train_psnr']:.2f} dB")
        if "psnr" in last_eval:
            parts.append(f"eval PSNR {last_eval['psnr']:.2f} dB (step {last_eval['step']:,})")
        self.viewer.set_progress(" · ".join(parts))

    def close(self) -> str:
        """Stop serving; returns the line saying what the viewer drew and what it cost."""
        if self.viewer is None:
            return "viewer: stopped early (see above)"
        frames = self.viewer.frames_sent
        self._stop()
        share = 100 * self.spent / max(self.trained, 1e-9)
        return f"viewer: drew {frames} frame(s) while training, {self.spent:.2f} s ({share:.1f}% of the training time)"

    def _stop(self) -> None:
        viewer, self.viewer = self.viewer, None
        if viewer is not None:
            try:
                viewer.close()
            except Exception:
                pass


def live_viewer(port: int) -> Callable[[Path, dict[str, Any], Any], ContextManager[Sequence[Any]]]:
    """What a training command attaches to its run (`nfield.runs.single.train`'s `watch`) to serve
    the live viewer on `port` while it trains."""
    return functools.partial(_serving, port)


@contextlib.contextmanager
def _serving(port: int, run_dir: Path, config: dict[str, Any], task: Any):
    """Serve the live viewer of `task` on `port` while the block trains; yields the observers to
    give the block's trainers (none on ranks other than 0, or when the viewer cannot start), and
    says at the end what it drew and what it cost."""
    if not writes_run_files():
        yield ()
        return
    live = LiveViewer.start(run_dir, config, task, port)
    try:
        yield () if live is None else (live,)
    finally:
        if live is not None:
            print(live.close(), file=sys.stderr)
