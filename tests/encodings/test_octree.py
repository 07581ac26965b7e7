"""The sparse octree and its features against Python-set occupancy, per-point trilinear loops and grid_sample."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.func import functional_call

from nfield.encodings.octree import OctreeFeatures, OctreeFeaturesConfig, SparseOctree
from nfield.errors import NfieldError

SPARSE = OctreeFeaturesConfig(base_lod=1, n_lods=4, feature_dim=3, dilation=1)  # 2, 4, 8, 16 cells per axis


def sphere_points(n, radius=0.6, seed=0):
    """(n, 3) float64 points on a sphere about the origin."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return radius * points / points.norm(dim=1, keepdim=True)


def random_points(n, seed=1, low=-1.0, high=1.0):
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(n, 3, generator=generator, dtype=torch.float64)


def reference_cell(point, r):
    """Integer cell (i, j, k) of a point at r cells per axis, from the documented formula, in float64."""
    u = np.clip((np.asarray(point, dtype=np.float64) + 1) / 2, 0, 1)
    return tuple(int(min(max(np.floor(u[a] * r), 0), r - 1)) for a in range(3))


def reference_occupancy(points, cfg):
    """Each level's occupied cells as a set of (i, j, k): point cells dilated at every level, plus parents."""
    levels = [None] * cfg.n_lods
    for level in reversed(range(cfg.n_lods)):
        r = 2 ** (cfg.base_lod + level)
        cells = set()
        for point in points:
            i, j, k = reference_cell(point, r)
            for di, dj, dk in itertools.product(range(-cfg.dilation, cfg.dilation + 1), repeat=3):
                if 0 <= i + di < r and 0 <= j + dj < r and 0 <= k + dk < r:
                    cells.add((i + di, j + dj, k + dk))
        if level + 1 < cfg.n_lods:
            cells |= {(i // 2, j // 2, k // 2) for i, j, k in levels[level + 1]}
        levels[level] = cells
    return levels


def key(cell, size):
    i, j, k = cell
    return (i * size + j) * size + k


def randomise(encoding, seed=2):
    """O(1) features so that comparisons mean something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for table in encoding.features:
            table.copy_(torch.randn(table.shape, generator=generator, dtype=table.dtype))
    return encoding


def build(cfg=SPARSE, points=None, dtype=torch.float64):
    torch.manual_seed(0)
    points = sphere_points(300) if points is None else points
    return randomise(OctreeFeatures(cfg, SparseOctree.from_points(points, cfg)).to(dtype))


def single_level(encoding, x, level):
    """Level `level`'s contribution alone: the full output with every other level's features zeroed."""
    tables = {f"features.{i}": t if i == level else torch.zeros_like(t) for i, t in enumerate(encoding.features)}
    return functional_call(encoding, tables, (x,))


def reference_level(encoding, x, level):
    """A per-point loop: trilinear blend of the level's corner features, looked up in a dict; zero if unoccupied."""
    octree = encoding.octree
    r = octree.resolution(level)
    cells = set(octree.cell_keys(level).tolist())
    rows = {k: row for row, k in enumerate(octree.corner_keys(level).tolist())}
    table = encoding.features[level].detach().double().numpy()
    out = np.zeros((len(x), table.shape[1]))
    for n, point in enumerate(x.double().numpy()):
        cell = reference_cell(point, r)
        if key(cell, r) not in cells:
            continue
        frac = np.clip((point + 1) / 2, 0, 1) * r - np.array(cell)
        for bits in itertools.product((0, 1), repeat=3):
            weight = np.prod([frac[a] if bits[a] else 1 - frac[a] for a in range(3)])
            out[n] += weight * table[rows[key(tuple(c + b for c, b in zip(cell, bits)), r + 1)]]
    return out


@pytest.mark.parametrize("dilation", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fully_occupied_matches_dense_grid_sample(dilation, dtype):
    cfg = OctreeFeaturesConfig(base_lod=1, n_lods=3, feature_dim=4, dilation=dilation)
    r_finest = 8
    centres = (torch.arange(r_finest, dtype=torch.float64) + 0.5) / r_finest * 2 - 1
    lattice = torch.cartesian_prod(centres, centres, centres)  # one point in every finest cell
    encoding = build(cfg, lattice, dtype)
    x = torch.cat([random_points(200), torch.tensor([[1.0, -1.0, 1.0], [1.3, 0.2, -1.7], [0.0, 0.0, 0.0]])]).to(dtype)
    expected_total = 0
    for level in range(cfg.n_lods):
        r = encoding.octree.resolution(level)
        assert encoding.octree.n_cells(level) == r**3 and encoding.octree.n_corners(level) == (r + 1) ** 3
        dense = torch.zeros((r + 1) ** 3, cfg.feature_dim, dtype=dtype)
        dense[encoding.octree.corner_keys(level)] = encoding.features[level].detach()
        volume = dense.view(r + 1, r + 1, r + 1, -1).permute(3, 2, 1, 0)[None]  # (1, F, D=z, H=y, W=x)
        expected = F.grid_sample(volume, x.view(1, -1, 1, 1, 3), mode="bilinear", padding_mode="border", align_corners=True).view(
            cfg.feature_dim, -1
        )
        torch.testing.assert_close(single_level(encoding, x, level), expected.T, rtol=0, atol=1e-5)
        expected_total = expected_total + expected.T
    out = encoding(x)
    assert out.dtype == dtype and out.shape == (len(x), cfg.feature_dim) and encoding.out_dim == cfg.feature_dim
    torch.testing.assert_close(out, expected_total, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dilation", [0, 1, 2])
def test_occupancy_matches_python_sets(dilation):
    cfg = OctreeFeaturesConfig(base_lod=1, n_lods=4, feature_dim=3, dilation=dilation)
    points = torch.cat([sphere_points(300), torch.tensor([[1.0, 1.0, 1.0], [-1.5, 0.3, 2.0]], dtype=torch.float64)])
    octree = SparseOctree.from_points(points, cfg)
    expected = reference_occupancy(points.numpy(), cfg)
    x = random_points(500)
    for level in range(cfg.n_lods):
        r = octree.resolution(level)
        assert r == 2 ** (1 + level)
        cells = octree.cell_keys(level)
        assert cells.dtype == torch.int64
        assert cells.tolist() == sorted(key(c, r) for c in expected[level])
        corners = {
            tuple(c + b for c, b in zip(cell, bits)) for cell in expected[level] for bits in itertools.product((0, 1), repeat=3)
        }
        assert octree.corner_keys(level).tolist() == sorted(key(c, r + 1) for c in corners)
        if level:  # nested: every occupied cell's parent is occupied
            assert {(i // 2, j // 2, k // 2) for i, j, k in expected[level]} <= expected[level - 1]
            parents = {(c // (r * r) // 2, c // r % r // 2, c % r // 2) for c in cells.tolist()}
            assert {key(p, r // 2) for p in parents} <= set(octree.cell_keys(level - 1).tolist())
        occupied = [reference_cell(p, r) in expected[level] for p in x.numpy()]
        assert octree.cell_occupied(x, level).tolist() == occupied
    assert 0 < len(expected[-1]) < 16**3  # the finest level is genuinely sparse


def test_sparse_levels_match_per_point_reference_and_vanish_in_unoccupied_cells():
    encoding = build()
    x = torch.cat([random_points(400), sphere_points(100, radius=0.62, seed=5)])
    for level in range(SPARSE.n_lods):
        out = single_level(encoding, x, level)
        np.testing.assert_allclose(out.detach().numpy(), reference_level(encoding, x, level), rtol=0, atol=1e-12)
        occupied = encoding.octree.cell_occupied(x, level)
        assert (out[~occupied] == 0).all()
        assert (out[occupied].abs().sum(dim=1) > 0).all()
    assert 0 < occupied.sum() < len(x)  # the finest level has both kinds of cells


def test_cell_corner_rows_name_each_cells_corners():
    octree = build().octree
    for level in range(octree.n_lods):
        r = octree.resolution(level)
        corners = octree.corner_keys(level)
        rows = octree.cell_corner_rows(level)
        assert rows.shape == (8, octree.n_cells(level))
        for index, bits in enumerate(itertools.product((0, 1), repeat=3)):
            for cell_key, row in zip(octree.cell_keys(level).tolist()[:50], rows[index].tolist()[:50]):
                cell = (cell_key // (r * r), cell_key // r % r, cell_key % r)
                assert corners[row] == key(tuple(c + b for c, b in zip(cell, bits)), r + 1)


def test_gradcheck_wrt_x_and_features():
    cfg = OctreeFeaturesConfig(base_lod=1, n_lods=2, feature_dim=2, dilation=1)
    encoding = build(cfg)
    x = sphere_points(6, radius=0.55, seed=3).requires_grad_()
    tables = [t.detach().clone().requires_grad_() for t in encoding.features]

    def f(x, *tables):
        return functional_call(encoding, {f"features.{i}": t for i, t in enumerate(tables)}, (x,))

    assert (f(x, *tables) != 0).all()
    assert torch.autograd.gradcheck(f, (x, *tables))
    assert torch.autograd.gradgradcheck(f, (x, *tables))


def test_eikonal_double_backward_reaches_every_level():
    encoding = build(dtype=torch.float32)
    x = sphere_points(200, radius=0.6, seed=4).float().requires_grad_()
    (grad,) = torch.autograd.grad(encoding(x)[:, 0].sum(), x, create_graph=True)
    (grad.norm(dim=-1) - 1).pow(2).mean().backward()
    for table in encoding.features:
        assert table.grad is not None and torch.isfinite(table.grad).all() and table.grad.abs().sum() > 0


def test_lod_sums_levels_up_to_it():
    encoding = build()
    x = random_points(300)
    levels = [single_level(encoding, x, level) for level in range(SPARSE.n_lods)]
    for lod in range(SPARSE.n_lods):
        torch.testing.assert_close(encoding(x, lod=lod), sum(levels[: lod + 1]), rtol=0, atol=1e-12)
    assert torch.equal(encoding(x), encoding(x, lod=SPARSE.n_lods - 1))
    for bad in (-1, SPARSE.n_lods, 1.0, True):
        with pytest.raises(NfieldError, match=r"lod must be an integer in \[0, 3\]"):
            encoding(x, lod=bad)


def test_float32_under_autocast():
    encoding = build(dtype=torch.float32)
    x = random_points(100).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = encoding(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, encoding(x.bfloat16().float()), rtol=0, atol=0)


def test_parameters_and_initialisation():
    torch.manual_seed(0)
    cfg = OctreeFeaturesConfig(base_lod=2, n_lods=3, feature_dim=16, feature_std=0.05)
    encoding = OctreeFeatures(cfg, SparseOctree.from_points(sphere_points(500), cfg))
    assert encoding.in_dim == 3 and encoding.out_dim == 16
    counts = encoding.level_parameter_counts()
    assert counts == [encoding.octree.n_corners(level) * 16 for level in range(3)]
    assert sum(counts) == sum(p.numel() for p in encoding.parameters())
    values = torch.cat([t.detach().flatten() for t in encoding.features])
    assert abs(values.mean().item()) < 0.005 and abs(values.std().item() - 0.05) < 0.005


def test_state_dict_round_trip_into_an_empty_module(tmp_path):
    source = build(dtype=torch.float32)
    x = random_points(300).float()
    expected = source(x)
    state = source.state_dict()
    assert not any(name.startswith("octree.cell_corners") for name in state)  # derived, not saved
    save_file(state, str(tmp_path / "model.safetensors"))
    for incoming in (state, load_file(str(tmp_path / "model.safetensors"))):
        target = OctreeFeatures(SPARSE)
        target.load_state_dict(incoming)
        assert torch.equal(target(x), expected)
        for level in range(SPARSE.n_lods):
            assert torch.equal(target.octree.cell_corner_rows(level), source.octree.cell_corner_rows(level))
        assert all(isinstance(t, torch.nn.Parameter) and t.requires_grad for t in target.features)
    # Loading a different octree into a built module replaces it too.
    other = build(points=sphere_points(50, radius=0.3, seed=9), dtype=torch.float32)
    other.load_state_dict(state)
    assert torch.equal(other(x), expected)


def test_strict_loading_still_reports_missing_and_unexpected_keys():
    state = build(dtype=torch.float32).state_dict()
    missing = {k: v for k, v in state.items() if k != "features.2"}
    with pytest.raises(RuntimeError, match="Missing key.*features.2"):
        OctreeFeatures(SPARSE).load_state_dict(missing)
    with pytest.raises(RuntimeError, match="Missing key.*octree.cells_1"):
        OctreeFeatures(SPARSE).load_state_dict({k: v for k, v in state.items() if k != "octree.cells_1"})
    with pytest.raises(RuntimeError, match="Unexpected key.*features.9"):
        OctreeFeatures(SPARSE).load_state_dict({**state, "features.9": torch.zeros(2, 3)})
    with pytest.raises(RuntimeError, match="corners_3 are not the corners"):
        OctreeFeatures(SPARSE).load_state_dict({**state, "octree.corners_3": state["octree.corners_3"][1:]})


def test_empty_cell_bounds():
    """Each empty point gets the wider of two empty boxes: its coarsest unoccupied octree cell, or
    the cube of finest cells within d - 1 of its cell (d its Chebyshev distance to an occupied cell);
    no occupied finest cell overlaps either. Occupied points get their finest cell."""
    cfg = OctreeFeaturesConfig(base_lod=1, n_lods=5, dilation=0)
    centre = torch.tensor([0.3, 0.2, -0.1], dtype=torch.float64)
    octree = SparseOctree.from_points(sphere_points(400, radius=0.35) + centre, cfg)
    finest = octree.n_lods - 1
    r = octree.resolution(finest)
    near_surface = sphere_points(500, radius=0.35, seed=7) + centre
    edges = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 0.5], [1.2, 0.0, 0.0]])  # the last one outside the box
    x = torch.cat([random_points(1500, seed=6), near_surface, edges])
    lo, hi, empty = octree.empty_cell_bounds(x)
    assert lo.shape == hi.shape == x.shape and empty.shape == (len(x),)
    assert ((lo <= x) & (x <= hi)).all(dim=1)[: len(x) - 1].all()
    inside = (x.abs() <= 1).all(dim=1)
    assert torch.equal(empty, inside & ~octree.cell_occupied(x, finest))
    assert 100 < empty.sum() < len(x) - 100
    cells_lo, cells_hi = ((lo + 1) / 2 * r).round().long(), ((hi + 1) / 2 * r).round().long()  # in finest cells
    torch.testing.assert_close((cells_lo.double() / r) * 2 - 1, lo, rtol=0, atol=1e-12)  # on the finest lattice
    assert ((cells_hi - cells_lo)[~empty & inside] == 1).all()  # occupied points: their finest cell
    occupied = torch.zeros(r, r, r, dtype=torch.bool)
    coords = octree.cell_keys(finest)
    occupied.view(-1)[coords] = True
    occupied_cells = torch.nonzero(occupied)
    kinds = set()
    for n in torch.nonzero(empty).squeeze(1)[::5].tolist():
        a, b = cells_lo[n], cells_hi[n]
        assert not occupied[a[0] : b[0], a[1] : b[1], a[2] : b[2]].any()  # the box is empty
        cell = ((x[n] + 1) / 2 * r).floor().long().clamp(0, r - 1)
        d = int((occupied_cells - cell).abs().amax(dim=1).min())  # Chebyshev distance to the nearest occupied cell
        cube = ((cell + d).clamp(max=r) - (cell - d + 1).clamp(min=0)).prod()
        level = next(lv for lv in range(finest + 1) if not octree.cell_occupied(x[n : n + 1], lv))
        side = 2 ** (finest - level)
        assert (b - a).prod() >= max(int(cube), side**3)  # the wider of the two
        assert (b - a).prod() in (int(cube), side**3)
        kinds.add("cube" if (b - a).prod() == cube and cube != side**3 else "octree cell")
    assert kinds == {"cube", "octree cell"}
    assert not empty[-1]  # outside the box


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"base_lod": -1}, "base_lod must be an integer >= 0"),
        ({"n_lods": 0}, "n_lods must be an integer >= 1"),
        ({"n_lods": 2.0}, "n_lods must be an integer >= 1"),
        ({"feature_dim": 0}, "feature_dim must be an integer >= 1"),
        ({"dilation": -1}, "dilation must be an integer >= 0"),
        ({"dilation": True}, "dilation must be an integer >= 0"),
        ({"feature_std": -0.1}, "feature_std must be a finite number >= 0"),
        ({"feature_std": float("nan")}, "feature_std must be a finite number >= 0"),
        ({"base_lod": 8, "n_lods": 6}, r"2\^13 cells per axis \(at most 2\^12\)"),
    ],
)
def test_invalid_configs_raise(overrides, message):
    with pytest.raises(NfieldError, match=message):
        OctreeFeaturesConfig(**overrides)


def test_finest_supported_level_is_accepted():
    cfg = OctreeFeaturesConfig(base_lod=10, n_lods=3, feature_dim=1, dilation=0)
    octree = SparseOctree.from_points(torch.tensor([[0.1, -0.2, 0.3]]), cfg)
    assert octree.resolution(2) == 4096 and [octree.n_cells(level) for level in range(3)] == [1, 1, 1]


def test_invalid_inputs_raise():
    cfg = SPARSE
    bad_points = [
        (torch.zeros(0, 3), "no points"),
        (torch.tensor([[0.0, float("nan"), 0.0]]), "NaN or infinite"),
        (torch.tensor([[0.0, 0.0, float("inf")]]), "NaN or infinite"),
        (torch.zeros(4, 2), r"\(N, 3\) tensor, got shape \(4, 2\)"),
        ([[0.0, 0.0, 0.0]], r"\(N, 3\) tensor, got list"),
    ]
    for points, message in bad_points:
        with pytest.raises(NfieldError, match=message):
            SparseOctree.from_points(points, cfg)
    octree = SparseOctree.from_points(sphere_points(50), cfg)
    with pytest.raises(NfieldError, match="the octree has base_lod=1, n_lods=4 but the config asks for base_lod=1, n_lods=3"):
        OctreeFeatures(OctreeFeaturesConfig(base_lod=1, n_lods=3), octree)
    with pytest.raises(NfieldError, match="the octree is empty"):
        OctreeFeatures(cfg)(torch.zeros(2, 3))
    with pytest.raises(NfieldError, match=r"level must be an integer in \[0, 3\]"):
        octree.cell_occupied(torch.zeros(2, 3), 4)
    cells = [octree.cell_keys(level) for level in range(cfg.n_lods)]
    with pytest.raises(NfieldError, match="sorted, unique"):
        SparseOctree(cfg, [*cells[:3], cells[3].flip(0)])
    with pytest.raises(NfieldError, match="parent at level 2 is unoccupied"):
        SparseOctree(cfg, [*cells[:2], cells[2][:1], cells[3]])
    with pytest.raises(NfieldError, match="cell keys for 4 levels, got 3"):
        SparseOctree(cfg, cells[:3])
    with pytest.raises(NfieldError, match="some levels have no occupied cells"):
        SparseOctree(cfg, [*cells[:3], cells[3][:0]])
