"""nfield.outputs: every command that writes checks its destination first, and says in one line why
it cannot write there (before training or rendering, not after)."""

import os

import pytest

from nfield.cli import main
from nfield.errors import NfieldError
from nfield.outputs import IMAGE_SUFFIXES, check_writable_directory, writable_directory, writable_file
from tests.test_stacked import write_images, write_meshes


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def unwritable_places(tmp_path):
    """(a path under a file, a path in /proc, a read-only folder when this user cannot write it)."""
    (tmp_path / "a_file").write_text("x")
    places = [tmp_path / "a_file" / "out", "/proc/nfield-out"]
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if not os.access(read_only, os.W_OK):  # root writes anywhere
        places.append(read_only / "out")
    return places


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny image run and a tiny SDF run to render and mesh."""
    root = tmp_path_factory.mktemp("outputs")
    (image,) = write_images(root / "img", 1)
    (mesh, _) = write_meshes(root / "mesh")
    assert main(["fit-image", str(image), "--model", "relu", "--steps", "2", "--out", str(root / "image"), "--no-progress"]) == 0
    sdf_flags = ["--model", "relu-pe", "--steps", "2", "--no-progress", "--batch-size", "256", "--pool-size", "1024"]
    sdf_flags += ["--mesh-resolution", "16", "--metric-points", "512", "--n-neurons", "16", "--n-hidden-layers", "1"]
    assert main(["fit-sdf", str(mesh), *sdf_flags, "--out", str(root / "sdf")]) == 0
    return root, image, mesh


def test_training_and_rendering_refuse_an_unwritable_out_in_one_line(runs, tmp_path, capsys):
    root, image, mesh = runs
    for place in unwritable_places(tmp_path):
        commands = [
            ("fit-image", image, "--steps", 2, "--out", place),
            ("fit-sdf", mesh, "--steps", 2, "--out", place),
            ("train-nerf", tmp_path / "no-scene", "--out", place),
            ("fit-image", image.parent, "--steps", 2, "--out", place),  # a collection
            ("render-image", root / "image", "--out", f"{place}.png"),
            ("mesh", root / "sdf", "--resolution", 16, "--out", f"{place}.ply"),
        ]
        for argv in commands:
            status, _, err = run(capsys, *argv, "--no-progress")
            lines = err.strip().splitlines()
            assert status == 1 and len(lines) == 1 and "Traceback" not in err, (argv, err)
            assert "cannot write there" in lines[0] or "is not a directory" in lines[0], (argv, err)


def test_outputs_of_a_type_the_command_cannot_write_are_refused_before_the_work(runs, tmp_path, capsys):
    root, _, _ = runs
    status, _, err = run(capsys, "render-image", root / "image", "--out", tmp_path / "x.xyz")
    assert status == 1 and "cannot write an image as '.xyz'" in err and not (tmp_path / "x.xyz").exists()
    status, _, err = run(capsys, "mesh", root / "sdf", "--out", tmp_path / "m.txt")
    assert status == 1 and "cannot write a mesh as '.txt'" in err
    for name in ("x.png", "x.tif"):  # a folder that does not exist yet is made
        status, _, err = run(capsys, "render-image", root / "image", "--out", tmp_path / "new" / name, "--no-progress")
        assert status == 0 and (tmp_path / "new" / name).is_file(), err
    for scale in ("inf", "nan", "-1"):
        status, _, err = run(capsys, "render-image", root / "image", "--scale", scale)
        assert status == 1 and "--scale must be a positive finite number" in err, scale


def test_render_image_is_limited_by_the_free_memory(runs, capsys, monkeypatch):
    root, _, _ = runs
    monkeypatch.setattr("nfield.runs.views.available_memory_bytes", lambda: 12 * 10_000)  # 10,000 values fit
    status, _, err = run(capsys, "render-image", root / "image", "--scale", 8)
    assert status == 1 and "GiB of free memory" in err and "the largest --scale for this run is 3.6" in err


def test_the_checks_themselves(tmp_path):
    assert check_writable_directory(tmp_path / "new" / "deeper") and not (tmp_path / "new").exists()  # creates nothing
    assert writable_directory(tmp_path / "new" / "deeper").is_dir()
    assert not list((tmp_path / "new" / "deeper").iterdir())  # the probe leaves nothing behind
    assert writable_file(tmp_path / "a" / "x.PNG", IMAGE_SUFFIXES, "an image") and not (tmp_path / "a").exists()
    (tmp_path / "b.png").mkdir()
    with pytest.raises(NfieldError, match="is a directory"):
        writable_file(tmp_path / "b.png", IMAGE_SUFFIXES, "an image")
    with pytest.raises(NfieldError, match="without an extension"):
        writable_file(tmp_path / "c", IMAGE_SUFFIXES, "an image")


def test_atomic_writes_leave_the_whole_file_or_the_old_one_and_no_temporary(tmp_path):
    from nfield.outputs import atomic_path, write_atomic

    target = tmp_path / "new" / "config.json"
    assert write_atomic(target, '{"a": 1}\n') == target and target.read_text() == '{"a": 1}\n'  # folder made
    write_atomic(target, b"\x00\x01", durable=True)
    assert target.read_bytes() == b"\x00\x01"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("the writer failed half-way")
    assert target.read_bytes() == b"\x00\x01"  # the file from before, untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.json"]  # no temporary left
