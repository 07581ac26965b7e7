"""Multiresolution grids against a float64 per-point brute force written from the documented formulas."""

import itertools
import math

import numpy as np
import pytest
import torch

from nfield.encodings import ENCODINGS, DenseGrid, DenseGridConfig, HashGrid, HashGridConfig
from nfield.errors import NfieldError

PRIMES = (1, 2654435761, 805459861)

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# (in_dim, config): dense and hashed levels, integer and fractional scales, a level exactly at T.
CONFIGS = {
    "2d": (2, HashGridConfig(n_levels=4, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0)),
    "2d-fractional": (
        2,
        HashGridConfig(n_levels=4, n_features_per_level=3, log2_hashmap_size=6, base_resolution=3, per_level_scale=1.5),
    ),
    "3d": (3, HashGridConfig(n_levels=3, log2_hashmap_size=7, base_resolution=2, per_level_scale=2.0)),
    "3d-large-coordinates": (
        3,
        HashGridConfig(n_levels=3, n_features_per_level=1, log2_hashmap_size=10, base_resolution=64, per_level_scale=4.0),
    ),
    "2d-dense": (2, DenseGridConfig(n_levels=3, base_resolution=4, per_level_scale=2.0)),
    "3d-dense": (3, DenseGridConfig(n_levels=2, base_resolution=3, per_level_scale=1.7)),
}


def reference_scale(level, cfg):
    """tiny-cuda-nn's scale: exp2f(level * log2(per_level_scale)) * base_resolution - 1.0f, in float32."""
    grown = np.exp2(np.float32(level) * np.float32(math.log2(cfg.per_level_scale)), dtype=np.float32)
    return float(grown * np.float32(cfg.base_resolution) - np.float32(1.0))


def reference_layout(dim, cfg):
    """[(scale, resolution, offset, size, hashed)] from tiny-cuda-nn's formulas."""
    hashmap = 2**cfg.log2_hashmap_size if isinstance(cfg, HashGridConfig) else None
    layout, offset = [], 0
    for level in range(cfg.n_levels):
        scale = reference_scale(level, cfg)
        resolution = math.ceil(scale) + 1
        padded = (resolution**dim + 7) // 8 * 8  # rows of a level are padded to a multiple of 8
        hashed = hashmap is not None and resolution**dim > hashmap
        size = hashmap if hashed else padded
        layout.append((scale, resolution, offset, size, hashed))
        offset += size
    return layout


def reference_corners(point, dim, cfg):
    """(level, table row, weight) of every corner of the point's cell at every level, in float64."""
    for level, (scale, resolution, offset, size, hashed) in enumerate(reference_layout(dim, cfg)):
        p = np.clip((point + 1) / 2, 0, 1) * scale + 0.5  # the half-cell offset
        cell = [math.floor(p[i]) for i in range(dim)]
        frac = [p[i] - cell[i] for i in range(dim)]
        for corner in itertools.product((0, 1), repeat=dim):
            vertex = [cell[i] + corner[i] for i in range(dim)]
            weight = math.prod(frac[i] if corner[i] else 1 - frac[i] for i in range(dim))
            if hashed:
                code = 0
                for i in range(dim):
                    code ^= (vertex[i] * PRIMES[i]) & 0xFFFFFFFF  # uint32 arithmetic, as in tiny-cuda-nn
                row = code % size
            else:
                row = sum(vertex[i] * resolution**i for i in range(dim)) % size  # wraps at the top
            yield level, offset + row, weight


def reference_encode(x, table, dim, cfg):
    """(N, L F) features: a per-point, per-level, per-corner loop."""
    f = cfg.n_features_per_level
    out = np.zeros((len(x), cfg.n_levels * f))
    for n, point in enumerate(x):
        for level, row, weight in reference_corners(point, dim, cfg):
            out[n, level * f : (level + 1) * f] += weight * table[row]
    return out


def reference_table_grad(x, grad_out, n_rows, dim, cfg):
    """(rows, F) gradient of sum(out * grad_out) w.r.t. the table: each corner weight times grad_out."""
    f = cfg.n_features_per_level
    grad = np.zeros((n_rows, f))
    for n, point in enumerate(x):
        for level, row, weight in reference_corners(point, dim, cfg):
            grad[row] += weight * grad_out[n, level * f : (level + 1) * f]
    return grad


def build(name, dtype=torch.float64):
    dim, cfg = CONFIGS[name]
    torch.manual_seed(0)
    grid = ENCODINGS.build(cfg, dim).to(dtype)
    with torch.no_grad():
        grid.params.normal_()  # O(1) values so that comparisons mean something
    return grid, dim, cfg


def sample_points(dim, scale0, n_random=40, seed=1):
    """Random points, points on level-0 cell boundaries and vertices, the box corners, points outside."""
    generator = torch.Generator().manual_seed(seed)
    random = torch.rand(n_random, dim, generator=generator, dtype=torch.float64) * 2 - 1
    ticks = torch.tensor([min(-1 + 2 * k / scale0, 1.0) for k in range(math.ceil(scale0) + 1)], dtype=torch.float64)
    on_faces = random[torch.arange(len(ticks)) % n_random].clone()
    on_faces[:, 0] = ticks  # one coordinate on a cell boundary
    on_vertices = torch.stack([ticks.roll(3 * axis) for axis in range(dim)], dim=1)
    corners = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=dim)), dtype=torch.float64)
    outside = torch.tensor([[1.05] + [-1.02] * (dim - 1), [-1.3] + [0.2] * (dim - 1)], dtype=torch.float64)
    return torch.cat([random, on_faces, on_vertices, corners, outside])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_both_paths_match_float64_brute_force(name):
    grid, dim, cfg = build(name)
    x = sample_points(dim, cfg.base_resolution)
    expected = reference_encode(x.numpy(), grid.params.detach().numpy(), dim, cfg)
    fused = grid(x)
    composed = grid(x.clone().requires_grad_())
    assert "GridInterpolation" in type(fused.grad_fn).__name__
    assert "GridInterpolation" not in type(composed.grad_fn).__name__
    assert fused.shape == (len(x), grid.out_dim) == (len(x), cfg.n_levels * cfg.n_features_per_level)
    np.testing.assert_allclose(fused.detach().numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(composed.detach().numpy(), expected, rtol=0, atol=1e-12)
    assert torch.equal(fused, composed)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_float32_matches_float64_brute_force(name):
    grid, dim, cfg = build(name, torch.float32)
    x = sample_points(dim, cfg.base_resolution).float()
    expected = reference_encode(x.double().numpy(), grid.params.detach().double().numpy(), dim, cfg)
    out = grid(x)
    assert out.dtype == torch.float32
    # float32 positions p = u * s carry an error ~ s * 2^-24 at the finest scale s.
    finest = grid.levels[-1].scale
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=0, atol=2e-6 + 2e-7 * finest)


def test_layout_matches_the_formulas():
    for name, (dim, cfg) in CONFIGS.items():
        grid = ENCODINGS.build(cfg, dim)
        layout = reference_layout(dim, cfg)
        assert [(lv.resolution, lv.offset, lv.size, lv.hashed) for lv in grid.levels] == [e[1:] for e in layout], name
        assert grid.resolutions == tuple(e[1] for e in layout)
        assert grid.hashed_levels == tuple(i for i, e in enumerate(layout) if e[4])
        rows = layout[-1][2] + layout[-1][3]
        assert grid.params.shape == (rows, cfg.n_features_per_level) and grid.n_params == rows * cfg.n_features_per_level
    # The mixes the tests rely on: dense below T, a level exactly at T stays dense, hashed above.
    assert ENCODINGS.build(CONFIGS["2d"][1], 2).hashed_levels == (3,)  # 16^2 == T stays dense
    assert ENCODINGS.build(CONFIGS["2d-fractional"][1], 2).hashed_levels == (3,)
    assert ENCODINGS.build(CONFIGS["3d"][1], 3).hashed_levels == (2,)


def test_empty_batch():
    grid = HashGrid(3, HashGridConfig(n_levels=2, log2_hashmap_size=6))
    x = torch.zeros(0, 3)
    assert grid(x).shape == grid(x.clone().requires_grad_()).shape == (0, 4)


def test_default_hash_grid_and_repr():
    torch.manual_seed(0)
    grid = HashGrid(3)
    # tiny-cuda-nn's geometry: base_resolution counts vertices, so scale 15 and 16 vertices at level 0
    assert grid.out_dim == 32 and grid.resolutions[0] == 16 and grid.resolutions[-1] == 16 * 2**15
    assert grid.hashed_levels == tuple(range(3, 16))  # 16^3, 32^3, 64^3 <= 2^19 < 128^3
    assert grid.params.abs().max() <= 1e-4 and grid.params.abs().max() > 0
    text = repr(grid)
    assert "backend=auto" in text and f"n_params={grid.n_params}" in text and "hashed_levels=[3," in text


@pytest.mark.parametrize("name", ["2d", "3d", "2d-dense"])
def test_dense_levels_store_vertices_first_axis_fastest(name):
    grid, dim, cfg = build(name)
    with torch.no_grad():
        grid.params[:, 0] = torch.arange(len(grid.params), dtype=torch.float64)
    for index, level in enumerate(grid.levels):
        if level.hashed:
            continue
        assert level.scale == level.resolution - 1  # integer scales
        # vertex k sits at p = u * scale + 0.5 = k; k = 1 .. r - 1 lie inside the box
        inner = torch.tensor(list(itertools.product(range(1, level.resolution), repeat=dim)), dtype=torch.float64)
        rows = grid(-1 + 2 * (inner - 0.5) / level.scale)[:, index * cfg.n_features_per_level]
        expected = level.offset + sum(inner[:, i] * level.resolution**i for i in range(dim))
        torch.testing.assert_close(rows, expected, rtol=0, atol=1e-9)
        assert len(expected.unique()) == len(expected)
        assert level.size % 8 == 0 and level.size - 8 < level.resolution**dim <= level.size


@pytest.mark.parametrize("name", ["2d", "3d"])
def test_gradcheck_composed_path_wrt_x_and_params(name):
    dim = CONFIGS[name][0]
    cfg = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=5, base_resolution=2, per_level_scale=2.0)
    torch.manual_seed(2)
    grid = HashGrid(dim, cfg).double()
    x = (torch.rand(5, dim, dtype=torch.float64) * 1.8 - 0.9).requires_grad_()
    params = torch.randn_like(grid.params).requires_grad_()

    def f(x, params):
        return torch.func.functional_call(grid, {"params": params}, (x,))

    assert torch.autograd.gradcheck(f, (x, params))
    assert torch.autograd.gradgradcheck(f, (x, params))


def test_gradcheck_custom_function_wrt_params():
    cfg = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=5, base_resolution=2, per_level_scale=2.0)
    torch.manual_seed(3)
    grid = HashGrid(3, cfg).double()
    x = torch.rand(6, 3, dtype=torch.float64) * 2 - 1
    params = torch.randn_like(grid.params).requires_grad_()

    def f(params):
        out = torch.func.functional_call(grid, {"params": params}, (x,))
        assert "GridInterpolation" in type(out.grad_fn).__name__
        return out

    assert torch.autograd.gradcheck(f, (params,))


@pytest.mark.parametrize("name", ["2d-fractional", "3d", "3d-dense"])
def test_param_gradients_of_both_paths_agree(name):
    grid, dim, cfg = build(name, torch.float32)
    x = sample_points(dim, cfg.base_resolution).float()
    grad_out = torch.randn(len(x), grid.out_dim, generator=torch.Generator().manual_seed(4))
    (fused,) = torch.autograd.grad(grid(x), grid.params, grad_out)
    (composed,) = torch.autograd.grad(grid(x.clone().requires_grad_()), grid.params, grad_out)
    np.testing.assert_allclose(fused.numpy(), composed.numpy(), atol=1e-6)
    expected = reference_table_grad(x.double().numpy(), grad_out.double().numpy(), len(grid.params), dim, cfg)
    np.testing.assert_allclose(fused.numpy(), expected, atol=1e-5)
    assert np.count_nonzero(expected) > 0


def test_second_derivatives_give_a_working_eikonal_loss():
    # Bilinear cells have a constant mixed derivative: d2f/du0du1 = v11 - v10 - v01 + v00.
    cfg = HashGridConfig(n_levels=1, n_features_per_level=1, log2_hashmap_size=10, base_resolution=4)
    torch.manual_seed(5)
    grid = HashGrid(2, cfg).double()
    with torch.no_grad():
        grid.params.normal_()
    x = torch.tensor([[0.1, -0.3], [-0.8, 0.6]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(grid(x).sum(), x, create_graph=True)
    (mixed,) = torch.autograd.grad(grad[:, 0].sum(), x, create_graph=True)
    table = grid.params.detach()[:, 0]
    scale, r = 3, 4  # base_resolution 4 vertices: scale 3
    for n, point in enumerate(x.detach()):
        c = [math.floor((point[i].item() + 1) / 2 * scale + 0.5) for i in range(2)]
        v = lambda a, b: table[(c[0] + a) + (c[1] + b) * r].item()  # noqa: E731
        expected = (v(1, 1) - v(1, 0) - v(0, 1) + v(0, 0)) * (scale / 2) ** 2
        assert abs(mixed[n, 1].item() - expected) < 1e-10
        assert abs(mixed[n, 0].item()) < 1e-12  # linear along each axis
    loss = ((grad.norm(dim=1) - 1) ** 2).sum()
    loss.backward()
    assert grid.params.grad is not None and grid.params.grad.abs().sum() > 0


def saved_bytes(fn):
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return out, sum(sizes), len(sizes)


def test_fused_path_saves_only_the_points():
    n, dim = 2**14, 3
    torch.manual_seed(6)
    grid = HashGrid(dim, HashGridConfig(n_levels=8, log2_hashmap_size=14, base_resolution=8, per_level_scale=1.5))
    x = torch.rand(n, dim) * 2 - 1
    out, fused_bytes, count = saved_bytes(lambda: grid(x))
    assert count == 1 and fused_bytes == n * dim * 4  # x itself: O(N d)
    out.sum().backward()
    assert grid.params.grad is not None
    _, composed_bytes, _ = saved_bytes(lambda: grid(x.clone().requires_grad_()))
    # The composed path keeps per-corner rows and weights for every level: 8 levels x 8 corners.
    assert composed_bytes > 50 * fused_bytes


def test_interpolation_stays_float32_under_autocast():
    grid, dim, cfg = build("3d-large-coordinates", torch.float32)
    x = sample_points(dim, cfg.base_resolution).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, composed = grid(x), grid(x.clone().requires_grad_())
    assert fused.dtype == composed.dtype == torch.float32
    assert torch.equal(fused, grid(x)) and torch.equal(composed, fused)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision_input = grid(x.bfloat16())
    assert torch.equal(low_precision_input, grid(x.bfloat16().float()))  # positions computed in float32


def test_invalid_configs_raise():
    with pytest.raises(NfieldError, match="2-D or 3-D"):
        HashGrid(1)
    with pytest.raises(NfieldError, match="2-D or 3-D"):
        DenseGrid(4, DenseGridConfig(n_levels=1))
    bad = [
        ({"n_levels": 0}, "n_levels"),
        ({"n_features_per_level": 0}, "n_features_per_level"),
        ({"base_resolution": 2.5}, "base_resolution"),
        ({"per_level_scale": 0.9}, "per_level_scale"),
        ({"log2_hashmap_size": 0}, "log2_hashmap_size"),
        ({"log2_hashmap_size": 31}, "log2_hashmap_size"),
    ]
    for overrides, key in bad:
        with pytest.raises(NfieldError, match=key):
            HashGrid(2, HashGridConfig(**overrides))
    with pytest.raises(NfieldError, match="use fewer or coarser levels, or HashGrid"):
        DenseGrid(
            3, DenseGridConfig(n_levels=16, per_level_scale=2.0)
        )  # tiny-cuda-nn's hash defaults: the finest dense level would not fit


def test_registry_accepts_instant_ngp_keys():
    data = {
        "otype": "HashGrid",
        "n_levels": 2,
        "n_features_per_level": 4,
        "log2_hashmap_size": 12,
        "base_resolution": 8,
        "per_level_scale": 1.5,
    }
    grid = ENCODINGS.build(ENCODINGS.from_dict(data), 3)
    assert isinstance(grid, HashGrid) and grid.out_dim == 8
    assert ENCODINGS.to_dict(grid.cfg) == {**data, "backend": "auto"}


@pytest.mark.gpu
@gpu
def test_million_points_forward_backward_on_gpu():
    torch.manual_seed(7)
    grid = HashGrid(3).cuda()
    x = torch.rand(2**20, 3, device="cuda") * 2 - 1
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    out = grid(x)
    out.square().sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - baseline
    assert out.shape == (2**20, 32) and torch.isfinite(grid.params.grad).all()
    # Output, its gradient, the table gradient and transient (N, F) gathers: well under 1 GiB,
    # where saving per-corner tensors for 16 levels x 8 corners would take several GiB.
    assert peak < 2**30
    cpu_grid = HashGrid(3)
    cpu_grid.load_state_dict({k: v.cpu() for k, v in grid.state_dict().items()})
    np.testing.assert_allclose(out[:4096].detach().cpu().numpy(), cpu_grid(x[:4096].cpu()).detach().numpy(), atol=1e-5)
