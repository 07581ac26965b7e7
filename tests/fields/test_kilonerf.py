import pytest
import torch

from nfield.encodings.frequency import frequency_features
from nfield.errors import NfieldError
from nfield.fields.kilonerf import KiloNeRFConfig, KiloNeRFField, grid_resolution
from nfield.fields.radiance import trunc_exp
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig

SMALL = KiloNeRFConfig(longest_axis_cells=4, position_frequencies=2, direction_frequencies=1, n_neurons=8, feature_dim=6)
BOX = torch.tensor([[-1.0, -0.5, -0.25], [1.0, 0.5, 0.25]])


def _reference(field: KiloNeRFField, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point through its own cell's MLP, one cell at a time, with plain matrix products."""
    rgb, sigma = torch.zeros(len(x), 3, dtype=x.dtype), torch.zeros(len(x), dtype=x.dtype)
    cells = field.cell_index(x)
    per_cell = {layer: (layer.weight.unbind(), layer.bias.unbind()) for layer in [*field.position_layers, *field.color_layers]}
    for cell in cells.unique().tolist():
        if cell < 0:
            continue
        mask = cells == cell
        local = field.local_coordinates(x[mask], cells[mask])
        h = torch.cat([local, frequency_features(local, field.cfg.position_frequencies)], dim=-1)

        def linear(layer, h):
            weights, biases = per_cell[layer]
            return h @ weights[cell] + biases[cell]

        h = torch.relu(linear(field.position_layers[0], h))
        h = torch.relu(linear(field.position_layers[1], h))
        out = linear(field.position_layers[2], h)
        sigma[mask] = trunc_exp(out[:, 0])
        directions = torch.cat([d[mask], frequency_features(d[mask], field.cfg.direction_frequencies)], dim=-1)
        h = torch.relu(linear(field.color_layers[0], torch.cat([out[:, 1:], directions], dim=-1)))
        rgb[mask] = torch.sigmoid(linear(field.color_layers[1], h))
    return rgb, sigma


def test_resolution_follows_the_box_and_absurd_grids_are_refused():
    assert grid_resolution(16, BOX) == (16, 8, 4)
    assert KiloNeRFField(SMALL, BOX).resolution == (4, 2, 1)
    with pytest.raises(NfieldError, match="cells; at most"):
        grid_resolution(2000, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    with pytest.raises(NfieldError, match="positive integer"):
        KiloNeRFConfig(longest_axis_cells=0)


@pytest.mark.parametrize(("strategy", "tile"), [("tiled", 128), ("tiled", 3), ("padded", 1), ("segment", 1), ("gather", 1)])
def test_batched_evaluation_equals_the_per_cell_loop_in_values_and_gradients(strategy, tile):
    torch.manual_seed(0)
    field = KiloNeRFField(SMALL, BOX, strategy=strategy, tile=tile)
    x = torch.rand(300, 3) * 2.4 - 1.2  # some points outside the box
    d = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    rgb, sigma = field(x, d)
    grads = torch.autograd.grad((rgb.sum() + sigma.sum()), list(field.parameters()))
    ref_rgb, ref_sigma = _reference(field, x, d)
    ref_grads = torch.autograd.grad((ref_rgb.sum() + ref_sigma.sum()), list(field.parameters()))
    torch.testing.assert_close(rgb, ref_rgb)
    torch.testing.assert_close(sigma, ref_sigma)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(field.density(x), sigma)
    outside = field.cell_index(x) < 0
    assert outside.any() and (sigma[outside] == 0).all() and (rgb[outside] == 0).all()
    # cells without points get no gradient: they cost nothing
    used = torch.zeros(field.n_cells, dtype=torch.bool)
    used[field.cell_index(x)[~outside]] = True
    assert (grads[0][~used] == 0).all() and (grads[0][used].abs().sum() > 0)


def test_strategies_agree_on_an_uneven_distribution():
    """Most points in one cell, a few in many: tiles bound the padding, all strategies agree."""
    torch.manual_seed(2)
    x = torch.cat([torch.rand(400, 3) * 0.2 - 0.9, torch.rand(40, 3) * 2 - 1]) * torch.tensor([1.0, 0.5, 0.25])
    d = torch.nn.functional.normalize(torch.randn(len(x), 3), dim=-1)
    field = KiloNeRFField(SMALL, BOX)
    reference = _reference(field, x, d)
    for strategy in ("tiled", "padded", "segment", "gather"):
        field.strategy, field.tile = strategy, 16
        for got, want in zip(field(x, d), reference):
            torch.testing.assert_close(got, want)
    with pytest.raises(NfieldError, match="evaluation strategy"):
        KiloNeRFField(SMALL, BOX, strategy="loop")


def test_segment_strategy_keeps_each_grouped_mm_under_hoppers_group_limit(monkeypatch):
    """grouped_mm refuses 1024 or more groups on Hopper GPUs (simulated here): over a thousand
    occupied cells run in several calls, with the default and with small chunks, and give the
    per-cell loop's values and gradients."""
    from nfield.fields.kilonerf import strategies

    grouped_mm, groups_per_call = torch.nn.functional.grouped_mm, []

    def hopper_grouped_mm(a, b, offs):
        if len(offs) >= 1024:
            raise RuntimeError(f"grouped_mm: {len(offs)} groups, at most 1023 are supported")
        groups_per_call.append(len(offs))
        return grouped_mm(a, b, offs=offs)

    monkeypatch.setattr(torch.nn.functional, "grouped_mm", hopper_grouped_mm)
    torch.manual_seed(4)
    cfg = KiloNeRFConfig(longest_axis_cells=12, position_frequencies=1, direction_frequencies=1, n_neurons=8, feature_dim=4)
    field = KiloNeRFField(cfg, torch.tensor([[-1.0] * 3, [1.0] * 3]), strategy="segment")  # 12^3 cells
    x = torch.rand(4000, 3) * 2.2 - 1.1
    d = torch.nn.functional.normalize(torch.randn(len(x), 3), dim=-1)
    cells = field.cell_index(x)
    occupied = len(cells[cells >= 0].unique())
    assert occupied > 1000
    ref_rgb, ref_sigma = _reference(field, x, d)
    ref_grads = torch.autograd.grad(ref_rgb.sum() + ref_sigma.sum(), list(field.parameters()))
    for chunk in (strategies.GROUPED_MM_MAX_GROUPS, 300):
        monkeypatch.setattr(strategies, "GROUPED_MM_MAX_GROUPS", chunk)
        groups_per_call.clear()
        rgb, sigma = field(x, d)
        grads = torch.autograd.grad(rgb.sum() + sigma.sum(), list(field.parameters()))
        assert max(groups_per_call) <= chunk and sum(groups_per_call) == 5 * occupied  # 5 layers, every cell once
        torch.testing.assert_close(rgb, ref_rgb)
        torch.testing.assert_close(sigma, ref_sigma)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("grid_resolution", [16, 5, 2])
def test_occupied_cells_are_exactly_those_overlapping_occupied_grid_cells(grid_resolution):
    """Against brute force: a dense lattice in every KiloNeRF cell asks the grid; grids finer,
    unaligned with and coarser than the KiloNeRF cells."""
    from nfield.fields.kilonerf import cell_corners, occupied_bounds, occupied_cells

    field = KiloNeRFField(SMALL, BOX)
    grid = OccupancyGrid(OccupancyGridConfig(resolution=grid_resolution), BOX)
    generator = torch.Generator().manual_seed(grid_resolution)
    grid.occupied[0] = torch.rand(grid_resolution**3, generator=generator) < 0.05 + 1 / grid_resolution**3
    assert grid.occupied.any() and not grid.occupied.all()
    corners, size = cell_corners(field)
    fractions = (torch.arange(40) + 0.5) / 40
    lattice = torch.stack(torch.meshgrid(fractions, fractions, fractions, indexing="ij"), dim=-1).reshape(-1, 3)
    brute = torch.stack([grid.occupied_at(corner + lattice * size).any() for corner in corners])
    assert torch.equal(occupied_cells(field, grid), brute)
    # the occupied region's bounds: the extreme occupied grid cells, found by asking the grid at every cell centre
    cell = (BOX[1] - BOX[0]) / grid_resolution
    steps = (torch.arange(grid_resolution) + 0.5) / grid_resolution
    centres = BOX[0] + torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), dim=-1).reshape(-1, 3) * (BOX[1] - BOX[0])
    occupied_centres = centres[grid.occupied_at(centres)]
    lo, hi = occupied_bounds(grid)
    torch.testing.assert_close(lo, occupied_centres.amin(dim=0) - cell / 2)
    torch.testing.assert_close(hi, occupied_centres.amax(dim=0) + cell / 2)


def test_inference_in_bounded_chunks_equals_one_pass(monkeypatch):
    from nfield.fields.kilonerf import field as kilonerf_field

    torch.manual_seed(3)
    field = KiloNeRFField(SMALL, BOX)
    x = torch.rand(1000, 3) * 2.2 - 1.1
    d = torch.nn.functional.normalize(torch.randn(len(x), 3), dim=-1)
    with torch.no_grad():
        whole = field(x, d)
        monkeypatch.setattr(kilonerf_field, "INFERENCE_CHUNK", 64)
        chunked = field(x, d)
        density = field.density(x)
    for got, want in zip(chunked, whole):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(density, whole[1])


def test_cells_are_assigned_at_borders_and_outside_the_box():
    field = KiloNeRFField(SMALL, BOX)  # cells 0.5 wide in x, 0.5 in y, 0.5 in z
    points = torch.tensor(
        [
            [-1.0, -0.5, -0.25],  # the lower corner: cell (0, 0, 0)
            [-0.5, -0.5, -0.25],  # on the first x border: the upper cell (1, 0, 0)
            [1.0, 0.5, 0.25],  # the upper corner: the last cell (3, 1, 0)
            [0.99, 0.0, 0.0],  # cell (3, 1, 0)
            [1.01, 0.0, 0.0],  # outside
            [0.0, -0.51, 0.0],  # outside
        ]
    )
    assert field.cell_index(points).tolist() == [0, 2, 7, 7, -1, -1]
    local = field.local_coordinates(points[:4], field.cell_index(points[:4]))
    torch.testing.assert_close(local[0], torch.tensor([-1.0, -1.0, -1.0]))
    torch.testing.assert_close(local[2], torch.tensor([1.0, 1.0, 1.0]))


def test_parameters_live_in_stacked_tensors():
    field = KiloNeRFField(SMALL, BOX)
    shapes = [tuple(p.shape) for p in field.parameters()]
    assert all(shape[0] == field.n_cells for shape in shapes) and len(shapes) == 10


def test_export_round_trips_with_its_header_and_occupied_cells(tmp_path):
    import json

    from safetensors import safe_open

    from nfield.fields.kilonerf import load_kilonerf, occupied_cells, save_kilonerf

    torch.manual_seed(1)
    field = KiloNeRFField(SMALL, BOX)
    grid = OccupancyGrid(OccupancyGridConfig(resolution=16), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    grid.density_fn = lambda p: 10.0 * (p.norm(dim=-1) < 0.3)
    grid.update(0, 1)
    ball = occupied_cells(field, grid)  # the cells a ball of radius 0.3 touches
    assert 0 < int(ball.sum()) < field.n_cells
    assert bool(ball[field.cell_index(torch.zeros(1, 3))].all())
    save_kilonerf(tmp_path / "k.safetensors", field, ball)
    loaded, occupied = load_kilonerf(tmp_path / "k.safetensors")
    assert torch.equal(occupied, ball) and loaded.resolution == field.resolution
    x, d = torch.rand(50, 3) - 0.5, torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    for got, want in zip(loaded(x, d), field(x, d)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with safe_open(str(tmp_path / "k.safetensors"), framework="pt") as handle:
        header = json.loads(handle.metadata()["kilonerf"])
    assert header["resolution"] == [4, 2, 1] and header["aabb"] == BOX.tolist()
    assert header["layers"]["position_layers.0.weight"] == [8, 3 * (1 + 2 * 2), 8]
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(NfieldError, match="not a KiloNeRF export"):
        load_kilonerf(tmp_path / "bad.safetensors")


def test_exports_and_configs_before_0_3_say_hidden_for_n_neurons(tmp_path):
    """0.2.0 wrote the cells' width as "hidden" (config.json, the distill section, the export's header):
    it reads as `n_neurons`, and the weights keep their names."""
    import dataclasses
    import json

    from safetensors.torch import save_file

    from nfield.components import config_from_dict
    from nfield.fields.kilonerf import load_kilonerf, save_kilonerf

    old = {**dataclasses.asdict(SMALL), "hidden": SMALL.n_neurons}
    del old["n_neurons"]
    assert config_from_dict(KiloNeRFConfig, old) == SMALL
    torch.manual_seed(2)
    field = KiloNeRFField(SMALL, BOX)
    save_kilonerf(tmp_path / "new.safetensors", field)
    header = {"format": "nfield-kilonerf-1", "resolution": list(field.resolution), "aabb": BOX.tolist(), "config": old}
    tensors = {name: value.contiguous() for name, value in field.state_dict().items()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"kilonerf": json.dumps(header)})
    loaded, occupied = load_kilonerf(tmp_path / "old.safetensors")
    assert loaded.cfg == SMALL and occupied is None
    assert loaded.state_dict().keys() == load_kilonerf(tmp_path / "new.safetensors")[0].state_dict().keys()
    x, d = torch.rand(20, 3) - 0.5, torch.nn.functional.normalize(torch.randn(20, 3), dim=-1)
    for got, want in zip(loaded(x, d), field(x, d)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
