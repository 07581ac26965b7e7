"""Spatially-adaptive progressive encoding (SAPE, Hertz et al. 2021).

Like `ProgressiveFrequency`, but the band-exposure progress alpha varies over space: it lives on a
grid of nodes spanning [-1, 1]^d and keeps growing only where the fit is still poor. The task feeds
the per-point error back with `observe_error`; `update` folds it into a per-node running error and
advances alpha on the nodes whose error is still above a threshold, freezing the others at the
bandwidth that was enough for them. Under data-parallel training the error statistics are summed
over all processes before they are used, so every rank takes the same decision.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from nfield.distributed import all_reduce_, data_parallel
from nfield.encodings.progressive import (
    check_frequencies,
    check_schedule,
    schedule_steps,
    windowed_frequency_features,
)
from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError


@dataclass(frozen=True)
class SpatiallyAdaptiveProgressiveConfig:
    n_frequencies: int = 10  # octaves 2^0 .. 2^(n-1), as in FrequencyConfig
    include_input: bool = True  # prepend x itself (never windowed)
    include_pi: bool = True  # sin(2^k pi x) as in the NeRF paper
    grid_resolution: int = 64  # progress nodes per axis, spanning [-1, 1] end to end
    error_threshold: float = 1e-3  # nodes whose running squared error is at or below this stop advancing
    start_fraction: float = 0.0  # fraction of training at which progress starts to grow
    end_fraction: float = 0.5  # a node never frozen reaches full exposure at this fraction
    error_decay: float = 0.9  # running error <- decay * running error + (1 - decay) * new mean

    def __post_init__(self) -> None:
        name = "SpatiallyAdaptiveProgressive"
        check_frequencies(name, self.n_frequencies)
        check_schedule(name, self.start_fraction, self.end_fraction)
        if not (isinstance(self.grid_resolution, int) and self.grid_resolution >= 2):
            raise NfieldError(f"{name}: grid_resolution must be an integer >= 2, got {self.grid_resolution!r}")
        if not 0.0 <= self.error_decay < 1.0:
            raise NfieldError(f"{name}: error_decay must be in [0, 1), got {self.error_decay}")
        if not self.error_threshold >= 0.0:
            raise NfieldError(f"{name}: error_threshold must be >= 0, got {self.error_threshold}")


@ENCODINGS.register("SpatiallyAdaptiveProgressive", SpatiallyAdaptiveProgressiveConfig)
class SpatiallyAdaptiveProgressive(nn.Module):
    """`Frequency` encoding whose bands fade in per region, where the fit still needs them.

    Progress alpha in [0, L] (L = n_frequencies) is stored on (R,)*d nodes (R = grid_resolution,
    d = 2 or 3); node (i_0, .., i_{d-1}) sits at x_k = -1 + 2 i_k / (R - 1). A query point reads
    alpha by multilinear interpolation and scales band k by w_k(alpha) as in `band_window`.

    Feedback loop, driven by the task and the trainer:

    - `observe_error(x, error)` adds each point's error to its nearest node (a sum and a count).
    - `update(step, total)` folds the mean error observed since the previous update into each
      node's running error (an EMA with `error_decay`; nodes without new observations keep theirs),
      then, from step start_fraction * total on, advances alpha by
      L / ((end_fraction - start_fraction) * total) per elapsed step on every node whose running
      error is above `error_threshold` or that has never been observed; the others stay frozen.
      alpha is clamped to [0, L]. The first update resets alpha to 0, so it is 0 everywhere before
      the start step. A call with a step not after the last update changes nothing, so calling it
      twice for one step, or resuming from a checkpoint, is exact.
    - Data-parallel training (`nfield.distributed.data_parallel`, each rank seeing its
      own batches): `update` all-reduces (SUM) the error sums and counts observed since the previous
      update before folding them in, so every rank's decision equals that of one process seeing all
      ranks' batches. It is then a collective: every rank must call it, with the same step (the
      trainer does, every step). Otherwise nothing is communicated.

    All of this state lives in buffers (saved in the state dict) and is updated on the device
    without reading anything back to the host. alpha starts at L everywhere, so a module that is
    never updated equals `Frequency`.

    The progress map is treated as locally constant: gradients w.r.t. x flow through the sinusoids
    only, so normals and eikonal terms see the currently exposed frequencies rather than the edges
    of the progress map, and the encoding stays twice differentiable.

    Input (N, d) in [-1, 1]; output (N, d * (2 * n_frequencies + include_input)), laid out like
    `Frequency`.
    """

    alpha: torch.Tensor
    error_sum: torch.Tensor
    error_count: torch.Tensor
    error_ema: torch.Tensor
    observed: torch.Tensor
    last_step: torch.Tensor

    def __init__(self, in_dim: int, cfg: SpatiallyAdaptiveProgressiveConfig = SpatiallyAdaptiveProgressiveConfig()):
        super().__init__()
        if in_dim not in (2, 3):
            raise NfieldError(f"SpatiallyAdaptiveProgressive works on 2-D or 3-D coordinates, got in_dim={in_dim}")
        self.cfg = cfg
        self.in_dim = in_dim
        self.out_dim = in_dim * (2 * cfg.n_frequencies + int(cfg.include_input))
        shape = (cfg.grid_resolution,) * in_dim
        self.register_buffer("alpha", torch.full(shape, float(cfg.n_frequencies)))
        self.register_buffer("error_sum", torch.zeros(shape))
        self.register_buffer("error_count", torch.zeros(shape))
        self.register_buffer("error_ema", torch.zeros(shape))
        self.register_buffer("observed", torch.zeros(shape, dtype=torch.bool))
        self.register_buffer("last_step", torch.tensor(-1, dtype=torch.int64))

    @property
    def progress_map(self) -> torch.Tensor:
        """(R,)*d exposure alpha / L in [0, 1] per node, indexed like `alpha` (first index along x_0)."""
        return self.alpha.detach() / self.cfg.n_frequencies

    def alpha_at(self, x: torch.Tensor) -> torch.Tensor:
        """Progress at query points by multilinear interpolation of the node values.

        Interpolates with lerps, so a constant progress map reads back exactly.

        Args:
            x: (N, d) points in [-1, 1] (points outside read the nearest border).

        Returns:
            (N,) alpha in [0, n_frequencies], in alpha's dtype (float32), detached.
        """
        p = self._node_units(x)
        lower = p.floor().clamp(max=self.cfg.grid_resolution - 2)
        t = p - lower
        lower = lower.long()
        # Corner values, last axis fastest; each lerp pass merges the pairs that differ in one axis.
        values = [
            self.alpha[tuple(lower[:, axis] + bit for axis, bit in enumerate(bits))]
            for bits in itertools.product((0, 1), repeat=self.in_dim)
        ]
        for axis in reversed(range(self.in_dim)):
            values = [torch.lerp(values[j], values[j + 1], t[:, axis]) for j in range(0, len(values), 2)]
        return values[0]

    @torch.no_grad()
    def observe_error(self, x: torch.Tensor, error: torch.Tensor) -> None:
        """Accumulate per-point errors into their nearest nodes, for the next `update`.

        Args:
            x: (N, d) points in [-1, 1] where the error was measured.
            error: (N,) non-negative error per point (the task passes the squared error, detached).
        """
        nodes = self._node_units(x).round().long()  # (N, d)
        flat = nodes[:, 0]
        for axis in range(1, self.in_dim):
            flat = flat * self.cfg.grid_resolution + nodes[:, axis]  # (N,), row-major like alpha
        self.error_sum.view(-1).index_add_(0, flat, error.detach().to(self.error_sum.dtype))
        self.error_count.view(-1).index_add_(0, flat, torch.ones_like(flat, dtype=self.error_count.dtype))

    def _observed_errors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(R,)*d error sum and (R,)*d count observed since the last update, summed over all processes.

        In data-parallel training (`nfield.distributed`), a copy of both accumulators is
        all-reduced (SUM) in one collective; the buffers themselves keep this process's share only, so
        errors still pending after a repeated step are not counted twice by the next update. Otherwise
        these are the buffers themselves.
        """
        if data_parallel() is None:
            return self.error_sum, self.error_count
        totals = all_reduce_(torch.stack([self.error_sum, self.error_count]))  # (2, R, ..): a copy, reduced in place
        return totals[0], totals[1]

    def _node_units(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) points in [-1, 1] -> (N, d) float32 positions in node units, clamped to [0, R - 1]."""
        r = self.cfg.grid_resolution
        return ((x.detach().to(self.alpha.dtype) + 1.0) * (0.5 * (r - 1))).clamp(0.0, r - 1.0)

    @torch.no_grad()
    def update(self, step: int, total: int) -> None:
        """Fold in the observed errors and advance alpha to `step` (0-based) of `total` steps.

        A collective in data-parallel training: call it on every rank.
        """
        cfg = self.cfg
        start, end = schedule_steps("SpatiallyAdaptiveProgressive", total, cfg.start_fraction, cfg.end_fraction)
        fresh = self.last_step < step  # () bool on the device: every change below is masked by it
        # Running error: nodes observed since the last update (on any rank) blend in their mean error.
        error_sum, error_count = self._observed_errors()
        seen = fresh & (error_count > 0)
        mean = error_sum / error_count.clamp(min=1.0)
        blended = torch.where(self.observed, cfg.error_decay * self.error_ema + (1.0 - cfg.error_decay) * mean, mean)
        self.error_ema.copy_(torch.where(seen, blended, self.error_ema))
        self.observed.logical_or_(seen)
        self.error_sum.masked_fill_(fresh, 0.0)
        self.error_count.masked_fill_(fresh, 0.0)
        # Progress: schedule steps elapsed since the last update (none for a repeated step).
        done = (self.last_step.double() - start).clamp(min=0.0)
        elapsed = (max(step - start, 0.0) - done).clamp(min=0.0)
        advance = (elapsed * (cfg.n_frequencies / (end - start))).float()
        growing = ~self.observed | (self.error_ema > cfg.error_threshold)
        self.alpha.masked_fill_(self.last_step < 0, 0.0)
        self.alpha.add_(growing * advance).clamp_(0.0, float(cfg.n_frequencies))
        self.last_step.clamp_(min=step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        return windowed_frequency_features(x, self.alpha_at(x), cfg.n_frequencies, cfg.include_input, cfg.include_pi)

    def extra_repr(self) -> str:
        cfg = self.cfg
        return f"in_dim={self.in_dim}, n_frequencies={cfg.n_frequencies}, grid_resolution={cfg.grid_resolution}"
