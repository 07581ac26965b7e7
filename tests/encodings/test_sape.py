"""Spatially-adaptive progressive encoding: interpolation, the error feedback loop, exact resume."""

import datetime
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nfield.distributed import set_data_parallel, shutdown
from nfield.encodings import (
    ENCODINGS,
    Frequency,
    FrequencyConfig,
    ProgressiveFrequency,
    ProgressiveFrequencyConfig,
    SpatiallyAdaptiveProgressive,
    SpatiallyAdaptiveProgressiveConfig,
)
from nfield.errors import NfieldError

Config = SpatiallyAdaptiveProgressiveConfig


def random_points(n: int, d: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=generator, dtype=torch.float64) * 2 - 1


def node_positions(resolution: int, d: int) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """Every node's coordinates (R^d, d) and multi-index, first axis slowest."""
    indices = list(np.ndindex(*(resolution,) * d))
    coords = torch.tensor([[-1 + 2 * i / (resolution - 1) for i in index] for index in indices], dtype=torch.float64)
    return coords, indices


@pytest.mark.parametrize("d", [2, 3])
def test_untrained_equals_frequency(d):
    x = random_points(20, d)
    enc = SpatiallyAdaptiveProgressive(d, Config(n_frequencies=4, grid_resolution=5))
    assert torch.all(enc.alpha == 4.0) and enc.alpha.shape == (5,) * d
    assert torch.equal(enc(x), Frequency(d, FrequencyConfig(n_frequencies=4))(x))


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("alpha", [0.0, 1.3, 2.5, 3.99])
def test_constant_progress_equals_progressive_frequency(d, alpha):
    x = random_points(25, d, seed=1)
    sape = SpatiallyAdaptiveProgressive(d, Config(n_frequencies=4, include_pi=False, grid_resolution=6))
    progressive = ProgressiveFrequency(d, ProgressiveFrequencyConfig(n_frequencies=4, include_pi=False))
    sape.alpha.fill_(alpha)
    progressive.alpha.fill_(alpha)
    np.testing.assert_allclose(sape(x).numpy(), progressive(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("d", [2, 3])
def test_interpolation_at_nodes_and_cell_centres(d):
    torch.manual_seed(2)
    r = 5
    enc = SpatiallyAdaptiveProgressive(d, Config(n_frequencies=6, grid_resolution=r))
    enc.alpha.copy_(torch.rand((r,) * d) * 6)
    coords, indices = node_positions(r, d)
    at_nodes = enc.alpha_at(coords)
    expected = torch.stack([enc.alpha[index] for index in indices])
    np.testing.assert_allclose(at_nodes.numpy(), expected.numpy(), atol=1e-6)
    # A cell centre reads the mean of its 2^d corners; checked for the cell at (1, 2, ...).
    lower = (1, 2, 0)[:d]
    centre = torch.tensor([[-1 + 2 * (i + 0.5) / (r - 1) for i in lower]], dtype=torch.float64)
    corners = [enc.alpha[tuple(i + b for i, b in zip(lower, bits))].item() for bits in np.ndindex(*(2,) * d)]
    assert abs(enc.alpha_at(centre).item() - sum(corners) / len(corners)) < 1e-5
    assert torch.equal(enc.progress_map, enc.alpha / 6)


def test_observe_error_accumulates_into_nearest_node():
    r = 5  # nodes every 0.5
    enc = SpatiallyAdaptiveProgressive(2, Config(grid_resolution=r))
    x = torch.tensor([[-1.0, -1.0], [-0.9, -0.85], [0.2, 0.3], [0.3, 0.45], [1.2, 0.74]])
    enc.observe_error(x, torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]))
    expected_sum = torch.zeros(r, r)
    expected_sum[0, 0] = 3.0  # (-1, -1) and (-0.9, -0.85) both round to node (0, 0)
    expected_sum[2, 3] = 4.0  # (0.2, 0.3) -> (0, 0.5)
    expected_sum[3, 3] = 8.0  # (0.3, 0.45) -> (0.5, 0.5)
    expected_sum[4, 3] = 16.0  # outside the box: clamped to the border, x1 = 0.74 -> 0.5
    assert torch.equal(enc.error_sum, expected_sum)
    assert torch.equal(enc.error_count, (expected_sum > 0).float() + (expected_sum == 3.0).float())


def simulate_node(errors_by_step, total, n_frequencies, start_fraction, end_fraction, decay, threshold):
    """Plain-python reference of one node's progress: alpha after each update(step)."""
    rate = n_frequencies / ((end_fraction - start_fraction) * total)
    start = start_fraction * total
    alpha, ema, last, pending, history = float(n_frequencies), None, -1, [], []
    for step, errors in enumerate(errors_by_step):
        if pending:
            mean = sum(pending) / len(pending)
            ema = mean if ema is None else decay * ema + (1 - decay) * mean
            pending = []
        if last < 0:
            alpha = 0.0
        elapsed = max(step - start, 0) - max(last - start, 0)
        if ema is None or ema > threshold:
            alpha = min(alpha + rate * elapsed, n_frequencies)
        last = step
        history.append(alpha)
        pending += errors
    return history


def test_feedback_loop_grows_where_error_is_high_and_freezes_elsewhere():
    r, steps, total = 9, 40, 100
    schedule = dict(n_frequencies=4, start_fraction=0.05, end_fraction=0.5, decay=0.5, threshold=1e-3)
    cfg = Config(n_frequencies=4, grid_resolution=r, error_threshold=1e-3, error_decay=0.5, start_fraction=0.05, end_fraction=0.5)
    enc = SpatiallyAdaptiveProgressive(2, cfg)
    coords, indices = node_positions(r, 2)
    left = torch.tensor([i[0] < 4 for i in indices])
    right = torch.tensor([i[0] > 4 for i in indices])  # the middle column i0 == 4 is never observed
    n_left, n_right = int(left.sum()), int(right.sum())
    nodes = torch.cat([coords[left], coords[right]]).float()
    jitter = 0.3 * (2 / (r - 1)) * random_points(len(nodes), 2, seed=3).float()
    x = torch.cat([nodes, nodes + jitter])  # two points per node, both nearest to it

    def errors_at(step):  # left: 0.005 and 0.015 (mean 0.01); right: 0.01 until step 10, then 0
        right_error = 0.01 if step < 10 else 0.0
        parts = [(n_left, 0.005), (n_right, right_error), (n_left, 0.015), (n_right, right_error)]
        return torch.cat([torch.full((n,), value) for n, value in parts])

    for step in range(steps):
        enc.update(step, total)
        enc.update(step, total)  # the trainer may repeat a step (resume): no effect
        enc.observe_error(x, errors_at(step))

    right_errors = [[0.01, 0.01] if s < 10 else [0.0, 0.0] for s in range(steps)]
    reference = {
        "left": simulate_node([[0.005, 0.015]] * steps, total, **schedule),
        "right": simulate_node(right_errors, total, **schedule),
        "middle": simulate_node([[]] * steps, total, **schedule),
    }
    alpha = enc.alpha
    np.testing.assert_allclose(alpha[:4].numpy(), reference["left"][-1], atol=1e-5)
    np.testing.assert_allclose(alpha[5:].numpy(), reference["right"][-1], atol=1e-5)
    np.testing.assert_allclose(alpha[4].numpy(), reference["middle"][-1], atol=1e-5)
    assert reference["left"][-1] > reference["right"][-1] > 0
    # The right half froze a few updates after its error vanished, the left keeps growing.
    assert reference["right"][-1] == reference["right"][-20] and reference["left"][-1] > reference["left"][-20]
    before = enc.alpha.clone()
    for step in range(steps, steps + 5):
        enc.update(step, total)
        enc.observe_error(x, errors_at(step))
    assert torch.equal(enc.alpha[5:], before[5:])
    assert torch.all(enc.alpha[:4] > before[:4])
    # The encoding exposes more bands on the left: band 1 is on there and still dim on the right.
    probe = torch.tensor([[-0.75, 0.0], [0.75, 0.0]])
    weights = torch.stack([enc(probe)[:, 2 + 4 * k : 6 + 4 * k].abs().sum(dim=1) for k in range(4)], dim=1)
    assert weights[0, 1] > weights[1, 1]


def test_error_running_mean_closed_form():
    # One node observed at every step, decay 0.9, threshold 1e-3: the running error starts at the
    # first mean and then blends; the node grows only while it is above the threshold.
    enc = SpatiallyAdaptiveProgressive(2, Config(n_frequencies=4, grid_resolution=3, error_decay=0.9, error_threshold=1e-3))
    node = torch.tensor([[1.0, -1.0]])
    rate = 4 / 50
    enc.update(0, 100)
    means = [5e-4, 5e-3, 5e-3, 0.0]
    emas = [5e-4, 0.9 * 5e-4 + 0.1 * 5e-3]
    emas += [0.9 * emas[-1] + 0.1 * 5e-3, 0.9 * (0.9 * emas[-1] + 0.1 * 5e-3)]
    grown = [False, False, True, True]  # 0.5e-3, 0.95e-3, 1.355e-3, 1.2195e-3 against 1e-3
    alpha = 0.0
    for step, (mean, ema, grows) in enumerate(zip(means, emas, grown), start=1):
        enc.observe_error(node.repeat(2, 1), torch.tensor([mean * 0.5, mean * 1.5]))
        enc.update(step, 100)
        alpha += rate if grows else 0.0
        assert abs(enc.error_ema[2, 0].item() - ema) < 1e-9
        assert abs(enc.alpha[2, 0].item() - alpha) < 1e-6
        assert enc.alpha[0, 0].item() == pytest.approx(rate * step)  # never observed: keeps growing
    assert enc.observed.sum() == 1 and enc.error_count.sum() == 0


def test_matches_progressive_schedule_while_nothing_is_observed():
    total = 50
    cfg = Config(n_frequencies=5, grid_resolution=3, start_fraction=0.2, end_fraction=0.7)
    sape = SpatiallyAdaptiveProgressive(3, cfg)
    progressive = ProgressiveFrequency(3, ProgressiveFrequencyConfig(n_frequencies=5, start_fraction=0.2, end_fraction=0.7))
    for step in range(total):
        sape.update(step, total)
        progressive.update(step, total)
        assert torch.allclose(sape.alpha, progressive.alpha.expand_as(sape.alpha), atol=1e-5), step
    assert torch.all(sape.alpha == 5.0)


def test_update_is_idempotent_and_keeps_pending_errors():
    cfg = Config(n_frequencies=4, grid_resolution=4, error_decay=0.8)
    once, twice = SpatiallyAdaptiveProgressive(2, cfg), SpatiallyAdaptiveProgressive(2, cfg)
    x = random_points(30, 2, seed=4).float()
    error = torch.rand(30, generator=torch.Generator().manual_seed(5)) * 1e-2
    for step in range(6):
        once.update(step, 20)
        once.observe_error(x, error * step)
        twice.update(step, 20)
        twice.observe_error(x[:10], error[:10] * step)  # observed between two calls for one step
        twice.update(step, 20)
        twice.observe_error(x[10:], error[10:] * step)
    for name, buffer in once.state_dict().items():
        assert torch.allclose(buffer.float(), twice.state_dict()[name].float(), atol=1e-7), name


def test_state_dict_round_trip_resumes_exactly():
    cfg = Config(n_frequencies=4, grid_resolution=6, error_threshold=2e-3, error_decay=0.7)
    x = random_points(200, 2, seed=6).float()

    def error_at(step):
        return (x[:, 0] > 0).float() * 1e-2 + 1e-3 * torch.rand(len(x), generator=torch.Generator().manual_seed(step))

    run = SpatiallyAdaptiveProgressive(2, cfg)
    for step in range(10):
        run.update(step, 40)
        run.observe_error(x, error_at(step))
    state = {k: v.clone() for k, v in run.state_dict().items()}
    assert set(state) == {"alpha", "error_sum", "error_count", "error_ema", "observed", "last_step"}
    resumed = SpatiallyAdaptiveProgressive(2, cfg)
    resumed.load_state_dict(state)
    probe = random_points(15, 2, seed=7)
    assert torch.equal(resumed(probe), run(probe))
    for module in (run, resumed):
        module.update(9, 40)  # the trainer repeats the checkpointed step's update on resume
        for step in range(10, 25):
            module.update(step, 40)
            module.observe_error(x, error_at(step))
    for name, buffer in run.state_dict().items():
        assert torch.equal(buffer, resumed.state_dict()[name]), name
    assert torch.equal(resumed(probe), run(probe))
    assert not torch.equal(run.alpha[0], run.alpha[-1])  # the two halves did progress differently


DISTRIBUTED_CONFIG = Config(n_frequencies=4, grid_resolution=5, error_threshold=1e-3, error_decay=0.5, end_fraction=0.5)


def rank_observations(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank 0 sees a high error on the left nodes and 2^-9 on the right; rank 1 sees 0 three times per right node.

    Together the right nodes average 2^-11, below the threshold; alone, rank 0 would find 2^-9 above it.
    The middle column is seen by neither. All values are dyadic, so sums do not depend on their order.
    """
    coords, indices = node_positions(DISTRIBUTED_CONFIG.grid_resolution, 2)
    left = torch.tensor([i[0] < 2 for i in indices])
    right = torch.tensor([i[0] > 2 for i in indices])
    if rank == 0:
        x = torch.cat([coords[left], coords[right]])
        error = torch.cat([torch.full((int(left.sum()),), 2.0**-6), torch.full((int(right.sum()),), 2.0**-9)])
    else:
        x = coords[right].repeat(3, 1)
        error = torch.zeros(len(x))
    return x.float(), error


def run_feedback(enc: SpatiallyAdaptiveProgressive, x: torch.Tensor, error: torch.Tensor, steps: int = 4) -> None:
    """A few training steps; half the errors arrive between two updates for one step (kept pending)."""
    half = len(x) // 2
    for step in range(steps):
        enc.update(step, 20)
        enc.observe_error(x[:half], error[:half])
        enc.update(step, 20)  # repeated step: the pending errors must not be counted twice
        enc.observe_error(x[half:], error[half:])
    enc.update(steps, 20)  # folds everything in, so no rank keeps pending errors


def distributed_worker(rank: int, tmp_path) -> None:
    """One data-parallel rank: same encoding, its own observations; saves its state for the parent."""
    timeout = datetime.timedelta(seconds=60)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=rank, world_size=2, timeout=timeout)
    set_data_parallel(True)
    try:
        torch.manual_seed(0)
        enc = SpatiallyAdaptiveProgressive(2, DISTRIBUTED_CONFIG)
        run_feedback(enc, *rank_observations(rank))
        torch.save(enc.state_dict(), tmp_path / f"rank{rank}.pt")
    finally:
        shutdown()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_data_parallel_ranks_take_the_decision_of_one_process_seeing_all_batches(tmp_path):
    mp.spawn(distributed_worker, args=(tmp_path,), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    # One process observing both ranks' errors, each rank's first half before the repeated update.
    (x0, e0), (x1, e1) = rank_observations(0), rank_observations(1)
    h0, h1 = len(x0) // 2, len(x1) // 2
    assert (h0 + h1) * 2 == len(x0) + len(x1)
    single = SpatiallyAdaptiveProgressive(2, DISTRIBUTED_CONFIG)
    run_feedback(single, torch.cat([x0[:h0], x1[:h1], x0[h0:], x1[h1:]]), torch.cat([e0[:h0], e1[:h1], e0[h0:], e1[h1:]]))
    for name, buffer in single.state_dict().items():
        for rank, state in enumerate(states):
            assert torch.equal(state[name], buffer), (name, rank)
    alpha = single.alpha
    assert torch.all(alpha[:2] == alpha[2]) and torch.all(alpha[:2] > 0)  # left grows like the unseen middle
    assert torch.all(alpha[3:] < alpha[2])  # right froze once the combined error was seen
    assert torch.equal(single.error_ema[3:], torch.full((2, 5), 2.0**-11))


def test_alpha_is_zero_before_start_even_with_errors():
    enc = SpatiallyAdaptiveProgressive(2, Config(n_frequencies=3, grid_resolution=4, start_fraction=0.3, end_fraction=0.6))
    x = random_points(40, 2, seed=8).float()
    for step in range(31):
        enc.update(step, 100)
        assert torch.all(enc.alpha == 0.0)
        enc.observe_error(x, torch.ones(40))
    enc.update(35, 100)  # 5 steps after the start at rate 3 / 30
    np.testing.assert_allclose(enc.alpha.numpy(), 0.5, atol=1e-6)


def test_gradient_wrt_x_sees_the_progress_as_constant():
    # d/dx_j of sum(features) = 1 + sum_k w_k(alpha(x)) f_k (cos f_k x_j - sin f_k x_j).
    torch.manual_seed(9)
    enc = SpatiallyAdaptiveProgressive(2, Config(n_frequencies=3, grid_resolution=3)).double()
    enc.alpha.copy_(torch.tensor([[0.0, 1.0, 2.0], [0.5, 1.5, 2.5], [3.0, 3.0, 1.2]]))
    x = random_points(7, 2, seed=10).requires_grad_()
    (grad,) = torch.autograd.grad(enc(x).sum(), x, create_graph=True)
    alpha = enc.alpha_at(x).double().numpy()
    xn = x.detach().numpy()
    expected = np.ones_like(xn)
    for k in range(3):
        t = np.clip(alpha - k, 0, 1)
        w = (1 - np.cos(np.pi * t)) / 2
        f = math.pi * 2.0**k
        expected += w[:, None] * f * (np.cos(f * xn) - np.sin(f * xn))
    np.testing.assert_allclose(grad.detach().numpy(), expected, atol=1e-9)
    (second,) = torch.autograd.grad(grad.sum(), x)  # twice differentiable
    assert torch.isfinite(second).all() and second.abs().sum() > 0


def test_invalid_configs_raise():
    with pytest.raises(NfieldError, match="2-D or 3-D"):
        SpatiallyAdaptiveProgressive(1)
    with pytest.raises(NfieldError, match="2-D or 3-D"):
        SpatiallyAdaptiveProgressive(4)
    with pytest.raises(NfieldError, match="grid_resolution"):
        SpatiallyAdaptiveProgressive(2, Config(grid_resolution=1))
    with pytest.raises(NfieldError, match="error_decay"):
        SpatiallyAdaptiveProgressive(2, Config(error_decay=1.0))
    with pytest.raises(NfieldError, match="error_threshold"):
        SpatiallyAdaptiveProgressive(2, Config(error_threshold=-1.0))
    with pytest.raises(NfieldError, match="start_fraction"):
        SpatiallyAdaptiveProgressive(2, Config(start_fraction=0.5, end_fraction=0.5))


def test_registry_builds_sape():
    cfg = ENCODINGS.from_dict({"otype": "SpatiallyAdaptiveProgressive", "n_frequencies": 5, "grid_resolution": 8})
    enc = ENCODINGS.build(cfg, 3)
    assert isinstance(enc, SpatiallyAdaptiveProgressive)
    assert enc.out_dim == 3 * 11 and enc.progress_map.shape == (8, 8, 8)
