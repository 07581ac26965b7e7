"""nfield.training.stacked: n signals trained as one stacked model end with the weights of n single runs."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from safetensors.torch import load_file

from nfield.errors import NfieldError
from nfield.run_directory import RunDirectory
from nfield.runs.single import TASKS, RunRequest, build, new_config, train
from nfield.training.stacked import StackedTrainer, unstackable
from nfield.training.trainer import TrainConfig, seed_everything

SIZE = 16


def write_images(folder, n, size=SIZE):
    """n different small RGB images (smooth patterns plus noise), as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        array = np.stack([np.sin((3 + i) * x), np.cos((2 + 2 * i) * y), x * y * i / n], -1) * 0.4 + 0.5
        array = array + 0.05 * rng.standard_normal(array.shape)
        paths.append(folder / f"img{i}.png")
        iio.imwrite(paths[-1], (np.clip(array, 0, 1) * 255).astype(np.uint8))
    return paths


def configs_for(kind, sources, model, task_options, steps, **train):
    """(config, data) of a single run of each source, as `nfield.runs.single.train` makes them."""
    _, _, new_run = TASKS[kind]
    made = []
    for source in sources:
        train_cfg, part, data = new_run(str(source), model, {}, task_options, torch.device("cpu"))
        cfg = {**train_cfg.__dict__, "steps": steps, "progress": False, "eval_every": 0, "checkpoint_every": 0, **train}
        made.append((new_config(kind, model, TrainConfig(**cfg), part), data))
    return made


def single_fits(made, root):
    """Each signal fitted alone with the one-run trainer: its final state dict."""
    states = []
    for i, (config, data) in enumerate(made):
        RunDirectory(root / f"single{i}").write_config(config)
        task, trainer = build(config, torch.device("cpu"), data, root / f"single{i}")
        trainer.fit()
        states.append({k: v.clone() for k, v in task.model.state_dict().items()})
    return states


def stacked_tasks(made, root, name="stacked"):
    tasks, dirs = [], []
    for i, (config, data) in enumerate(made):
        dirs.append(root / f"{name}{i}")
        RunDirectory(dirs[-1]).write_config(config)
        seed_everything(config["train"]["seed"])
        tasks.append(TASKS[config["task"]][0].from_config(config, "cpu", data))
    return tasks, dirs


def relative_difference(a, b):
    return max(((a[k].double() - b[k].double()).abs().max() / (b[k].double().abs().max() + 1e-12)).item() for k in b)


@pytest.mark.parametrize(
    "model,batch",
    [("siren", 2**16), ("relu-pe", 100), ("hash", 2**16)],  # full batch, random pixel batches, a hash grid
)
def test_stacked_images_end_with_the_weights_of_their_single_fits(tmp_path, model, batch):
    made = configs_for("image", write_images(tmp_path / "in", 3), model, {"batch_size": batch}, steps=8)
    singles = single_fits(made, tmp_path)
    tasks, dirs = stacked_tasks(made, tmp_path)
    trainer = StackedTrainer(tasks, TrainConfig(**made[0][0]["train"]), dirs)
    trainer.probe()
    results = trainer.fit()
    for i, task in enumerate(tasks):
        assert relative_difference(task.model.state_dict(), singles[i]) < 1e-4, f"signal {i}"
        saved = load_file(str(RunDirectory(dirs[i]).latest_checkpoint().model_file))
        assert all(torch.equal(saved[k], v) for k, v in task.model.state_dict().items())
        assert results[i]["step"] == 8 and (dirs[i] / "reconstruction.png").is_file()
        kinds = [
            [(r["step"], r["kind"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
            for d in (dirs[i], tmp_path / f"single{i}")
        ]
        assert kinds[0] == kinds[1] and (8, "train") in kinds[0]  # the single run's metrics.jsonl, line for line
    assert len({round(r["psnr"], 3) for r in results}) == 3  # three different images, three different fits


def test_a_stacked_checkpoint_resumes_as_a_single_run(tmp_path, capsys):
    """A signal's checkpoint holds its own optimiser slice: `fit-image --resume` on its run directory
    continues exactly as an uninterrupted single run."""
    paths = write_images(tmp_path / "in", 2)
    constant = {"lr_schedule": "constant"}
    made = configs_for("image", paths, "relu-pe", {"batch_size": 64}, steps=6, **constant)
    tasks, dirs = stacked_tasks(made, tmp_path)
    StackedTrainer(tasks, TrainConfig(**made[0][0]["train"]), dirs).fit()
    train_flags = {"steps": 12, "progress": False, "lr_schedule": "constant", "eval_every": 0, "checkpoint_every": 0}
    request = dict(model="relu-pe", task_overrides={"batch_size": 64}, train=train_flags)
    resumed = train(RunRequest("image", str(paths[1]), out=dirs[1], resume=True, **request))
    straight = train(RunRequest("image", str(paths[1]), out=tmp_path / "straight", **request))
    assert resumed["step"] == 12
    a = load_file(str(RunDirectory(dirs[1]).latest_checkpoint().model_file))
    b = load_file(str(RunDirectory(tmp_path / "straight").latest_checkpoint().model_file))
    assert relative_difference(a, b) < 1e-4
    assert resumed["psnr"] == pytest.approx(straight["psnr"], abs=1e-3)


def write_meshes(folder):
    folder.mkdir(parents=True, exist_ok=True)
    shapes = {"sphere.obj": trimesh.creation.icosphere(subdivisions=2, radius=0.5), "box.obj": trimesh.creation.box()}
    for name, mesh in shapes.items():
        mesh.export(folder / name)
    return [folder / name for name in shapes]


SMALL_SDF = {"batch_size": 256, "pool_size": 1024, "eval_points": 512, "mesh_resolution": 16, "metric_points": 512}
SMALL_SDF |= {"iou_points": 1024, "preview_width": 16, "preview_height": 9, "octree_points": 2048}


def test_stacked_sdfs_with_an_eikonal_term_match_their_single_fits(tmp_path):
    """SIREN's SDF loss differentiates the field w.r.t. its input (double backward through vmap)."""
    made = configs_for("sdf", write_meshes(tmp_path / "in"), "siren", SMALL_SDF, steps=5)
    assert made[0][0]["task_config"]["eikonal_weight"] > 0
    singles = single_fits(made, tmp_path)
    tasks, dirs = stacked_tasks(made, tmp_path)
    results = StackedTrainer(tasks, TrainConfig(**made[0][0]["train"]), dirs).fit()
    for i, task in enumerate(tasks):
        assert relative_difference(task.model.state_dict(), singles[i]) < 1e-4
        assert (dirs[i] / "mesh.ply").is_file() and "chamfer_l1" in results[i]


def test_what_cannot_be_stacked_says_why(tmp_path):
    meshes = write_meshes(tmp_path / "in")
    nglod = stacked_tasks(configs_for("sdf", meshes, "nglod", SMALL_SDF, steps=2), tmp_path, "nglod")[0]
    assert "differs between signals" in unstackable(nglod)
    images = write_images(tmp_path / "img", 2)
    sape = stacked_tasks(configs_for("image", images, "sape", {}, steps=2), tmp_path, "sape")[0]
    assert "SAPE" in unstackable(sape)
    with pytest.raises(NfieldError, match="cannot be fitted as one stacked model"):
        StackedTrainer(sape, TrainConfig(steps=2), [tmp_path / "a", tmp_path / "b"])
    siren = stacked_tasks(configs_for("image", images, "siren", {}, steps=2), tmp_path, "siren")[0]
    assert unstackable(siren) is None


def test_a_diverging_signal_leaves_the_batch_without_disturbing_the_others(tmp_path, capsys):
    made = configs_for("image", write_images(tmp_path / "in", 3), "siren", {}, steps=6, log_every=2)
    singles = single_fits(made, tmp_path)
    tasks, dirs = stacked_tasks(made, tmp_path)
    honest = tasks[1].fit_terms
    tasks[1].fit_terms = lambda squared: (honest(squared)[0] * float("nan"), honest(squared)[1])
    trainer = StackedTrainer(tasks, TrainConfig(**made[0][0]["train"]), dirs)
    results = trainer.fit()
    assert results[1] is None and "loss became nan" in trainer.failures[1]
    assert "the other signals go on" in capsys.readouterr().err
    for i in (0, 2):
        assert relative_difference(tasks[i].model.state_dict(), singles[i]) < 1e-4
