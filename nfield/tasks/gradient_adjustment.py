"""Inductive gradient adjustment (IGA): reshape the eNTK's spectrum to counter spectral bias.

Shi, Chen, Zhang & Gu, "Inductive Gradient Adjustment for Spectral Bias in Implicit Neural
Representations", ICML 2025 (arXiv 2410.13271; official code LabShuHangGU/IGA-INR).

Gradient descent on the MSE moves the parameters along J^T r, where J (N, P) is the Jacobian of
the N outputs with respect to the P parameters and r = f - y the residuals; the outputs then evolve
with the empirical NTK K = J J^T, learning the eigen-directions of its large eigenvalues (the low
frequencies) first. IGA updates along J^T S r instead, with S = V diag(s) V^T built from K's
eigen-decomposition K = V diag(lambda) V^T (eigenvalues descending):

    s_i = lambda_n / lambda_i  for i < n,   s_i = 1  otherwise   (n = ``n_balanced``),

so S K has its n largest eigenvalues lowered to the (n+1)-th largest, lambda_n, and the
small-eigenvalue (high-frequency) directions gain weight relative to the dominant ones. That is
S = I - sum_{i<n} (1 - lambda_n / lambda_i) v_i v_i^T, the paper's construction with start 0 and
the anchor at its ``end``, as every image script of the official code sets them.

K is N x N, so IGA works inductively, as the official image code does:

- the inputs are partitioned into groups of neighbours, and each group is represented by one
  sample, the one with the largest residual (|r| summed over channels) in the batch. The groups
  (`patch_groups`) are, for image fitting, square patches of ``patch_size`` x ``patch_size``
  pixels; for audio fitting, runs of ``patch_size`` consecutive samples; for video fitting,
  ``patch_size`` x ``patch_size`` pixels of one frame;
- the eNTK K_s (G, G) of the G representatives gives S_s (G, G) as above, and S = S_s ⊗ I acts on
  the residuals laid out as (group, slot within the group): a sample at slot k of group i receives
  sum_j S_s[i, j] r[j, k], the residuals at the same slot of every group;
- S is rebuilt every step;
- multi-channel outputs use the paper's pseudo-NTK: gradients of sum_c f_c / sqrt(C), and the
  same S_s mixes every channel.

The update is realised by the surrogate loss 2 / (N C) * sum f * (S r).detach(), whose gradient is
2 / (N C) J^T S r, the plain MSE gradient when S = I.

Where this differs from the official code:

- representatives: the official image script means to take each patch's largest-error pixel, but
  its indexing (``a[:, max_indices, :]``) sums every patch's gradients over the argmax offsets of
  all patches; this module takes the one largest-error sample per group the comment describes;
- batches that leave slots out (random batches, INT picks, partial patches at the image's border)
  count the missing residuals as zero in S_s ⊗ I (the official script needs a full image whose
  sides are multiples of the patch size);
- the anchor index is lowered to the last eigenvalue above 1e-7 of the largest when K_s has fewer
  positive ones than ``n_balanced + 1`` (the official code would divide by zero or index past the
  end); the eigen-decomposition is done in float64;
- signals larger than one batch train on whole random groups, as the official 3-D occupancy code
  trains on random groups: images on batch_size // patch_size^2 patches, clips on
  batch_size // patch_size runs, videos on batch_size // patch_size^2 patches of random frames
  (`random_blocks`); with teaching, audio and video draw their candidates the same way (images
  draw random pixels); a batch may span at most `MAX_GROUPS` groups.

Defaults, from the official image scripts: patch_size 32; ``end`` is 25 for ReLU, 20 for ReLU+PE
and SIREN, 15 for FINER (30 in its argparse), so n_balanced defaults to 20. Those scripts also raise
the learning rate with IGA for ReLU networks (1e-3 -> 5e-3), as S lowers the dominant directions;
nothing here changes the learning rate. The official code has no audio or video scripts; its 1-D
toy (1,024 points) uses runs of 8, 128 groups. Audio's default run is 1,024 samples, the samples
of one default 32 x 32 image patch, which is 128 groups of the default 2^17-sample batch too;
video keeps the image's 32 x 32 patches.

Not for the other tasks: SDF fitting's loss is an L1 distance plus eikonal terms, not the MSE whose
gradient is J^T r that S reshapes; in NeRF a pixel's colour is the volume rendering of many field
samples along its ray, so the kernel to balance is over rays, not field inputs (the official
repository's NeRF variant is not ported).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from nfield.errors import NfieldError

#: Groups one step may span: the eNTK is G x G and its Jacobian G x n_parameters.
MAX_GROUPS = 2048
#: Values the per-group Jacobian (G, P) may hold: 2 GiB of float32 (a hash grid's millions of
#: parameters times hundreds of groups would exhaust memory).
MAX_JACOBIAN_VALUES = 2**29
#: Eigenvalues at or below this fraction of the largest count as zero when choosing the anchor.
RELATIVE_EIGEN_FLOOR = 1e-7


@dataclass(frozen=True)
class GradientAdjustmentConfig:
    enabled: bool = False  # IGA: update along J^T S r instead of J^T r
    patch_size: int = 32  # samples per group's side: pixels of a square (image, video frame) patch, or a run of audio samples
    n_balanced: int = 20  # the paper's "end": the n largest eNTK eigenvalues are lowered to the (n+1)-th

    def __post_init__(self) -> None:
        for name in ("patch_size", "n_balanced"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NfieldError(f"gradient_adjustment.{name} must be an integer >= 1, got {value!r}")


def pooled_jacobian(model: nn.Module, coords: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients of the pooled output sum_c f_c(x) / sqrt(C) (the paper's pseudo-NTK
    for C output channels), one sample at a time, without autocast.

    Args:
        model: any module mapping (B, d) inputs to (B, C) outputs; its trainable parameters count.
        coords: (G, d) the inputs.

    Returns:
        (G, P) in the parameters' dtype, P the number of trainable parameters.
    """
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def pooled(values: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return _pooled_output(functional_call(model, (values, buffers), (x[None],)))

    with torch.autocast(coords.device.type, enabled=False):
        try:
            grads = vmap(grad(pooled), in_dims=(None, 0))(params, coords)
            return torch.cat([g.reshape(len(coords), -1) for g in grads.values()], dim=1)
        except (RuntimeError, NotImplementedError) as err:  # custom autograd kernels without vmap rules
            warnings.warn(f"IGA: no vmap through this model ({type(err).__name__}); one backward pass per sample instead")
        trainable = [p for p in model.parameters() if p.requires_grad]
        rows = []
        for x in coords:
            grads = torch.autograd.grad(_pooled_output(model(x[None])), trainable, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(trainable, grads)]))
        return torch.stack(rows)


def _pooled_output(out: torch.Tensor) -> torch.Tensor:
    """sum_c f_c / sqrt(C) of one sample's (1, C) output, in at least float32."""
    return out.to(torch.promote_types(out.dtype, torch.float32)).sum() / math.sqrt(out.shape[-1])


def empirical_ntk(model: nn.Module, coords: torch.Tensor) -> torch.Tensor:
    """The (pseudo-)eNTK K = J J^T of `model` on `coords` (G, d): K[i, j] = <g(x_i), g(x_j)> with g
    the parameter gradient of sum_c f_c / sqrt(C). Returns (G, G) in the parameters' dtype."""
    jacobian = pooled_jacobian(model, coords)
    return jacobian @ jacobian.T


def balancing_transform(kernel: torch.Tensor, n_balanced: int) -> torch.Tensor:
    """S = I - sum_{i<n} (1 - lambda_n / lambda_i) v_i v_i^T for the symmetric PSD `kernel` (G, G)
    with eigenvalues lambda_0 >= lambda_1 >= ...; n is `n_balanced`, lowered to G - 1 and to the
    last eigenvalue above `RELATIVE_EIGEN_FLOOR` of the largest. Returns (G, G) in `kernel`'s dtype."""
    eigenvalues, eigenvectors = torch.linalg.eigh(kernel.double())
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # descending
    n_positive = int((eigenvalues > RELATIVE_EIGEN_FLOOR * eigenvalues[0].clamp_min(0)).sum())
    anchor = min(n_balanced, n_positive - 1)
    identity = torch.eye(len(kernel), dtype=kernel.dtype, device=kernel.device)
    if anchor < 1:
        return identity
    shrink = 1 - eigenvalues[anchor] / eigenvalues[:anchor]
    top = eigenvectors[:, :anchor]
    return identity - ((top * shrink) @ top.T).to(kernel.dtype)


#: Cells per axis up to which `grid_cells` tells every cell apart: beyond 2^23, float32 centres of
#: neighbouring cells can coincide.
MAX_CELLS_PER_AXIS = 2**23


def grid_cells(coords: torch.Tensor, resolution: Sequence[int]) -> torch.Tensor:
    """The cell of each sample on a regular grid, the exact inverse of the float32 cell centres that
    `pixel_coordinates`, `time_coordinates` and `video_coordinates` make, (k + 0.5) * (2 / n) - 1,
    for up to `MAX_CELLS_PER_AXIS` cells per axis (a float32 floor is one off for some cells from about 2^22).

    Args:
        coords: (N, d) cell centres in [-1, 1], in any floating dtype.
        resolution: d cells per axis, in the order of `coords`' columns.

    Returns:
        (N, d) int64 cell indices, each the one whose float32 centre is nearest its coordinate.
    """
    nearby = torch.arange(-2, 3, device=coords.device)  # below 2^23 cells the float64 floor is at most one off
    cells = []
    for axis, n in enumerate(resolution):
        exact = coords[:, axis].double()
        candidates = (((exact + 1) * (n / 2)).floor().long()[:, None] + nearby).clamp(0, n - 1)  # (N, 5)
        centres = (candidates.float() + 0.5) * (2.0 / n) - 1.0
        nearest = (centres.double() - exact[:, None]).abs().argmin(dim=1, keepdim=True)
        cells.append(candidates.gather(1, nearest)[:, 0])
    return torch.stack(cells, dim=1)


def patch_groups(
    coords: torch.Tensor, resolution: Sequence[int], patch_size: int | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The patch and the slot within it of samples on a regular grid, the grid tiled by patches
    from cell 0 (those at the far border cut to it).

    Args:
        coords: (N, d) cell centres in [-1, 1] (see `grid_cells`).
        resolution: d cells per axis, in the order of `coords`' columns: images (width, height),
            audio (n_samples,), video (width, height, n_frames).
        patch_size: cells per patch along every axis, or one count per axis: images p (p x p
            squares), audio p (runs of p samples), video (p, p, 1) (p x p pixels of one frame).

    Returns:
        groups (N,) int64: the patch, row-major over the patch grid; slots (N,) int64: the offset
        within the patch, row-major over the patch's cells.
    """
    cells = grid_cells(coords, resolution)
    sides = [patch_size] * len(resolution) if isinstance(patch_size, int) else list(patch_size)
    groups, slots = torch.zeros_like(cells[:, 0]), torch.zeros_like(cells[:, 0])
    for axis, (n, side) in enumerate(zip(resolution, sides)):
        groups = groups * -(-n // side) + cells[:, axis] // side
        slots = slots * side + cells[:, axis] % side
    return groups, slots


def random_blocks(
    shape: Sequence[int], block: Sequence[int], n: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The cells of `n` distinct random blocks of a grid tiled by blocks from cell 0, those at the
    far border cut to the grid (the batches of whole IGA groups).

    Args:
        shape: d cells per axis of the grid, e.g. audio (n_samples,), video (n_frames, height, width).
        block: d cells per axis of a block, e.g. (run,) or (1, p, p).
        n: blocks to draw without replacement (all of them when there are fewer).
        generator: draws them; on `device`.
        device: where the cells are made.

    Returns:
        (M, d) int64 cell indices, block after block, row-major within each; M <= n * prod(block).
    """
    counts = [-(-size // side) for size, side in zip(shape, block)]
    chosen = torch.randperm(math.prod(counts), device=device, generator=generator)[:n]
    corners = []
    for count, side in zip(reversed(counts), reversed(block)):  # row-major block index -> corner cells
        corners.insert(0, chosen % count * side)
        chosen = chosen // count
    offsets = torch.meshgrid(*(torch.arange(side, device=device) for side in block), indexing="ij")
    cells = torch.stack(corners, dim=1)[:, None, :] + torch.stack([o.reshape(-1) for o in offsets], dim=1)[None]
    cells = cells.reshape(-1, len(shape))
    return cells[(cells < torch.tensor(list(shape), device=device)).all(dim=1)]


def worst_per_group(groups: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
    """Index of each group's sample with the largest |residual| summed over channels.

    Args:
        groups: (N,) int64 group ids 0 .. G-1, every id present.
        residuals: (N, C).

    Returns:
        (G,) int64 indices into the N samples (the first one on ties).
    """
    score = residuals.detach().abs().sum(dim=-1)
    n_groups, n = int(groups.max()) + 1, len(groups)
    best = torch.full((n_groups,), -math.inf, dtype=score.dtype, device=score.device)
    best = best.scatter_reduce(0, groups, score, reduce="amax")
    position = torch.arange(n, device=groups.device)
    position = torch.where(score == best[groups], position, torch.full_like(position, n))
    return torch.full((n_groups,), n, device=groups.device).scatter_reduce(0, groups, position, reduce="amin")


def apply_transform(transform: torch.Tensor, residuals: torch.Tensor, groups: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """(S_s ⊗ I) r: the residual at slot k of group i becomes sum_j S_s[i, j] r[j, k], a slot
    missing from group j counting as zero.

    Args:
        transform: (G, G) S_s.
        residuals: (N, C).
        groups: (N,) int64 group ids 0 .. G-1.
        slots: (N,) int64 slot ids 0 .. M-1; (group, slot) pairs are distinct.

    Returns:
        (N, C) the adjusted residuals.
    """
    n_slots = int(slots.max()) + 1
    laid_out = residuals.new_zeros(len(transform), n_slots, residuals.shape[-1])
    laid_out[groups, slots] = residuals
    return torch.einsum("ij,jkc->ikc", transform.to(residuals.dtype), laid_out)[groups, slots]


class GradientAdjuster:
    """IGA for any module mapping (N, d) inputs to (N, C) outputs (see the module docstring).

    Args:
        cfg: the adjustment's settings (validated on construction).
    """

    def __init__(self, cfg: GradientAdjustmentConfig = GradientAdjustmentConfig(enabled=True)):
        self.cfg = cfg

    def transform(self, model: nn.Module, coords: torch.Tensor, residuals: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """S_s (G, G) from the eNTK on each group's worst-fitted sample; `coords` (N, d),
        `residuals` (N, C), `groups` (N,) ids 0 .. G-1, every id present."""
        kernel = empirical_ntk(model, coords[worst_per_group(groups, residuals)].detach())
        return balancing_transform(kernel, self.cfg.n_balanced)

    def adjusted_residuals(
        self, model: nn.Module, coords: torch.Tensor, residuals: torch.Tensor, groups: torch.Tensor, slots: torch.Tensor
    ) -> torch.Tensor:
        """(S_s ⊗ I) r for a batch.

        Args:
            model: the field being fitted.
            coords: (N, d) the batch's inputs.
            residuals: (N, C) f(x) - y (detached here).
            groups: (N,) int64 any group ids (e.g. `patch_groups`); renumbered internally.
            slots: (N,) int64 the sample's position within its group; (group, slot) pairs distinct.

        Returns:
            (N, C) the adjusted residuals, detached.
        """
        present, groups = torch.unique(groups, return_inverse=True)
        if len(present) > MAX_GROUPS:
            raise NfieldError(
                f"IGA: the batch spans {len(present)} groups, more than {MAX_GROUPS}; "
                "use a larger gradient_adjustment.patch_size or a smaller batch"
            )
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if len(present) * n_params > MAX_JACOBIAN_VALUES:
            raise NfieldError(
                f"IGA: the Jacobian of {len(present)} groups x {n_params:,} parameters would hold more than "
                f"{MAX_JACOBIAN_VALUES:,} values; use a larger patch size (fewer groups) or a smaller model"
            )
        _, slots = torch.unique(slots, return_inverse=True)
        residuals = residuals.detach()
        return apply_transform(self.transform(model, coords, residuals, groups), residuals, groups, slots)

    def loss(
        self,
        model: nn.Module,
        coords: torch.Tensor,
        outputs: torch.Tensor,
        targets: torch.Tensor,
        groups: torch.Tensor,
        slots: torch.Tensor,
    ) -> torch.Tensor:
        """A scalar whose value is the MSE of `outputs` and whose gradient is IGA's 2 / (N C) J^T S r.

        Args:
            model: the field being fitted.
            coords: (N, d) the batch's inputs.
            outputs: (N, C) model(coords), with gradients.
            targets: (N, C).
            groups, slots: (N,) int64 each sample's group and position in it (see `adjusted_residuals`).
        """
        residuals = outputs - targets
        surrogate = self.surrogate_loss(outputs, self.adjusted_residuals(model, coords, residuals, groups, slots))
        return residuals.detach().square().mean() + (surrogate - surrogate.detach())

    @staticmethod
    def surrogate_loss(outputs: torch.Tensor, adjusted: torch.Tensor) -> torch.Tensor:
        """2 / (N C) * sum(f * S r): its gradient is 2 / (N C) J^T S r, the MSE's when S = I.
        `outputs` (N, C) with gradients, `adjusted` (N, C) the adjusted residuals. Returns a scalar."""
        return 2 * (outputs * adjusted.detach()).sum() / outputs.numel()
