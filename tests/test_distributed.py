"""Data-parallel training under torchrun (gloo on the CPU): ranks drawing their blocks of one batch
train the model one process trains on all of it, and a run resumes with another number of ranks."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from nfield.cli import main
from nfield.distributed import Layout, shard, shard_bounds
from nfield.run_directory import RunDirectory
from scenes.synthetic import generate
from tests.test_many import torchrun
from tests.test_stacked import relative_difference, write_images


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def weights_at(run_dir, step):
    (checkpoint,) = [c for c in RunDirectory(run_dir).list_checkpoints() if c.step == step]
    return load_file(str(checkpoint.model_file))


@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (7, 3), (2, 4), (0, 2)])
def test_rank_blocks_cover_a_batch_once_in_order(n, world):
    blocks = [shard(torch.arange(n), Layout(rank, world)) for rank in range(world)]
    assert torch.equal(torch.cat(blocks), torch.arange(n))
    sizes = [shard_bounds(n, Layout(rank, world))[1] - shard_bounds(n, Layout(rank, world))[0] for rank in range(world)]
    assert max(sizes) - min(sizes) <= 1


def test_two_ranks_with_half_the_batch_train_the_model_of_one_process_and_resume_on_one(tmp_path, capsys):
    (image,) = write_images(tmp_path / "in", 1)  # 256 pixels: random batches of 128
    # with INT (teaching): the ranks' scores are gathered, so they pick the worst pixels of the whole batch
    common = ("--model", "relu-pe", "--teaching", "--lr-schedule", "constant", "--device", "cpu", "--no-progress")
    common += ("--checkpoint-every", 10, "--keep-checkpoints", 3, "--eval-every", 0)
    status, _, err = run(capsys, "fit-image", image, *common, "--batch-size", 128, "--steps", 20, "--out", tmp_path / "one")
    assert status == 0, err
    done = torchrun("fit-image", image, *common, "--batch-size", 64, "--steps", 20, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.strip().splitlines()) == 1 and "x 2 ranks" in done.stderr  # rank 0 alone reports
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["task_config"]["batch_size"] == 128 and config["data_parallel"] == {"ranks": 2, "batch_size_per_rank": 64}
    for step in (10, 20):
        assert relative_difference(weights_at(tmp_path / "two", step), weights_at(tmp_path / "one", step)) < 1e-5
    # from the 2-rank run's step-10 checkpoint, one process continues as the 1-process run did
    shutil.rmtree(RunDirectory(tmp_path / "two").list_checkpoints()[-1].path)
    status, _, err = run(capsys, "fit-image", image, "--resume", "--out", tmp_path / "two", "--no-progress")
    assert status == 0, err
    assert relative_difference(weights_at(tmp_path / "two", 20), weights_at(tmp_path / "one", 20)) < 1e-5


def test_a_nerf_trained_on_two_ranks_matches_one_process(tmp_path, capsys):
    scene = generate("textured", tmp_path / "scene", size=24, n_train=8, n_val=1, n_test=1)
    common = ("--n-levels", 6, "--log2-hashmap-size", 12, "--grid-resolution", 16, "--grid-warmup", 8)
    common += ("--steps-per-ray", 64, "--no-progress", "--device", "cpu", "--steps", 16, "--eval-every", 0)
    status, _, err = run(capsys, "train-nerf", scene, *common, "--batch-rays", 256, "--out", tmp_path / "one")
    assert status == 0, err
    done = torchrun("train-nerf", scene, *common, "--batch-rays", 128, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = weights_at(tmp_path / "one", 16), weights_at(tmp_path / "two", 16)
    assert torch.equal(one["grid.occupied"], two["grid.occupied"])  # the grid's updates are reduced across ranks
    assert relative_difference(two, one) < 1e-3


def test_tasks_without_data_parallel_training_refuse_it_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nfield.runs.single.data_parallel", lambda: Layout(0, 2))  # as under torchrun with 2 ranks
    status, _, err = run(capsys, "fit-sdf", tmp_path / "missing.obj", "--device", "cpu", "--out", tmp_path / "s")
    assert status == 1 and "fit-sdf trains in one process" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    status, _, err = run(capsys, "distill", tmp_path / "teacher", "--out", tmp_path / "d")
    assert status == 1 and "distill runs in one process" in err
