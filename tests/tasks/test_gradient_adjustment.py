"""IGA (inductive gradient adjustment): the eNTK, the balancing transform and the adjusted gradient
against explicit float64 computations, then a short fit and the command line; for images, audio
(runs of samples) and video (patches of one frame)."""

import dataclasses
import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import soundfile
import torch
from torch import nn
from torch.func import functional_call

from nfield.cli import main
from nfield.data.audio import Audio, time_coordinates
from nfield.data.images import Image
from nfield.data.video import Video
from nfield.encodings import FrequencyConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.networks import MLPConfig
from nfield.runs.single import RunRequest, load_run, train
from nfield.tasks.audio import AudioTask, AudioTaskConfig
from nfield.tasks.gradient_adjustment import (
    GradientAdjuster,
    GradientAdjustmentConfig,
    balancing_transform,
    empirical_ntk,
    grid_cells,
    patch_groups,
)
from nfield.tasks.image import ImageTask, ImageTaskConfig
from nfield.tasks.teaching import TeachingConfig
from nfield.tasks.video import VideoTask, VideoTaskConfig


def tiny_mlp(out_dim: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, out_dim)).double()


def full_jacobian(model: nn.Module, coords: torch.Tensor) -> torch.Tensor:
    """(N, C, P): d f_c(x_n) / d theta, from torch.autograd.functional.jacobian over all N outputs."""
    names = [name for name, _ in model.named_parameters()]
    params = tuple(p.detach() for p in model.parameters())
    parts = torch.autograd.functional.jacobian(lambda *ps: functional_call(model, dict(zip(names, ps)), (coords,)), params)
    return torch.cat([part.reshape(*part.shape[:2], -1) for part in parts], dim=-1)


def paper_transform(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """V diag(s) V^T with s_i = lambda_n / lambda_i for the n largest eigenvalues, 1 for the rest."""
    eigenvalues, eigenvectors = torch.linalg.eigh(kernel)
    order = eigenvalues.argsort(descending=True)
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    s = torch.ones_like(eigenvalues)
    s[:n] = eigenvalues[n] / eigenvalues[:n]
    return eigenvectors @ torch.diag(s) @ eigenvectors.T


class _Square(torch.autograd.Function):  # an old-style custom kernel: no vmap rule
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_out


class _SquaringNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = tiny_mlp(2)

    def forward(self, x):
        return _Square.apply(self.inner(x))


def explicit_iga_gradient(model, coords, residuals, groups, slots, n_balanced):
    """(P,) 2 / (N C) J^T (S_s ⊗ I) r by hand: each group's worst sample, their pooled eNTK, the
    paper's S, then S_s[g_n, g_m] between samples at the same slot (missing slots count as zero)."""
    _, groups = torch.unique(groups, return_inverse=True)
    worst = torch.stack([torch.where(groups == g, residuals.abs().sum(-1), -1.0).argmax() for g in range(int(groups.max()) + 1)])
    pooled = full_jacobian(model, coords[worst]).sum(dim=1) / math.sqrt(residuals.shape[1])
    s = paper_transform(pooled @ pooled.T, n_balanced)
    mixing = s[groups][:, groups] * (slots[:, None] == slots[None, :])  # (N, N)
    jacobian = full_jacobian(model, coords)  # (N, C, P)
    return 2 * torch.einsum("ncp,nc->p", jacobian, mixing @ residuals) / residuals.numel()


def test_entk_is_j_jt_of_the_pooled_output_on_a_tiny_mlp():
    coords = torch.rand(7, 2, dtype=torch.float64) * 2 - 1
    single = tiny_mlp(1)
    jacobian = full_jacobian(single, coords)[:, 0]
    torch.testing.assert_close(empirical_ntk(single, coords), jacobian @ jacobian.T, rtol=1e-12, atol=1e-12)
    # C channels: the paper's pseudo-NTK, gradients of sum_c f_c / sqrt(C)
    rgb = tiny_mlp(3)
    pooled = full_jacobian(rgb, coords).sum(dim=1) / math.sqrt(3)
    torch.testing.assert_close(empirical_ntk(rgb, coords), pooled @ pooled.T, rtol=1e-12, atol=1e-12)
    # a model vmap cannot see through falls back to one backward pass per sample, same kernel
    squaring = _SquaringNet()
    pooled = full_jacobian(squaring, coords).sum(dim=1) / math.sqrt(2)
    with pytest.warns(UserWarning, match="one backward pass per sample"):
        kernel = empirical_ntk(squaring, coords)
    torch.testing.assert_close(kernel, pooled @ pooled.T, rtol=1e-12, atol=1e-12)


def test_the_balancing_transform_is_the_papers_on_a_known_spectrum():
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    eigenvalues = torch.tensor([9.0, 5.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    kernel = q @ torch.diag(eigenvalues) @ q.T
    s = balancing_transform(kernel, n_balanced=2)
    expected = q @ torch.diag(torch.tensor([3 / 9, 3 / 5, 1, 1, 1, 1], dtype=torch.float64)) @ q.T
    torch.testing.assert_close(s, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, paper_transform(kernel, 2), rtol=1e-12, atol=1e-12)
    balanced = torch.linalg.eigvalsh(s @ kernel).flip(0)  # S K: the two largest lowered to the third
    torch.testing.assert_close(balanced, torch.tensor([3.0, 3, 3, 2, 1, 0.5], dtype=torch.float64))
    # n beyond the spectrum: the anchor is the smallest eigenvalue; beyond the rank: the smallest positive one
    torch.testing.assert_close(balancing_transform(kernel, 50), paper_transform(kernel, 5), rtol=1e-12, atol=1e-12)
    singular = q @ torch.diag(torch.tensor([4.0, 2, 1, 0, 0, 0], dtype=torch.float64)) @ q.T
    torch.testing.assert_close(balancing_transform(singular, 50), paper_transform(singular, 2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(balancing_transform(kernel[:1, :1], 20), torch.eye(1, dtype=torch.float64))
    with pytest.raises(NfieldError, match="n_balanced must be an integer >= 1"):
        GradientAdjustmentConfig(enabled=True, n_balanced=0)


def test_the_surrogate_gradient_is_jt_s_r_and_the_mse_gradient_without_adjustment():
    model, side, patch = tiny_mlp(3), 8, 4
    index = torch.randperm(side * side, generator=torch.Generator().manual_seed(0))[:50]  # missing slots included
    rows, cols = index // side, index % side
    coords = torch.stack([(cols + 0.5) * 2 / side - 1, (rows + 0.5) * 2 / side - 1], -1).double()
    targets = torch.rand(len(index), 3, dtype=torch.float64)
    groups, slots = patch_groups(coords, (side, side), patch)
    assert torch.equal(groups, (cols // patch) * 2 + rows // patch) and torch.equal(slots, (cols % patch) * patch + rows % patch)

    outputs = model(coords)
    residuals = (outputs - targets).detach()
    adjuster = GradientAdjuster(GradientAdjustmentConfig(enabled=True, patch_size=patch, n_balanced=2))
    adjusted = adjuster.adjusted_residuals(model, coords, residuals, groups, slots)
    surrogate = adjuster.surrogate_loss(outputs, adjusted)
    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(surrogate, list(model.parameters()))])

    expected = explicit_iga_gradient(model, coords, residuals, groups, slots, 2)
    torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-12)
    jacobian = full_jacobian(model, coords)
    assert not torch.allclose(gradient, 2 * torch.einsum("ncp,nc->p", jacobian, residuals) / residuals.numel())

    # S = I: the surrogate's gradient is the MSE's
    mse = ((model(coords) - targets) ** 2).mean()
    plain = torch.autograd.grad(mse, list(model.parameters()))
    identity = torch.autograd.grad(adjuster.surrogate_loss(model(coords), residuals), list(model.parameters()))
    for a, b in zip(plain, identity):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def synthetic_image(size: int = 32) -> Image:
    """Smooth shading plus a 9-cycle grating and a hard-edged checker: content spectral bias learns late."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    grating = 0.2 * torch.sin(2 * math.pi * (9 * x + 5 * y))
    checker = 0.2 * torch.sign(torch.sin(2 * math.pi * 4 * x) * torch.sin(2 * math.pi * 3 * y))
    rgb = torch.stack([0.5 + 0.2 * torch.cos(2 * math.pi * x) + grating, 0.5 + checker, 0.5 + grating - 0.2 * y], -1)
    return Image(rgb.clamp(0, 1).float(), 1.0, "synthetic")


def test_the_image_task_reports_the_true_mse_and_backpropagates_igas_gradient():
    field = FieldConfig(network=MLPConfig(n_neurons=16, n_hidden_layers=2))
    image = synthetic_image(16)
    grads = {}
    for name, adjustment in {
        "plain": GradientAdjustmentConfig(),
        "one patch": GradientAdjustmentConfig(enabled=True, patch_size=16),  # G = 1: S = I
        "iga": GradientAdjustmentConfig(enabled=True, patch_size=4),
    }.items():
        torch.manual_seed(0)
        task = ImageTask(image, field, ImageTaskConfig(gradient_adjustment=adjustment))
        coords, targets = task.sample(0)
        loss, metrics = task.loss((coords, targets))
        mse = ((task.model(coords) - targets) ** 2).mean()
        torch.testing.assert_close(loss, mse.detach())
        torch.testing.assert_close(metrics["psnr"], -10 * torch.log10(mse.detach()))
        grads[name] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(task.model.parameters()))])
    torch.testing.assert_close(grads["one patch"], grads["plain"])
    assert not torch.allclose(grads["iga"], grads["plain"])
    # an image larger than a batch: whole random patches, border patches cut to the image
    task = ImageTask(synthetic_image(18), field, ImageTaskConfig(batch_size=40, gradient_adjustment=adjustment))
    for step in range(5):
        coords, _ = task.sample(step)
        groups, slots = patch_groups(coords, (18, 18), 4)
        sizes = sorted(torch.unique(groups, return_counts=True)[1].tolist())
        assert len(sizes) == 2 and set(sizes) <= {16, 8, 4}  # 40 // 16 patches: whole, an edge's 4x2 or the corner's 2x2
        assert len(set(zip(groups.tolist(), slots.tolist()))) == len(coords)


def test_a_short_fit_with_iga_beats_plain_training_and_the_run_rebuilds_with_it(tmp_path):
    path = tmp_path / "grating.png"
    iio.imwrite(path, (synthetic_image().as_float().numpy() * 255 + 0.5).astype(np.uint8))
    iga = GradientAdjustmentConfig(enabled=True, patch_size=4)  # 64 patches of the 32x32 image

    def fit(name, adjustment):
        return train(
            RunRequest(
                "image",
                str(path),
                model="relu-pe",
                out=tmp_path / name,
                device="cpu",
                train={"steps": 200, "lr": 5e-3, "progress": False, "eval_every": 0, "checkpoint_every": 0, "seed": 0},
                overrides={"n_neurons": 64, "n_hidden_layers": 2, "n_frequencies": 4},
                task_overrides={"gradient_adjustment": adjustment},
            )
        )

    # measured on one CPU core, seeds 0/1/2: 35.1/33.8/33.7 dB with IGA, 19.1/18.8/18.6 dB without
    adjusted, plain = fit("iga", iga), fit("plain", GradientAdjustmentConfig())
    assert math.isfinite(adjusted["psnr"]) and adjusted["psnr"] > plain["psnr"] + 6
    config = json.loads((tmp_path / "iga" / "config.json").read_text())
    assert config["task_config"]["gradient_adjustment"] == {"enabled": True, "patch_size": 4, "n_balanced": 20}
    run = load_run(tmp_path / "iga", "cpu")
    assert run.task.cfg.gradient_adjustment == iga and run.task.adjuster is not None
    resumed = train(RunRequest("image", str(path), out=tmp_path / "iga", device="cpu", resume=True, train={"steps": 210}))
    assert resumed["step"] == 210 and math.isfinite(resumed["psnr"])


def run_cli(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def test_fit_image_takes_iga_and_refuses_bad_settings_in_one_line(tmp_path, capsys):
    path = tmp_path / "grating.png"
    iio.imwrite(path, (synthetic_image(16).as_float().numpy() * 255 + 0.5).astype(np.uint8))
    common = ("fit-image", path, "--model", "relu-pe", "--n-neurons", 32, "--steps", 20, "--device", "cpu", "--no-progress")
    status, out, _ = run_cli(capsys, *common, "--iga", "--iga-patch-size", 4, "--iga-n-balanced", 5, "--out", tmp_path / "a")
    assert status == 0 and math.isfinite(json.loads(out[-1])["psnr"])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["task_config"]["gradient_adjustment"] == {"enabled": True, "patch_size": 4, "n_balanced": 5}
    for bad, message in (
        (("--iga", "--iga-n-balanced", 0), "gradient_adjustment.n_balanced must be an integer >= 1, got 0"),
        (("--iga", "--iga-patch-size", -2), "gradient_adjustment.patch_size must be an integer >= 1, got -2"),
        (("--iga-patch-size", 8), "add --iga"),
    ):
        status, _, err = run_cli(capsys, *common, *bad, "--out", tmp_path / "b")
        assert status == 1 and message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "b").exists()


TINY = FieldConfig(FrequencyConfig(n_frequencies=2), MLPConfig(n_neurons=8, n_hidden_layers=1))


def check_iga_step(task, coords, targets, groups, slots, n_balanced):
    """The task's loss on a float64 model: its value is the MSE (its PSNR reported), its gradient
    IGA's J^T S r over `groups` and `slots`, not the MSE's."""
    task.model.double()
    loss, metrics = task.loss((coords, targets))
    outputs = task.model(coords)
    residuals = (outputs - targets).detach()
    mse = residuals.square().mean()
    torch.testing.assert_close(loss.detach(), mse, rtol=1e-12, atol=0)
    torch.testing.assert_close(metrics["psnr"], -10 * torch.log10(mse), rtol=1e-12, atol=0)
    gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(task.model.parameters()))])
    torch.testing.assert_close(gradient, explicit_iga_gradient(task.model, coords, residuals, groups, slots, n_balanced))
    plain = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(outputs.sub(targets).square().mean(), list(task.model.parameters()))]
    )
    assert not torch.allclose(gradient, plain)


def test_grid_cells_inverts_the_float32_centres_of_long_clips_exactly():
    n = 7_777_777  # a float32 floor puts some 500,000 of these samples in the wrong cell
    index = torch.cat([torch.arange(0, 50_000), torch.arange(n - 200_000, n), torch.randint(0, n, (50_000,))])
    assert torch.equal(grid_cells(time_coordinates(index, n), (n,))[:, 0], index)
    with pytest.raises(NfieldError, match="distinct up to 8,388,608 samples"):
        AudioTask(
            Audio(torch.zeros(2**23 + 1, 1), 44100, "long"),
            TINY,
            AudioTaskConfig(gradient_adjustment=GradientAdjustmentConfig(enabled=True)),
        )


def test_audio_iga_steps_along_jt_s_r_over_whole_runs_of_samples():
    n, run = 100, 16
    samples = torch.stack([torch.sin(torch.linspace(0, 40, n)), 0.5 * torch.cos(torch.linspace(0, 90, n))], dim=1)
    audio = Audio(samples.float(), 8000, "synthetic")
    iga = GradientAdjustmentConfig(enabled=True, patch_size=run, n_balanced=2)
    assert AudioTaskConfig().gradient_adjustment.patch_size == 1024  # the samples of a 32 x 32 image patch

    def index_of(times):
        return ((times[:, 0].double() + 1) * n / 2 - 0.5).round().long()

    # a full-batch clip: every run complete, the last one cut to the clip
    task = AudioTask(audio, TINY, AudioTaskConfig(gradient_adjustment=iga))
    times, targets = task.sample(0)
    index = index_of(times)
    assert torch.equal(index, torch.arange(n))
    check_iga_step(task, times.double(), targets, index // run, index % run, 2)
    # a clip larger than a batch: 48 // 16 whole random runs per batch, teaching's candidates too
    task = AudioTask(audio, TINY, AudioTaskConfig(batch_size=48, gradient_adjustment=iga))
    for step in range(6):
        times, targets = task.sample(step)
        index = index_of(times)
        starts = torch.unique(index // run) * run
        assert len(starts) == 3 and torch.equal(
            index.sort().values, torch.cat([torch.arange(s, min(s + run, n)) for s in starts.sort().values])
        )
    check_iga_step(task, times.double(), targets, index // run, index % run, 2)
    taught = AudioTask(
        audio, TINY, AudioTaskConfig(batch_size=48, gradient_adjustment=iga, teaching=TeachingConfig(enabled=True))
    )
    taught.update(0, 100)
    times, _ = taught.sample(0)
    assert len(torch.unique(index_of(times) // run)) <= 3


def test_video_iga_steps_along_jt_s_r_over_whole_patches_of_one_frame():
    n_frames, height, width, side = 3, 6, 5, 4  # per frame: a 4x4 patch, a 4x1, a 2x4 and a 2x1 at the border
    frames = (torch.rand(n_frames, height, width, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    iga = GradientAdjustmentConfig(enabled=True, patch_size=side, n_balanced=2)
    task = VideoTask(Video(frames, 25.0, "synthetic"), TINY, VideoTaskConfig(batch_size=48, gradient_adjustment=iga))
    for step in range(6):
        coords, targets = task.sample(step)
        cells = ((coords.double() + 1) * torch.tensor([width, height, n_frames]) / 2 - 0.5).round().long()
        column, row, frame = cells.unbind(1)
        groups = (frame * 2 + row // side) * 2 + column // side
        slots = (row % side) * side + column % side
        present, sizes = torch.unique(groups, return_counts=True)
        expected = [(4 if (g // 2) % 2 == 0 else 2) * (4 if g % 2 == 0 else 1) for g in present.tolist()]
        assert len(present) == 3 and sizes.tolist() == expected  # 48 // 16 whole patches, border ones cut
        assert len(set(zip(groups.tolist(), slots.tolist()))) == len(coords)
        torch.testing.assert_close(targets, frames[frame, row, column].float() / 255)
    check_iga_step(task, coords.double(), targets, groups, slots, 2)
    taught = VideoTask(
        Video(frames, 25.0, "synthetic"),
        TINY,
        VideoTaskConfig(batch_size=48, gradient_adjustment=iga, teaching=TeachingConfig(enabled=True)),
    )
    taught.update(0, 100)
    coords, _ = taught.sample(0)
    assert len(patch_groups(coords, (width, height, n_frames), (side, side, 1))[0].unique()) <= 3


def test_fit_audio_and_fit_video_take_iga_and_refuse_bad_settings_in_one_line(tmp_path, capsys):
    t = np.arange(400) / 8000
    soundfile.write(
        str(tmp_path / "chirp.wav"), (0.6 * np.sin(2 * np.pi * (200 * t + 8000 * t**2)))[:, None], 8000, subtype="FLOAT"
    )
    (tmp_path / "frames").mkdir()
    for k in range(3):
        iio.imwrite(
            tmp_path / "frames" / f"{k:03d}.png", (synthetic_image(16).as_float().roll(4 * k, 1).numpy() * 255).astype(np.uint8)
        )
    small = {
        "fit-audio": (tmp_path / "chirp.wav", "--model", "relu-pe", "--n-neurons", 16, "--n-hidden-layers", 1),
        "fit-video": (tmp_path / "frames", "--model", "relu-pe", "--n-neurons", 16, "--n-hidden-layers", 1, "--batch-size", 64),
    }
    given = {"fit-audio": (), "fit-video": ("--iga-patch-size", 4, "--iga-n-balanced", 3)}
    expected = {
        "fit-audio": {"enabled": True, "patch_size": 1024, "n_balanced": 20},  # audio's defaults
        "fit-video": {"enabled": True, "patch_size": 4, "n_balanced": 3},
    }
    for command, argv in small.items():
        common = (command, *argv, "--steps", 5, "--device", "cpu", "--no-progress")
        status, out, err = run_cli(capsys, *common, "--iga", *given[command], "--out", tmp_path / command)
        assert status == 0 and math.isfinite(json.loads(out[-1])["psnr"]), err
        config = json.loads((tmp_path / command / "config.json").read_text())
        assert config["task_config"]["gradient_adjustment"] == expected[command]
        for bad, message in (
            (("--iga", "--iga-patch-size", 0), "gradient_adjustment.patch_size must be an integer >= 1, got 0"),
            (("--iga-n-balanced", 3), "add --iga"),
        ):
            status, _, err = run_cli(capsys, *common, *bad, "--out", tmp_path / "bad")
            assert status == 1 and message in err and len(err.strip().splitlines()) == 1
            assert not (tmp_path / "bad").exists()


def test_teaching_with_iga_ranks_whole_patches_and_a_too_large_jacobian_is_refused():
    from nfield.encodings import HashGridConfig

    image = Image(torch.rand(40, 40, 1), 1.0, "noise")
    both = ImageTaskConfig(
        batch_size=256,
        teaching=TeachingConfig(enabled=True),
        gradient_adjustment=GradientAdjustmentConfig(enabled=True, patch_size=8),
    )
    field = FieldConfig(FrequencyConfig(n_frequencies=2), MLPConfig(n_neurons=8, n_hidden_layers=1))
    task = ImageTask(image, field, both, seed=0)
    task.update(0, 100)
    coords, targets = task.sample(0)
    cells = ((coords + 1) / 2 * 40 - 0.5).round().long()
    assert len({(int(y) // 8, int(x) // 8) for x, y in cells}) <= 4  # the candidates were 4 whole 8x8 patches
    loss, _ = task.loss((coords, targets))
    loss.backward()
    big = FieldConfig(HashGridConfig(n_levels=2, log2_hashmap_size=12), MLPConfig(n_neurons=8, n_hidden_layers=1))
    task = ImageTask(image, big, dataclasses.replace(both, teaching=TeachingConfig(), batch_size=1600), seed=0)
    adjuster = task.adjuster
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("nfield.tasks.gradient_adjustment.MAX_JACOBIAN_VALUES", 1000)
        with pytest.raises(NfieldError, match="use a larger patch size"):
            task.loss(task.sample(0))
    assert adjuster is not None
