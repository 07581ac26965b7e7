"""CAM: an MLP whose hidden features are modulated by coordinate-indexed grids (coordinate-aware modulation).

After Lee, Rho, Nam, Ko and Park, "Coordinate-Aware Modulation for Neural Fields", ICLR 2024, and
the image model of their official code (maincold2/CAM, ``CAM_image.py``). Hidden layer l computes

    h_l = act( gamma_l(x) * norm(W_l h_{l-1} + b_l) + beta_l(x) ),      h_0 = features(x),

and the output is ``output_activation(W_out h_L + b_out)`` (not modulated). Here

- x: the raw coordinates, (N, d) in [-1, 1], d = 1, 2 or 3 (pair the network with the Identity
  encoding: a Field's network only sees encoded features, so CAM encodes x itself);
- features(x): random Fourier features [cos(2 pi B x), sin(2 pi B x)], B (n_features, d) ~ N(0, sigma^2),
  exactly `nfield.encodings.GaussianFourier` (the paper's FFN for images: 256 frequencies, sigma = 10 on
  [0, 1] coordinates, which is sigma = 5 on ours); ``n_features = 0`` feeds x itself;
- norm: ``"layer"`` normalises each point's n_neurons features to zero mean and unit (biased) variance,
  eps = 1e-5, no affine (what the official image code's ``F.instance_norm`` on (1, N, C) features does);
  ``"none"`` skips it (the official NeRF code);
- gamma_l, beta_l: one learnable grid per hidden layer, R vertices per axis (R = modulation_resolution,
  32 in the official image code) at x_i = -1 + 2 v_i / (R - 1), i.e. the domain's corners are vertices
  (``grid_sample`` with ``align_corners=True``); values are multilinearly interpolated, with x clamped to
  [-1, 1] (border padding). Each vertex holds one gamma and one beta shared by all channels, as in the
  official code (``modulation_per_channel`` gives each of the n_neurons channels its own). At
  initialisation gamma = 1 and beta = 0, so the network starts as the same MLP with normalisation.

Learning rate: the official code trains the grids with 10x the network's learning rate. nfield's trainer
uses one rate, so the grids are stored as gamma = 1 + s * scale, beta = s * shift with
s = modulation_lr_scale (10) and `scale`, `shift` the parameters (zero at first): under Adam, which is
invariant to the gradient's scale, this is the same as stepping gamma and beta with s times the learning
rate (up to Adam's eps).

Storage: `scale` and `shift` are (n_hidden_layers, R^d, C) parameters, C = 1 or n_neurons; vertex
(v_0, ..., v_{d-1}) is row v_0 + v_1 R + v_2 R^2 (first axis fastest). The official NeRF code factorises
3-D grids as a product of three 512^2 planes; here every dimension uses a dense grid (32^3 vertices in 3-D).

Construction draws B and then the Linear layers from torch's default RNG in the same order as
``Field(GaussianFourier, MLP)``, so under one seed a CamMLP with ``normalization="none"`` starts exactly
as that unmodulated network.

Example::

    >>> import torch
    >>> net = CamMLP(2, 3, CamConfig(n_neurons=64, n_hidden_layers=2, n_features=32))
    >>> net(torch.rand(10, 2) * 2 - 1).shape
    torch.Size([10, 3])
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nfield.encodings.fourier import GaussianFourier, GaussianFourierConfig
from nfield.errors import NfieldError
from nfield.networks.mlp import activation_module, check_int, check_positive, validate_layer_sizes
from nfield.networks.registry import NETWORKS

CAM_NORMALIZATIONS = ("layer", "none")
_MAX_GRID_VALUES = 2**28  # 1 GiB of float32 per table: a larger one is a configuration mistake


@dataclass(frozen=True)
class CamConfig:
    n_neurons: int = 256  # hidden width (the paper's image model: 256)
    n_hidden_layers: int = 3  # modulated hidden layers (>= 1), each with its own grids; the paper's image model: 3
    activation: str = "relu"  # after every modulation; a name in ACTIVATIONS
    output_activation: str = "none"  # after the output Linear (the paper's image code uses sigmoid)
    n_features: int = 256  # random Fourier frequencies (2 * n_features inputs); 0 feeds the raw coordinates
    sigma: float = 5.0  # std of the frequencies, cycles per unit of [-1, 1] coordinates (the paper's sigma = 10 on [0, 1])
    modulation_resolution: int = 32  # R: grid vertices per axis (the paper's image code: 32 x 32)
    modulation_per_channel: bool = False  # one gamma/beta per channel instead of one per vertex shared by all channels
    normalization: str = "layer"  # "layer" (per-point, no affine, before the modulation) or "none"
    modulation_lr_scale: float = 10.0  # gamma = 1 + s * scale, beta = s * shift: the grids train s x faster under Adam

    def __post_init__(self) -> None:
        validate_layer_sizes("CamConfig", self.n_neurons, self.n_hidden_layers, min_hidden_layers=1)
        activation_module(self.activation)
        activation_module(self.output_activation)
        check_int("CamConfig", "n_features", self.n_features, 0)
        check_positive("CamConfig", "sigma", self.sigma)
        check_int("CamConfig", "modulation_resolution", self.modulation_resolution, 2)
        if not isinstance(self.modulation_per_channel, bool):
            raise NfieldError(f"CamConfig.modulation_per_channel must be true or false, got {self.modulation_per_channel!r}")
        if self.normalization not in CAM_NORMALIZATIONS:
            known = ", ".join(CAM_NORMALIZATIONS)
            raise NfieldError(f"CamConfig.normalization must be one of {known}, got {self.normalization!r}")
        check_positive("CamConfig", "modulation_lr_scale", self.modulation_lr_scale)


def grid_corners(x: torch.Tensor, resolution: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The 2^d vertices around each point of a grid with `resolution` vertices per axis spanning [-1, 1]^d.

    Args:
        x: (N, d) points; clamped to [-1, 1].
        resolution: R >= 2 vertices per axis, vertex v at -1 + 2 v / (R - 1).

    Returns:
        [(rows (N,) int64, weights (N,))] per corner: rows v_0 + v_1 R + ..., multilinear weights that
        sum to 1 and are differentiable w.r.t. x (inside the box).
    """
    u = (x.clamp(-1.0, 1.0) + 1.0) * (0.5 * (resolution - 1))
    cell = u.detach().floor().clamp(0, resolution - 2)
    frac = u - cell
    cell = cell.long()
    corners = []
    for bits in itertools.product((0, 1), repeat=x.shape[1]):
        weight = torch.ones_like(frac[:, 0])
        rows = torch.zeros_like(cell[:, 0])
        for axis, bit in enumerate(bits):
            weight = weight * (frac[:, axis] if bit else 1.0 - frac[:, axis])
            rows = rows + (cell[:, axis] + bit) * resolution**axis
        corners.append((rows, weight))
    return corners


@NETWORKS.register("CamMLP", CamConfig)
class CamMLP(nn.Module):
    """ReLU MLP on random Fourier features whose hidden features are scaled and shifted by grids indexed by x.

    h_l = act(gamma_l(x) * norm(W_l h_{l-1} + b_l) + beta_l(x)); see the module docstring for every term.

    Input (N, in_dim) raw coordinates in [-1, 1], in_dim = 1, 2 or 3 (use it with the Identity encoding);
    output (N, out_dim). Attributes: `encoding` (`GaussianFourier`, or None with n_features = 0),
    `linears` (the hidden ``nn.Linear`` layers), `output`, and the grid parameters `scale` and `shift`,
    (n_hidden_layers, R^in_dim, C) with C = 1 or n_neurons.
    """

    def __init__(self, in_dim: int, out_dim: int, cfg: CamConfig = CamConfig()):
        super().__init__()
        if in_dim not in (1, 2, 3):
            raise NfieldError(
                f"CamMLP reads raw coordinates to index its grids (use the Identity encoding): in_dim must be 1, 2 or 3, "
                f"got {in_dim}"
            )
        cells = cfg.n_hidden_layers * cfg.modulation_resolution**in_dim * (cfg.n_neurons if cfg.modulation_per_channel else 1)
        if cells > _MAX_GRID_VALUES:
            raise NfieldError(
                f"CamMLP: each modulation table would hold {cells:,} values (limit 2^28); lower modulation_resolution"
                + (" or set modulation_per_channel false" if cfg.modulation_per_channel else "")
            )
        self.cfg = cfg
        self.in_dim, self.out_dim = in_dim, out_dim
        if cfg.n_features > 0:
            self.encoding: GaussianFourier | None = GaussianFourier(in_dim, GaussianFourierConfig(cfg.n_features, cfg.sigma))
            width = self.encoding.out_dim
        else:
            self.encoding, width = None, in_dim
        widths = [width] + [cfg.n_neurons] * cfg.n_hidden_layers
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(cfg.n_neurons, out_dim)
        self.activation = activation_module(cfg.activation)
        self.output_activation = activation_module(cfg.output_activation)
        channels = cfg.n_neurons if cfg.modulation_per_channel else 1
        rows = cfg.modulation_resolution**in_dim
        self.scale = nn.Parameter(torch.zeros(cfg.n_hidden_layers, rows, channels))
        self.shift = nn.Parameter(torch.zeros(cfg.n_hidden_layers, rows, channels))

    def grids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) at the vertices: (n_hidden_layers, R^in_dim, C) each, gamma = 1 + s * scale, beta = s * shift."""
        s = self.cfg.modulation_lr_scale
        return 1.0 + s * self.scale, s * self.shift

    def modulation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma(x) and beta(x) of every hidden layer, (n_hidden_layers, N, C) each, for points x (N, in_dim).

        Interpolates the parameters and then maps them, gamma = 1 + s * scale(x), beta = s * shift(x): the same
        as interpolating `grids` (the weights sum to 1), and exactly gamma = 1, beta = 0 while the tables are zero.
        """
        dtype = torch.promote_types(self.scale.dtype, torch.float32)
        scale, shift = self.scale.to(dtype), self.shift.to(dtype)
        total_scale = total_shift = torch.zeros((), dtype=dtype, device=x.device)
        for rows, weight in grid_corners(x.to(dtype), self.cfg.modulation_resolution):
            w = weight[None, :, None]
            total_scale = total_scale + w * scale.index_select(1, rows)
            total_shift = total_shift + w * shift.index_select(1, rows)
        s = self.cfg.modulation_lr_scale
        return 1.0 + s * total_scale, s * total_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise NfieldError(f"CamMLP: expected coordinates of shape (N, {self.in_dim}), got {tuple(x.shape)}")
        h = x if self.encoding is None else self.encoding(x)
        gamma, beta = self.modulation(x)
        for layer, (g, b) in enumerate(zip(gamma, beta)):
            h = self.linears[layer](h)
            if self.cfg.normalization == "layer":
                h = F.layer_norm(h, (h.shape[-1],), eps=1e-5)
            h = self.activation(g * h + b)
        return self.output_activation(self.output(h))

    def extra_repr(self) -> str:
        cfg = self.cfg
        grid = "x".join([str(cfg.modulation_resolution)] * self.in_dim)
        channels = cfg.n_neurons if cfg.modulation_per_channel else 1
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, grids={grid}x{channels}, normalization={cfg.normalization}"
