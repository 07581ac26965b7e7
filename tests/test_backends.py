"""Backend dispatch: which implementation runs, forced backends that cannot run, tiny-cuda-nn's
config translation, old grid checkpoints, and the backends a run reports."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from nfield.backends import BACKENDS, backends_in_use, choose_backend, reset_backends, set_backend, tcnn_installed
from nfield.cli import main
from nfield.encodings import (
    DenseGrid,
    DenseGridConfig,
    FrequencyConfig,
    GaussianFourierConfig,
    HashGrid,
    HashGridConfig,
    SphericalHarmonicsConfig,
    tcnn_encoding_config,
)
from nfield.errors import NfieldError
from nfield.fields import Field, FieldConfig
from nfield.networks import MLP, MLPConfig, tcnn_network_config
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.rays import RaySamples
from nfield.render.volume import composite
from nfield.training.checkpoint import Checkpoint, load_model_weights

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("NFIELD_BACKEND", raising=False)


def test_auto_picks_the_reference_on_cpu_and_triton_only_where_it_can_run(monkeypatch):
    assert choose_backend("HashGrid", "auto", CPU, ("torch", "triton")) == "torch"
    if torch.cuda.is_available():
        assert choose_backend("HashGrid", "auto", torch.device("cuda"), ("torch", "triton")) == "triton"
        assert choose_backend("MLP", "auto", torch.device("cuda"), ("torch", "triton"), auto_triton=False) == "torch"
        monkeypatch.setenv("NFIELD_BACKEND", "torch")
        assert choose_backend("HashGrid", "auto", torch.device("cuda"), ("torch", "triton")) == "torch"


def test_forced_backends_that_cannot_run_say_so_in_one_line():
    with pytest.raises(NfieldError, match="backend 'triton' runs on CUDA tensors, got cpu") as err:
        choose_backend("HashGrid", "triton", CPU, ("torch", "triton"))
    assert "\n" not in str(err.value)
    with pytest.raises(NfieldError, match="tiny-cuda-nn, which is not installed .*pip install git\\+https") as err:
        choose_backend("HashGrid", "tcnn", CPU, ("torch", "tcnn"))
    assert "\n" not in str(err.value)
    with pytest.raises(NfieldError, match="unknown or unsupported backend 'cuda'"):
        HashGridConfig(backend="cuda")
    grid = HashGrid(2, HashGridConfig(n_levels=2, log2_hashmap_size=6, backend="triton"))
    with pytest.raises(NfieldError, match="backend 'triton' runs on CUDA"):
        grid(torch.zeros(3, 2))
    samples = RaySamples(torch.zeros(2, dtype=torch.long), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(NfieldError, match="composite: backend 'triton' runs on CUDA"):
        composite(torch.rand(2, 3), torch.rand(2), samples, 1, backend="triton")
    occupancy = OccupancyGrid(OccupancyGridConfig(resolution=4), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    occupancy.occupied.fill_(True)
    with pytest.raises(NfieldError, match="march: backend 'triton' runs on CUDA"):
        occupancy.march(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1), torch.ones(1), 0.1, backend="triton")


def test_every_backend_of_a_grid_shares_one_table_and_the_repr_says_which_ran():
    grid = HashGrid(3, HashGridConfig(n_levels=2, log2_hashmap_size=8))
    assert "backend=auto" in repr(grid) and "last call" not in repr(grid)
    reset_backends()
    grid(torch.rand(5, 3))
    assert "backend=auto (last call: torch)" in repr(grid) and backends_in_use() == {"HashGrid": "torch"}
    state = {k: v.clone() for k, v in grid.state_dict().items()}
    for name in ("torch", "triton", "tcnn", "auto"):
        assert grid.set_backend(name) is True
        assert grid.backend == name and all(torch.equal(state[k], v) for k, v in grid.state_dict().items())


def test_set_backend_reaches_every_component_and_mlps_keep_their_parameterisation():
    field = Field(2, 3, FieldConfig(HashGridConfig(n_levels=2, log2_hashmap_size=6), MLPConfig(n_neurons=16, n_hidden_layers=1)))
    assert set_backend(field, "triton") == {"encoding": True, "network": True}
    assert field.encoding.backend == field.network.backend == "triton"
    # tiny-cuda-nn's networks have no biases: a PyTorch-built MLP keeps its own backend
    assert set_backend(field, "tcnn") == {"encoding": True, "network": False}
    assert field.encoding.backend == "tcnn" and field.network.backend == "triton"
    with pytest.raises(NfieldError, match="unknown backend 'fast'"):
        set_backend(field, "fast")


def test_mlps_the_fused_kernel_cannot_run_are_named():
    assert MLP(32, 16, MLPConfig(n_neurons=64, n_hidden_layers=2)).fusable() is None
    assert "no hidden layer" in MLP(32, 16, MLPConfig(n_neurons=64, n_hidden_layers=0)).fusable()
    assert "exceed 128" in MLP(32, 16, MLPConfig(n_neurons=256)).fusable()
    assert "'gelu'" in MLP(32, 16, MLPConfig(n_neurons=64, activation="gelu")).fusable()


def test_tcnn_config_translation_uses_tiny_cuda_nns_keys():
    grid = HashGridConfig(n_levels=8, n_features_per_level=4, log2_hashmap_size=15, base_resolution=8, per_level_scale=1.5)
    assert tcnn_encoding_config(grid) == {
        "otype": "HashGrid",
        "n_levels": 8,
        "n_features_per_level": 4,
        "log2_hashmap_size": 15,
        "base_resolution": 8,
        "per_level_scale": 1.5,
        "interpolation": "Linear",
    }
    dense = tcnn_encoding_config(DenseGridConfig(n_levels=3, backend="torch"))
    assert dense["otype"] == "DenseGrid" and "backend" not in dense and dense["n_levels"] == 3
    assert tcnn_encoding_config(SphericalHarmonicsConfig(degree=4)) == {"otype": "SphericalHarmonics", "degree": 4}
    assert tcnn_encoding_config(FrequencyConfig(n_frequencies=6, include_input=False)) == {
        "otype": "Frequency",
        "n_frequencies": 6,
    }
    with pytest.raises(NfieldError, match="include_input=False"):
        tcnn_encoding_config(FrequencyConfig())
    with pytest.raises(NfieldError, match="GaussianFourier encoding has no tiny-cuda-nn counterpart"):
        tcnn_encoding_config(GaussianFourierConfig())
    assert tcnn_network_config(MLPConfig(n_neurons=64, n_hidden_layers=2, output_activation="sigmoid")) == {
        "otype": "FullyFusedMLP",
        "activation": "ReLU",
        "output_activation": "Sigmoid",
        "n_neurons": 64,
        "n_hidden_layers": 2,
    }
    assert tcnn_network_config(MLPConfig(n_neurons=256, activation="leaky_relu"))["otype"] == "CutlassMLP"
    assert tcnn_network_config(MLPConfig(activation="leaky_relu"))["activation"] == "LeakyReLU"
    with pytest.raises(NfieldError, match="no 'gelu' activation"):
        tcnn_network_config(MLPConfig(activation="gelu"))
    with pytest.raises(NfieldError, match="not installed"):
        MLP(3, 1, MLPConfig(n_neurons=16, backend="tcnn"))


def test_grid_table_size_equals_tiny_cuda_nns_parameter_count():
    # tiny-cuda-nn: per level min(next multiple of 8 of r^d, 2^log2_hashmap_size) rows, r = ceil(b^l base - 1) + 1
    scale = (2048 / 16) ** (1 / 15)  # instant-ngp's NeRF grid: 16 levels from 16 to 2048
    grid = HashGrid(3, HashGridConfig(per_level_scale=scale))
    expected_rows = 0
    for level in range(16):
        resolution = int(np.ceil(np.float32(scale**level) * 16 - 1)) + 1
        expected_rows += min(-(-(resolution**3) // 8) * 8, 2**19)
    # 12,196,240 is also the grid size that weights dumped from instant-ngp's NeRF model report
    assert grid.params.numel() == expected_rows * 2 == 12_196_240


def test_grids_saved_with_the_old_geometry_are_refused_in_one_line(tmp_path):
    grid = HashGrid(2, HashGridConfig(n_levels=2, log2_hashmap_size=6))
    folder = tmp_path / "step_0000001"
    folder.mkdir()
    save_file({"params": grid.params.detach().clone()}, str(folder / "model.safetensors"))  # no layout_version
    with pytest.raises(NfieldError, match="nfield 0.1's grid geometry, not tiny-cuda-nn's .*retrain") as err:
        load_model_weights(grid, Checkpoint(1, folder))
    assert "\n" not in str(err.value)
    save_file({k: v.clone() for k, v in grid.state_dict().items()}, str(folder / "model.safetensors"))
    load_model_weights(grid, Checkpoint(1, folder))


def test_training_logs_the_backends_that_ran_and_info_prints_them(tmp_path, capsys, tiny_png):
    out = tmp_path / "run"
    argv = ["fit-image", str(tiny_png), "--model", "hash", "--steps", "3", "--backend", "torch", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "backends: HashGrid torch, MLP torch" in err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r["kind"] == "backends"]
    assert logged == [{"step": 1, "kind": "backends", "backends": {"HashGrid": "torch", "MLP": "torch"}, "kept_own_backend": []}]
    assert json.loads((out / "config.json").read_text())["train"]["backend"] == "torch"
    assert main(["info", str(out)]) == 0
    assert "backends (first training step): HashGrid torch, MLP torch" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert "backend 'auto' on cpu: HashGrid, DenseGrid -> torch; MLP -> torch" in capsys.readouterr().out
    assert main([*argv[:-4], "--backend", "triton", "--out", str(tmp_path / "t"), "--no-progress"]) == 1
    assert "--backend: backend 'triton' runs on CUDA tensors, got cpu" in capsys.readouterr().err
    assert main([*argv[:-4], "--backend", "fast", "--out", str(tmp_path / "bad")]) == 2  # not a choice: a malformed command line
    assert "--backend expects one of auto, torch, triton, tcnn, got 'fast'" in capsys.readouterr().err


def test_backend_names():
    assert BACKENDS == ("auto", "torch", "triton", "tcnn")


@pytest.fixture
def tiny_png(tmp_path):
    import imageio.v3 as iio

    y, x = np.mgrid[0:12, 0:12] / 12
    path = tmp_path / "tiny.png"
    iio.imwrite(path, (np.stack([x, y, x * y], -1) * 255).astype(np.uint8))
    return path


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and tcnn_installed()), reason="needs CUDA and tiny-cuda-nn")
@pytest.mark.parametrize(
    "dim, cfg", [(3, HashGridConfig()), (2, HashGridConfig(n_levels=8, per_level_scale=1.5)), (3, DenseGridConfig())]
)
def test_tiny_cuda_nn_gives_the_same_features_for_the_same_table(dim, cfg):
    torch.manual_seed(0)
    grid = (HashGrid if isinstance(cfg, HashGridConfig) else DenseGrid)(dim, cfg).cuda()
    with torch.no_grad():
        grid.params.normal_()
    x = torch.rand(100_000, dim, device="cuda") * 2 - 1
    outputs = {}
    for name in ("torch", "triton", "tcnn"):
        grid.set_backend(name)
        outputs[name] = grid(x)
    torch.testing.assert_close(outputs["triton"], outputs["torch"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs["tcnn"], outputs["torch"], atol=2e-3, rtol=2e-3)  # tcnn may compute in float16
