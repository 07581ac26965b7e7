"""Progress bars for every phase that takes a while: training, evaluation, rendering, meshing.

A command shows what it is doing and how far it is in every phase longer than a moment; each
phase is a labelled tqdm bar on stderr, drawn at most every 0.5 s, closed (and kept on screen) when
the phase ends. Phases inside another (an evaluation during training) pass ``leave=False`` so the
outer bar stays the last line.

Example::

    >>> with progress_bar(total=3, desc="eval", unit="view", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
#: Seconds between redraws of a bar (tqdm's own default is 0.1 s).
REDRAW_SECONDS = 0.5


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    unit_scale: bool = False,
    initial: float = 0,
) -> tqdm:
    """A labelled bar on stderr (a disabled one costs nothing and draws nothing).

    Args:
        iterable: what the phase goes through (its length is the total when `total` is None).
        total: the phase's amount of work, in `unit`.
        desc: the phase's label ("eval", "renders", "marching cubes"...).
        unit: what one step of the bar is (view, ray, px...).
        enabled: draw it (commands pass their ``--progress``).
        leave: keep the finished bar on screen (False for a phase inside another phase).
        unit_scale: show counts as 1.2k, 3.4M (for rays, pixels, points).
        initial: work already done (a resumed run's steps).
    """
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        leave=leave,
        unit_scale=unit_scale,
        dynamic_ncols=True,
        mininterval=REDRAW_SECONDS,
        file=sys.stderr,
    )


def exclude_from_rate(bar: tqdm, seconds: float) -> None:
    """Leave `seconds` spent on something else (an evaluation, a checkpoint) out of `bar`'s elapsed
    time, rate and remaining-time estimate."""
    if not bar.disable:
        bar.start_t += seconds
        bar.last_print_t += seconds
