"""NeuRBF: adaptive radial basis functions with multi-frequency sinusoidal composition, plus a grid.

Chen, Li, Song, Chen, Yu, Yuan, Xu, "NeuRBF: A Neural Fields Representation with Adaptive Radial
Basis Functions", ICCV 2023 (arXiv 2309.15426); the defaults are those of the official code's image
configuration (github.com/oppo-us-research/NeuRBF, ``configs/img.py`` and ``img_sdf/network.py``).

Adaptive part. K kernels, each with a centre c_k in [-1, 1]^d, a positive-definite shape (the
inverse covariance Sigma_k^-1 = L_k L_k^T, stored as the Cholesky factor L_k: the log of its
diagonal and its strictly lower entries) and a feature vector w_k in R^D. With
q_k(x) = (x - c_k)^T Sigma_k^-1 (x - c_k) = |L_k^T (x - c_k)|^2 the kernel is

    inverse_quadric:  phi_k(x) = 1 / (1 + q_k(x))        (the official code's default ``ivq_a``)
    gaussian:         phi_k(x) = exp(-q_k(x) / 2)

Each point uses only its n nearest kernels N(x) (Euclidean distance to the centres, n = 4), with
the responses normalised over them, phi~_k = phi_k / (sum_{j in N(x)} phi_j + 1e-8) (for the
Gaussian a softmax of -q / 2, the same ratio computed without underflow and without the 1e-8). The
multi-frequency extension composes each normalised response with D sinusoids, channel j getting
its own frequency omega_j (log-linearly spaced from 2^-3 to 2^12, D = 32: the official image
configuration's ``pe_lc0_rbf_freq``) and a learned phase b_j shared by all kernels (the paper's
globally shared bias inside the sine; the official code has none there, so b starts at zero):

    rbf_j(x) = sum_{k in N(x)} w_{k,j} sin(omega_j phi~_k(x) + b_j),    j = 1..D.

Grid part. A multiresolution grid (nfield's `HashGrid`, 2 levels of 2 features from 16 vertices
per axis, finest level at per_level_scale * 16; the official code puts its finest level at half
the image size) adds grid-based radial bases. The encoding outputs [grid(x), rbf(x)], concatenated
as in the official code, and the field's network (a small MLP) decodes them. Features start
U(-1e-4, 1e-4) (grid and w_k, as in the official code), phases at zero.

Initialisation. `init_from_samples` places the centres by weighted k-means (seeded by sampling
points in proportion to their weights, 10 Lloyd iterations by default, each assignment a 1-nearest
search through the lookup grid below, so O(M * candidates) per iteration) and sets each shape from
its cluster's weighted covariance, Sigma_k = Cov_k / 0.5, clipped to widths (square roots of the
eigenvalues) between half the points' mean spacing and 0.2; `init_from_signal` does this for an
image with the Sobel gradient magnitude as weights (`image_gradient_weights`), as the paper does.
Without it the centres are uniform random in [-1, 1]^d with isotropic width (2 / K^(1/d)) / 2.
By default the centres and shapes then stay fixed, as in the official image and SDF
configurations (``fix_params = ['kc0', 'ks0']``); ``train_kernels`` trains them too.

Neighbour search (exact, no gradient). A lookup grid of G^d cells (G = ceil(K^(1/d)), at most 256
in 2-D and 64 in 3-D, or ``lookup_resolution``) stores for each cell the kernels whose centre lies
within d_n(z) + 2h + 2m of the cell centre z, where d_n(z) is the distance from z to its n-th
nearest centre, h the cell's half diagonal and m a movement margin (one cell's half width when the
centres train, else 0). By the triangle inequality this candidate list contains the n nearest
kernels of every point of the cell as long as no centre has moved more than m since the list was
built, so a query measures its distance to its cell's candidates only (O(N M d) for M candidates,
a few tens) and takes the n smallest. The lists are rebuilt, in O(G^d K d) chunked work, when a
centre has moved further than m; checking costs one device-to-host sync per forward while
centres train. Points outside [-1, 1]^d use their nearest border cell (exact only inside the
box). ``n_neighbours = 0`` (or >= K) uses every kernel for every point instead: O(N K D) memory,
for small K only. The official code uses a KD-tree on the CPU (precomputed for the fixed training
pixels), which the lookup grid replaces.

Derivatives. The neighbour sets are piecewise constant in x, so the features are differentiable
(to any order, autograd throughout) everywhere except where a point's neighbour set changes, where
they jump. The normaliser is differentiated (the official code detaches it, which changes nothing
for fixed kernels but the gradient w.r.t. x), so gradients are the exact derivatives of the formula.
Computation is float32 (float64 for a float64 module) even under autocast: omega_j phi~ reaches
thousands of radians, which float16 cannot resolve.

Simplifications with respect to the official code: the sinusoidal composition of the first MLP
layer (h + sin(h * m'), m' in [10, 100]) belongs to the network and is not part of this encoding;
the extra bias added to the concatenated features is left to the MLP's first-layer bias; K is a
configuration key (default 4096) rather than derived from the parameter count of a reference
16-level hash grid (about 7,000 kernels for a 512 x 512 image); kernel widths are clipped by
eigenvalue at initialisation only (the official code clips the matrix entries, also while
training); the NeRF-specific initialisations (from a pre-trained density) are not provided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nfield.encodings.grid import HashGrid, HashGridConfig
from nfield.encodings.registry import ENCODINGS
from nfield.errors import NfieldError

KERNELS = ("inverse_quadric", "gaussian")
#: Cluster covariance divided by this gives the kernel's Sigma (the official ``kw_init`` alpha).
COVARIANCE_ALPHA = 0.5
#: Widest kernel the initialisation makes (the official code's range / 10 on a box of side 2).
MAX_INIT_WIDTH = 0.2
_NORMALISER_EPS = 1e-8
_QUERY_CHUNK = 2**16  # points per neighbour-search chunk
_BUILD_CHUNK = 2**22  # cell-kernel distances per lookup-build chunk
_SIGNAL_MAX_POINTS = 2**20  # pixels that init_from_signal clusters at most


def _positive_int(name: str, key: str, value: Any, minimum: int = 1) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise NfieldError(f"{name}: {key} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class NeuRBFConfig:
    n_kernels: int = 4096  # K adaptive kernels
    kernel: str = "inverse_quadric"  # inverse_quadric 1 / (1 + q) or gaussian exp(-q / 2)
    n_neighbours: int = 4  # nearest kernels per point (0: all K, for small K only)
    n_features: int = 32  # D: channels of each kernel's feature vector, one sinusoid frequency each
    min_frequency: float = 0.125  # omega_1 = 2^-3, multiplies the normalised response
    max_frequency: float = 4096.0  # omega_D = 2^12; log-linear in between
    normalize: bool = True  # divide the responses by their sum over the point's neighbours
    train_kernels: bool = False  # also train centres and shapes (the official image/SDF setups keep them fixed)
    n_levels: int = 2  # grid part: resolution levels (0: no grid part)
    n_features_per_level: int = 2  # grid part: features per level
    log2_hashmap_size: int = 19  # grid part: hash table rows per level (2^this; smaller levels are dense)
    base_resolution: int = 16  # grid part: vertices per axis of the coarsest level
    per_level_scale: float = 16.0  # grid part: scale between levels (finest 256 by default: half a 512-px image)
    lookup_resolution: int = 0  # neighbour lookup cells per axis (0: ceil(K^(1/d)), at most 256 in 2-D, 64 in 3-D)

    def __post_init__(self) -> None:
        name = "NeuRBFConfig"
        _positive_int(name, "n_kernels", self.n_kernels)
        if self.kernel not in KERNELS:
            raise NfieldError(f"{name}: unknown kernel {self.kernel!r}; choose one of {', '.join(KERNELS)}")
        _positive_int(name, "n_neighbours", self.n_neighbours, minimum=0)
        _positive_int(name, "n_features", self.n_features)
        for key in ("min_frequency", "max_frequency", "per_level_scale"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
                raise NfieldError(f"{name}: {key} must be a positive finite number, got {value!r}")
        if self.min_frequency > self.max_frequency:
            raise NfieldError(f"{name}: min_frequency {self.min_frequency} is above max_frequency {self.max_frequency}")
        for key in ("normalize", "train_kernels"):
            if not isinstance(getattr(self, key), bool):
                raise NfieldError(f"{name}: {key} must be true or false, got {getattr(self, key)!r}")
        _positive_int(name, "n_levels", self.n_levels, minimum=0)
        _positive_int(name, "n_features_per_level", self.n_features_per_level)
        _positive_int(name, "base_resolution", self.base_resolution)
        _positive_int(name, "log2_hashmap_size", self.log2_hashmap_size, minimum=3)
        if self.log2_hashmap_size > 30:
            raise NfieldError(f"{name}: log2_hashmap_size must be at most 30, got {self.log2_hashmap_size}")
        if self.per_level_scale < 1.0:
            raise NfieldError(f"{name}: per_level_scale must be >= 1, got {self.per_level_scale}")
        _positive_int(name, "lookup_resolution", self.lookup_resolution, minimum=0)


def kernel_frequencies(cfg: NeuRBFConfig) -> torch.Tensor:
    """(D,) float64 omega_j = 2^linspace(log2 min_frequency, log2 max_frequency, D)."""
    exponents = torch.linspace(math.log2(cfg.min_frequency), math.log2(cfg.max_frequency), cfg.n_features, dtype=torch.float64)
    return torch.exp2(exponents)


def kernel_response(q: torch.Tensor, kernel: str) -> torch.Tensor:
    """phi from the squared Mahalanobis distance q (any shape): 1 / (1 + q) or exp(-q / 2)."""
    if kernel == "inverse_quadric":
        return 1.0 / (1.0 + q)
    return torch.exp(-0.5 * q)


def image_gradient_weights(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres and their gradient magnitudes, the weights of NeuRBF's image initialisation.

    The gradient is the normalised Sobel operator (the 3 x 3 Sobel kernels / 8, replicated borders,
    as kornia's ``SpatialGradient(normalized=True)`` that the official code uses), the weight of a
    pixel sqrt(sum over channels and both axes of the squared derivatives).

    Args:
        image: (H, W, C) intensities (any real dtype).

    Returns:
        points (H W, 2) in [-1, 1]^2, row-major pixel order, x = 2 (col + 0.5) / W - 1 and
        y = 2 (row + 0.5) / H - 1 (`nfield.data.images.pixel_coordinates`); weights (H W,) >= 0.
        Both float32 (float64 for a float64 image) on the image's device.
    """
    if image.dim() != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise NfieldError(f"image_gradient_weights: expected an (H, W, C) image, got shape {tuple(image.shape)}")
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    height, width = image.shape[:2]
    planes = image.to(dtype).permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    padded = torch.nn.functional.pad(planes, (1, 1, 1, 1), mode="replicate")
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=dtype, device=image.device) / 8.0
    kernels = torch.stack([sobel_x, sobel_x.T])[:, None]  # (2, 1, 3, 3): d/dx (columns), d/dy (rows)
    derivatives = torch.nn.functional.conv2d(padded, kernels)  # (C, 2, H, W)
    weights = derivatives.square().sum(dim=(0, 1)).sqrt().reshape(-1)
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=image.device),
        torch.arange(width, dtype=dtype, device=image.device),
        indexing="ij",
    )
    points = torch.stack([2.0 * (cols + 0.5) / width - 1.0, 2.0 * (rows + 0.5) / height - 1.0], dim=-1).reshape(-1, 2)
    return points, weights


def lookup_resolution_for(n_kernels: int, dim: int) -> int:
    """Default lookup cells per axis G: ceil(K^(1/d)), at most 256 in 2-D and 64 in 3-D."""
    return max(1, min(math.ceil(n_kernels ** (1.0 / dim) - 1e-9), 256 if dim == 2 else 64))


def lookup_cells(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N,) int64 flat lookup cell of each point x (N, d), first axis fastest; points outside [-1, 1] clamp."""
    cell = ((x.clamp(-1.0, 1.0) + 1.0) * (0.5 * resolution)).floor().long().clamp(0, resolution - 1)
    flat = cell[:, -1]
    for axis in range(x.shape[1] - 2, -1, -1):
        flat = flat * resolution + cell[:, axis]
    return flat


@torch.no_grad()
def build_candidates(centres: torch.Tensor, n: int, resolution: int, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each lookup cell's candidate kernels: those within d_n(z) + 2h + 2 margin of its centre z.

    Args:
        centres: (K, d) kernel centres, K >= n.
        n: neighbours a query will take.
        resolution: G cells per axis over [-1, 1]^d.
        margin: how far any centre may later move with the lists still exact.

    Returns:
        candidates (G^d, M) int64 kernel indices, nearest first, and valid (G^d, M) bool (each cell
        has its own count, the rest is padding); M is the largest count. O(G^d K d) work, chunked.
    """
    d = centres.shape[1]
    axis = (torch.arange(resolution, dtype=centres.dtype, device=centres.device) + 0.5) * (2.0 / resolution) - 1.0
    mesh = torch.meshgrid(*([axis] * d), indexing="ij")
    cell_centres = torch.stack(mesh[::-1], dim=-1).reshape(-1, d)  # flat index with the first axis fastest
    slack = 2.0 * math.sqrt(d) / resolution + 2.0 * margin
    chunk = max(1, _BUILD_CHUNK // len(centres))
    pieces = []
    for start in range(0, len(cell_centres), chunk):
        block = cell_centres[start : start + chunk]
        distances = torch.cdist(block, centres, compute_mode="donot_use_mm_for_euclid_dist")  # (C, K)
        radius = distances.topk(n, dim=1, largest=False).values[:, -1] + slack  # (kthvalue is far slower on CPU)
        distances = distances.masked_fill(distances > radius[:, None], math.inf)
        pieces.append(distances.topk(int((distances < math.inf).sum(dim=1).max()), dim=1, largest=False))
    width = max(piece.values.shape[1] for piece in pieces)
    candidates = torch.zeros(len(cell_centres), width, dtype=torch.int64, device=centres.device)
    valid = torch.zeros(len(cell_centres), width, dtype=torch.bool, device=centres.device)
    row = 0
    for piece in pieces:
        rows, columns = piece.indices.shape
        candidates[row : row + rows, :columns] = piece.indices
        valid[row : row + rows, :columns] = piece.values < math.inf
        row += rows
    return candidates, valid


@torch.no_grad()
def nearest_candidates(
    x: torch.Tensor, centres: torch.Tensor, candidates: torch.Tensor, valid: torch.Tensor, n: int, resolution: int
) -> torch.Tensor:
    """(N, n) int64 indices of the n nearest of `centres` (K, d) to each x (N, d), nearest first,
    searched among the candidate lists of `build_candidates` (exact for points inside [-1, 1]^d)."""
    out = torch.empty(len(x), n, dtype=torch.int64, device=x.device)
    centres = centres.to(x.dtype)
    for start in range(0, len(x), _QUERY_CHUNK):
        block = x[start : start + _QUERY_CHUNK]
        cells = lookup_cells(block, resolution)
        options, usable = candidates[cells], valid[cells]  # (B, M)
        distances = (block[:, None, :] - centres[options]).square().sum(-1).masked_fill(~usable, math.inf)
        out[start : start + len(block)] = options.gather(1, distances.topk(n, dim=1, largest=False).indices)
    return out


def _nearest(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(M,) int64 index of the nearest of `centres` (K, d) to each of `points` (M, d), by a lookup grid."""
    resolution = lookup_resolution_for(len(centres), centres.shape[1])
    candidates, valid = build_candidates(centres, 1, resolution, 0.0)
    return nearest_candidates(points, centres, candidates, valid, 1, resolution)[:, 0]


def weighted_kmeans(
    points: torch.Tensor, weights: torch.Tensor, n_clusters: int, iterations: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm with per-point weights, seeded by weighted sampling of the points.

    Args:
        points: (M, d) float64 points, all of positive weight.
        weights: (M,) float64 positive weights.
        n_clusters: K.
        iterations: Lloyd iterations (assign, then move each centre to its cluster's weighted mean;
            an empty cluster keeps its centre).
        generator: a CPU generator seeding the first centres, drawn in proportion to the weights
            without replacement (then with replacement for the K - M left when M < K).

    Returns:
        centres (K, d) float64 and labels (M,) int64, the points' clusters for the final centres.
    """
    # Weighted sampling without replacement by the Gumbel top-k trick (any number of points); when
    # there are fewer points than clusters, every point and then draws with replacement.
    uniform = torch.rand(len(points), dtype=torch.float64, generator=generator).clamp(min=1e-300)
    keys = weights.cpu().log() - (-uniform.log()).log()
    seeds = keys.topk(min(n_clusters, len(points))).indices
    if len(points) < n_clusters:
        cumulative = weights.cpu().cumsum(0)
        draws = torch.rand(n_clusters - len(points), dtype=torch.float64, generator=generator) * cumulative[-1]
        seeds = torch.cat([seeds, torch.searchsorted(cumulative, draws).clamp(max=len(points) - 1)])
    centres = points[seeds.to(points.device)].clone()
    for _ in range(iterations):
        labels = _nearest(points, centres)
        mass = torch.zeros(n_clusters, dtype=points.dtype, device=points.device).index_add_(0, labels, weights)
        sums = torch.zeros_like(centres).index_add_(0, labels, weights[:, None] * points)
        filled = mass > 0
        centres[filled] = sums[filled] / mass[filled, None]
    return centres, _nearest(points, centres)


def _gather(rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """rows (K, ...) at indices (N, n) -> (N, n, ...), by one index_select (faster than advanced indexing)."""
    return rows.index_select(0, indices.reshape(-1)).reshape(*indices.shape, *rows.shape[1:])


@ENCODINGS.register("NeuRBF", NeuRBFConfig)
class NeuRBF(nn.Module):
    """NeuRBF encoding: [grid(x), sum over the nearest kernels of w_k sin(omega phi~_k(x) + b)].

    See the module docstring for the formulas, defaults and neighbour search.

    Input (N, d) in [-1, 1], d = 2 or 3; output (N, n_levels * n_features_per_level + n_features),
    the grid's level-major features first, then the D RBF channels; float32 (float64 for a float64
    module) even under autocast.

    Parameters: ``centres`` (K, d); ``shape_log_diagonal`` (K, d) and ``shape_lower`` (K, d(d-1)/2),
    the Cholesky factor of Sigma^-1; ``features`` (K, D); ``phases`` (D,); and the grid's table.
    """

    def __init__(self, in_dim: int, cfg: NeuRBFConfig = NeuRBFConfig()):
        super().__init__()
        if in_dim not in (2, 3):
            raise NfieldError(f"NeuRBF works on 2-D or 3-D coordinates, got in_dim={in_dim}")
        self.cfg, self.in_dim = cfg, in_dim
        k, d = cfg.n_kernels, in_dim
        self.n_neighbours = 0 if cfg.n_neighbours >= k else cfg.n_neighbours
        self.grid = None
        if cfg.n_levels > 0:
            grid_cfg = HashGridConfig(
                cfg.n_levels, cfg.n_features_per_level, cfg.log2_hashmap_size, cfg.base_resolution, cfg.per_level_scale
            )
            self.grid = HashGrid(in_dim, grid_cfg)
        grid_dim = 0 if self.grid is None else self.grid.out_dim
        self.out_dim = grid_dim + cfg.n_features
        width = (2.0 / k ** (1.0 / d)) / 2.0
        self.centres = nn.Parameter(torch.rand(k, d) * 2.0 - 1.0, requires_grad=cfg.train_kernels)
        self.shape_log_diagonal = nn.Parameter(torch.full((k, d), -math.log(width)), requires_grad=cfg.train_kernels)
        self.shape_lower = nn.Parameter(torch.zeros(k, d * (d - 1) // 2), requires_grad=cfg.train_kernels)
        self.features = nn.Parameter(torch.empty(k, cfg.n_features).uniform_(-1e-4, 1e-4))
        self.phases = nn.Parameter(torch.zeros(cfg.n_features))
        self._frequencies = {"cpu": kernel_frequencies(cfg)}  # float64 omega_j per device (not a buffer: .float() keeps it exact)
        # Cholesky layout: entry (i, j) of L reads column _factor_index[i, j] of [exp(diagonal), lower, 0].
        index = torch.full((d, d), d + d * (d - 1) // 2, dtype=torch.int64)  # the zero column
        index[range(d), range(d)] = torch.arange(d)
        rows, cols = torch.tril_indices(d, d, offset=-1)
        index[rows, cols] = d + torch.arange(len(rows))
        self.register_buffer("_factor_index", index.reshape(-1), persistent=False)
        self.lookup_resolution = cfg.lookup_resolution or lookup_resolution_for(k, d)
        self._lookup: dict[str, Any] | None = None  # neighbour candidate lists, rebuilt when stale (not saved)
        self._last_query: tuple[torch.Tensor, tuple, torch.Tensor] | None = None  # the last points' neighbours

    # --- kernel parameters ------------------------------------------------------------------
    def frequencies(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(D,) float64 sinusoid frequencies omega_j on `device` (`kernel_frequencies`)."""
        key = str(device)
        if key not in self._frequencies:
            self._frequencies[key] = self._frequencies["cpu"].to(device)
        return self._frequencies[key]

    def shape_factors(self) -> torch.Tensor:
        """(K, d, d) lower-triangular L with positive diagonal; Sigma^-1 = L L^T."""
        k, d = self.centres.shape
        zero = self.shape_lower.new_zeros(k, 1)
        entries = torch.cat([self.shape_log_diagonal.exp(), self.shape_lower, zero], dim=1)
        return entries[:, self._factor_index].reshape(k, d, d)

    def precisions(self) -> torch.Tensor:
        """(K, d, d) inverse covariances Sigma_k^-1 = L_k L_k^T (positive definite)."""
        factors = self.shape_factors()
        return factors @ factors.transpose(1, 2)

    @torch.no_grad()
    def set_kernels(self, centres: torch.Tensor, covariances: torch.Tensor) -> None:
        """Set the centres (K, d) and shapes from covariances Sigma_k (K, d, d), symmetric positive definite."""
        k, d = self.centres.shape
        if centres.shape != (k, d) or covariances.shape != (k, d, d):
            raise NfieldError(f"NeuRBF.set_kernels: expected centres ({k}, {d}) and covariances ({k}, {d}, {d})")
        precision = torch.linalg.inv(covariances.double())
        factor = torch.linalg.cholesky(0.5 * (precision + precision.transpose(1, 2)))
        rows, cols = torch.tril_indices(d, d, offset=-1)
        self.centres.copy_(centres)
        self.shape_log_diagonal.copy_(factor.diagonal(dim1=1, dim2=2).log())
        self.shape_lower.copy_(factor[:, rows, cols])
        self._lookup = None

    # --- initialisation from the signal -----------------------------------------------------
    @torch.no_grad()
    def init_from_samples(
        self,
        points: torch.Tensor,
        weights: torch.Tensor,
        iterations: int = 10,
        generator: torch.Generator | None = None,
        min_width: float | None = None,
    ) -> None:
        """Centres by weighted k-means of `points`, shapes from the clusters' extents (the paper's init).

        Sigma_k = (weighted covariance of cluster k) / 0.5, with its eigenvalues clipped to
        [min_width^2, 0.2^2]; an empty cluster (or one of zero spread) gets the clip's bound.

        Args:
            points: (M, d) sample positions in [-1, 1]^d (pixel centres, surface samples...).
            weights: (M,) non-negative importance (the image gradient magnitude for images); points
                of zero weight are ignored. At least one must be positive.
            iterations: Lloyd iterations (10, as the official configurations).
            generator: seeds the k-means sampling (a CPU generator; None: one seeded with 0).
            min_width: narrowest kernel width; None: half the points' mean spacing, (2^d / M)^(1/d) / 2
                (half a pixel for the pixels of an image).
        """
        k, d = self.centres.shape
        if points.dim() != 2 or points.shape[1] != d or weights.shape != (points.shape[0],):
            raise NfieldError(
                f"NeuRBF.init_from_samples: expected points (M, {d}) and weights (M,), got {tuple(points.shape)} and "
                f"{tuple(weights.shape)}"
            )
        _positive_int("NeuRBF.init_from_samples", "iterations", iterations, minimum=0)
        points, weights = points.detach().double(), weights.detach().double()
        if not bool(torch.isfinite(points).all() and torch.isfinite(weights).all() and (weights >= 0).all()):
            raise NfieldError("NeuRBF.init_from_samples: points and weights must be finite, weights >= 0")
        keep = weights > 0
        if not bool(keep.any()):
            raise NfieldError("NeuRBF.init_from_samples: every weight is zero; give some points a positive weight")
        if min_width is None:
            min_width = 0.5 * (2.0**d / len(points)) ** (1.0 / d)
        if not min_width > 0:
            raise NfieldError(f"NeuRBF.init_from_samples: min_width must be positive, got {min_width}")
        min_width = min(min_width, MAX_INIT_WIDTH)
        points, weights = points[keep], weights[keep]
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        centres, labels = weighted_kmeans(points, weights, k, iterations, generator)
        offsets = points - centres[labels]
        mass = torch.zeros(k, dtype=points.dtype, device=points.device).index_add_(0, labels, weights)
        second = torch.zeros(k, d * d, dtype=points.dtype, device=points.device)
        second.index_add_(0, labels, weights[:, None] * (offsets[:, :, None] * offsets[:, None, :]).reshape(-1, d * d))
        covariance = second.reshape(k, d, d) / mass.clamp(min=torch.finfo(points.dtype).tiny)[:, None, None]
        values, vectors = torch.linalg.eigh(covariance / COVARIANCE_ALPHA)
        values = values.clamp(min_width**2, MAX_INIT_WIDTH**2)
        sigma = vectors @ torch.diag_embed(values) @ vectors.transpose(1, 2)
        self.set_kernels(centres.to(self.centres.dtype), sigma)

    @torch.no_grad()
    def init_from_signal(self, image_values: torch.Tensor, height: int, width: int) -> None:
        """Initialise the kernels from an image (the hook an image task calls at construction).

        Weighted k-means of the pixel centres with the Sobel gradient magnitudes as weights
        (`image_gradient_weights`, `init_from_samples` with its defaults and a generator seeded
        with 0, so deterministic). Images above 2^20 pixels cluster a random subset of 2^20 of
        them (same generator); a constant image, which has no gradient, clusters uniformly.

        Args:
            image_values: (height, width, C) intensities.
            height, width: the image size in pixels.
        """
        if self.in_dim != 2:
            raise NfieldError(f"NeuRBF.init_from_signal takes an image, which needs in_dim=2, not {self.in_dim}")
        if image_values.dim() != 3 or tuple(image_values.shape[:2]) != (height, width):
            raise NfieldError(f"NeuRBF.init_from_signal: expected ({height}, {width}, C) values, got {tuple(image_values.shape)}")
        points, weights = image_gradient_weights(image_values.to(self.centres.device))
        if not bool((weights > 0).any()):
            weights = torch.ones_like(weights)
        generator = torch.Generator().manual_seed(0)
        spacing = 0.5 * (4.0 / len(points)) ** 0.5
        if len(points) > _SIGNAL_MAX_POINTS:
            subset = torch.randperm(len(points), generator=generator)[:_SIGNAL_MAX_POINTS].to(points.device)
            points, weights = points[subset], weights[subset]
        self.init_from_samples(points, weights, generator=generator, min_width=spacing)

    # --- neighbour search -------------------------------------------------------------------
    @torch.no_grad()
    def _current_lookup(self) -> dict[str, Any]:
        """The candidate lists, rebuilt when a centre moved further than their margin since they were built."""
        centres = self.centres.detach()
        key = (centres.data_ptr(), centres.device, centres.dtype, centres._version)
        lookup = self._lookup
        if lookup is not None and lookup["key"] == key:
            return lookup
        margin = 1.0 / self.lookup_resolution if self.centres.requires_grad else 0.0
        stale = (
            lookup is None
            or lookup["centres"].shape != centres.shape
            or lookup["centres"].device != centres.device
            or lookup["centres"].dtype != centres.dtype
            or lookup["margin"] < margin
            or float((centres - lookup["centres"]).norm(dim=1).max()) > lookup["margin"]
        )
        if stale:
            candidates, valid = build_candidates(centres, self.n_neighbours, self.lookup_resolution, margin)
            lookup = {"candidates": candidates, "valid": valid, "centres": centres.clone(), "margin": margin}
        lookup["key"] = key
        self._lookup = lookup
        return lookup

    @torch.no_grad()
    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n) int64 indices of the n nearest kernel centres of each point x (N, d), nearest first.

        Exact for points in [-1, 1]^d (see the module docstring); with ``n_neighbours`` 0 or >= K,
        every kernel (N, K) in index order.
        """
        k = self.centres.shape[0]
        if self.n_neighbours == 0:
            return torch.arange(k, device=x.device).expand(len(x), k)
        lookup = self._current_lookup()
        reusable = not (x.requires_grad or x.is_inference())
        cached = self._last_query
        if reusable and cached is not None and cached[0] is x and cached[1] == (x._version, lookup["key"]):
            return cached[2]
        out = nearest_candidates(
            x.detach(), self.centres.detach(), lookup["candidates"], lookup["valid"], self.n_neighbours, self.lookup_resolution
        )
        # The same points again (a full-batch task's coordinates) reuse these indices while the
        # kernels stay put; the reference held keeps the tensor, so identity cannot be recycled.
        self._last_query = (x, (x._version, lookup["key"]), out) if reusable else None
        return out

    # --- features ---------------------------------------------------------------------------
    def kernel_responses(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernels each point uses and their (normalised) responses.

        Args:
            x: (N, d) points, in the computation dtype.

        Returns:
            indices (N, n) int64 (n = n_neighbours, or K when every kernel is used) and
            phi~ (N, n): phi_k(x) divided by the sum over the n kernels (+ 1e-8) when ``normalize``;
            for the Gaussian, softmax(-q / 2) over the n kernels, the same ratio without the 1e-8,
            which stays finite where every exp(-q / 2) underflows (far from narrow kernels).
        """
        indices = self.neighbours(x)
        offsets = x[:, None, :] - _gather(self.centres.to(x.dtype), indices)  # (N, n, d)
        factors = _gather(self.shape_factors().to(x.dtype), indices)  # (N, n, d, d)
        q = torch.einsum("nkij,nki->nkj", factors, offsets).square().sum(-1)  # |L^T (x - c)|^2
        if self.cfg.normalize and self.cfg.kernel == "gaussian":
            return indices, torch.softmax(-0.5 * q, dim=1)
        phi = kernel_response(q, self.cfg.kernel)
        if self.cfg.normalize:
            phi = phi / (phi.sum(dim=1, keepdim=True) + _NORMALISER_EPS)
        return indices, phi

    def rbf_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) adaptive-RBF features sum_k w_{k,j} sin(omega_j phi~_k(x) + b_j) of x (N, d)."""
        indices, phi = self.kernel_responses(x)
        frequencies, phases = self.frequencies(x.device).to(x.dtype), self.phases.to(x.dtype)
        waves = torch.sin(phi[:, :, None] * frequencies + phases)  # (N, n, D)
        return (waves * _gather(self.features.to(x.dtype), indices)).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) points in [-1, 1] -> (N, out_dim) features [grid(x), rbf(x)]."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise NfieldError(f"NeuRBF: expected points of shape (N, {self.in_dim}), got {tuple(x.shape)}")
        dtype = torch.promote_types(self.features.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(dtype)
            rbf = self.rbf_features(x)
            if self.grid is None:
                return rbf
            return torch.cat([self.grid(x).to(dtype), rbf], dim=1)

    def extra_repr(self) -> str:
        cfg = self.cfg
        return (
            f"in_dim={self.in_dim}, n_kernels={cfg.n_kernels}, kernel={cfg.kernel}, n_neighbours={cfg.n_neighbours}, "
            f"n_features={cfg.n_features}, train_kernels={cfg.train_kernels}, lookup_resolution={self.lookup_resolution}"
        )
