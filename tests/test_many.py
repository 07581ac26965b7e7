"""Fitting a folder or glob of files (`nfield.runs.collection`): one run per file, index.jsonl, bad files skipped,
ranks under torchrun, and --resume after a rank is killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nfield.cli import main
from nfield.run_directory import RunDirectory
from nfield.runs.collection import CollectionRequest, find_files, fit_collection, run_names
from nfield.runs.single import RunRequest
from tests.run_checks import check_run_commands
from tests.test_stacked import SMALL_SDF, write_images, write_meshes

FAST = ("--model", "relu-pe", "--n-neurons", 32, "--n-hidden-layers", 1, "--no-progress", "--device", "cpu")


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def index_of(out):
    return [json.loads(line) for line in (Path(out) / "index.jsonl").read_text().splitlines()]


def torchrun(*argv, nproc=2, timeout=300, background=False):
    """`nfield argv` on `nproc` local processes (gloo), one CPU thread each."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "nfield.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if background:
        return subprocess.Popen([*command, *map(str, argv)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run([*command, *map(str, argv)], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four 16x16 images, two 12x12 ones (a second stacked group), and a corrupt file."""
    root = tmp_path_factory.mktemp("many")
    write_images(root / "imgs", 4)
    for i, path in enumerate(write_images(root / "small", 2, size=12)):
        path.rename(root / "imgs" / f"small{i}.png")
    (root / "imgs" / "broken.png").write_text("not an image")
    return root / "imgs"


def test_a_folder_fits_every_image_and_skips_the_corrupt_one(folder, tmp_path, capsys):
    status, out, err = run(capsys, "fit-image", folder, *FAST, "--steps", 6, "--out", tmp_path / "c")
    assert status == 0, err
    summary = json.loads(out[-1])
    assert (summary["files"], summary["ok"], summary["skipped"], summary["failed"]) == (7, 6, 1, 0)
    assert "skipped" in err and "broken.png" in err and "Traceback" not in err
    entries = index_of(tmp_path / "c")
    assert [Path(e["file"]).name for e in entries] == sorted(p.name for p in folder.iterdir())  # sorted file order
    by_name = {Path(e["file"]).name: e for e in entries}
    assert by_name["broken.png"]["status"] == "skipped" and "cannot read it as an image" in by_name["broken.png"]["error"]
    assert by_name["img0.png"]["signals_in_batch"] == 4 and by_name["small0.png"]["signals_in_batch"] == 2
    assert summary["mean_psnr"] == pytest.approx(sum(e["psnr"] for e in entries if "psnr" in e) / 6)
    metrics = check_run_commands(tmp_path / "c" / "img2", "image", capsys, tmp_path)  # a run like any other
    assert metrics["psnr"] == pytest.approx(by_name["img2.png"]["psnr"], abs=1e-6)
    # resuming a finished collection fits nothing again
    status, out, err = run(capsys, "fit-image", folder, "--out", tmp_path / "c", "--resume", "--no-progress")
    assert status == 0 and "6 done before, 1 to fit" in err and json.loads(out[-1])["ok"] == 6


def test_a_skipped_file_is_named_once(tmp_path, capsys):
    """The reader's error already starts with the file; the skip line must not repeat it."""
    write_images(tmp_path / "imgs", 1, size=8)
    (tmp_path / "imgs" / "broken.png").write_text("not an image")
    status, _, err = run(capsys, "fit-image", tmp_path / "imgs", *FAST, "--steps", 2, "--out", tmp_path / "c")
    assert status == 0, err
    skipped = [line for line in err.splitlines() if line.startswith("nfield: skipped")]
    assert len(skipped) == 1 and skipped[0].count("broken.png") == 1, err
    assert skipped[0].startswith(f"nfield: skipped {tmp_path / 'imgs' / 'broken.png'}: cannot read it as an image"), err


def test_globs_names_and_one_line_refusals(folder, tmp_path, capsys):
    assert [p.name for p in find_files(str(folder / "img*.png"), "image")] == [f"img{i}.png" for i in range(4)]
    assert run_names([Path("a/x.png"), Path("a/x.jpg"), Path("b/x.png")]) == ["x-png", "x-jpg", "x-png-2"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    cases = [
        (("fit-image", tmp_path / "empty", "--out", tmp_path / "o1"), "no png"),
        (("fit-image", str(tmp_path / "nothing*.png"), "--out", tmp_path / "o2"), "matches no file"),
        (("fit-image", folder, "--out", tmp_path / "o3", "--resume"), "no collection to resume"),
        (("fit-image", folder, "--out", tmp_path / "taken"), "already holds runs"),
        (("fit-image", folder, "--out", tmp_path / "taken", "--overwrite"), "not an nfield collection"),
        (("fit-image", folder, "--out", tmp_path / "o4", "--viewer"), "--viewer follows one run"),
        (("fit-image", folder, "--out", tmp_path / "o5", "--signals-per-batch", -1), "--signals-per-batch"),
    ]
    for argv, message in cases:
        status, _, err = run(capsys, *argv, "--no-progress")
        assert status == 1 and message in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_shapes_stack_or_fall_back_to_one_at_a_time(tmp_path, capsys):
    """SIREN SDFs stack; NGLOD's octree follows each shape, so its fits run one after another."""
    meshes = write_meshes(tmp_path / "shapes")
    (tmp_path / "shapes" / "empty.obj").write_text("# no geometry\n")
    common = dict(train={"steps": 3, "progress": False}, task_overrides=SMALL_SDF, device="cpu")
    siren = fit_collection(CollectionRequest(RunRequest("sdf", str(tmp_path / "shapes"), "siren", tmp_path / "s", **common)))
    nglod = fit_collection(CollectionRequest(RunRequest("sdf", str(tmp_path / "shapes"), "nglod", tmp_path / "n", **common)))
    err = capsys.readouterr().err
    assert siren["ok"] == nglod["ok"] == len(meshes) and siren["skipped"] == 1 and "mean_chamfer_l1" in siren
    assert "one after another: the model's" in err and "octree" in err
    assert [e["signals_in_batch"] for e in index_of(tmp_path / "s") if e["status"] == "ok"] == [2, 2]
    assert all((tmp_path / "n" / m.stem / "mesh.ply").is_file() for m in meshes)


def test_two_ranks_write_the_index_of_one_process(folder, tmp_path, capsys):
    argv = ("fit-image", folder, *FAST, "--steps", 6)
    assert run(capsys, *argv, "--out", tmp_path / "one")[0] == 0
    done = torchrun(*argv, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["ok"] == 6  # rank 0 alone prints the summary
    one, two = index_of(tmp_path / "one"), index_of(tmp_path / "two")
    assert [(e["file"], e["status"], Path(e["run_dir"]).name) for e in one] == [
        (e["file"], e["status"], Path(e["run_dir"]).name) for e in two
    ]
    for a, b in zip(one, two):
        assert a.get("psnr", 0) == pytest.approx(b.get("psnr", 0), abs=1e-3)
    assert not list((tmp_path / "two").glob(".index-rank*"))  # merged


def _worker_of_rank(rank, marker):
    """The pid of the torchrun worker with RANK=rank whose command line mentions `marker`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in command and f"RANK={rank}".encode() in environ and b"-m" in command:
            if b"torch.distributed.run" not in command:
                return int(pid)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_resume_picks_up_the_signals_of_a_killed_rank(folder, tmp_path, capsys):
    out = tmp_path / "killed"
    argv = ("fit-image", str(folder / "img*.png"), *FAST, "--steps", 1000, "--checkpoint-every", 50, "--eval-every", 0)
    job = torchrun(*argv, "--out", out, background=True)
    victim_run = out / "img1"  # rank 1 fits img1 and img3
    deadline = time.monotonic() + 120
    while RunDirectory(victim_run).latest_checkpoint() is None and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    pid = _worker_of_rank(1, str(out))
    assert RunDirectory(victim_run).latest_checkpoint() is not None and pid is not None, job.communicate()[1][-2000:]
    os.kill(pid, signal.SIGKILL)
    job.communicate(timeout=120)
    assert job.returncode != 0
    killed_at = RunDirectory(victim_run).latest_checkpoint().step
    assert 0 < killed_at < 1000 and not (out / "index.jsonl").exists()
    status, lines, err = run(capsys, "fit-image", str(folder / "img*.png"), "--out", out, "--resume", "--no-progress")
    assert status == 0, err
    entries = index_of(out)
    assert [e["status"] for e in entries] == ["ok"] * 4 and all(e["step"] == 1000 for e in entries), entries
    steps = [json.loads(line)["step"] for line in (victim_run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [s for s, line in zip(steps, (victim_run / "metrics.jsonl").read_text().splitlines()) if '"train"' in line]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 1000  # continued, nothing logged twice


def test_signals_resumed_one_at_a_time_keep_the_collections_model_options(folder, tmp_path, capsys):
    """Signals whose newest checkpoints are at different steps (a rank killed between two signals'
    saves) resume one at a time, with the model options the collection recorded."""
    out = tmp_path / "apart"
    argv = ("fit-image", str(folder / "img*.png"), *FAST, "--steps", 10, "--checkpoint-every", 5, "--keep-checkpoints", 2)
    status, _, err = run(capsys, *argv, "--out", out, "--eval-every", 0)
    assert status == 0, err
    shutil.rmtree(RunDirectory(out / "img1").latest_checkpoint().path)  # img1 back at step 5, the others at 10
    (out / "index.jsonl").unlink()  # as if the ranks had been killed before merging their index lines
    status, lines, err = run(capsys, "fit-image", str(folder / "img*.png"), "--out", out, "--resume", "--no-progress")
    assert status == 0, err
    entries = index_of(out)
    assert [e["status"] for e in entries] == ["ok"] * 4 and all(e["step"] == 10 for e in entries), entries
