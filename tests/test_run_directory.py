"""The run directory's rules (new, resume, overwrite, what a resume may not change) for runs and
collections alike, and the one reader of metrics.jsonl, whole and as it grows."""

import json

import pytest

from nfield.errors import NfieldError
from nfield.run_directory import (
    COLLECTION_FILE,
    MetricsReader,
    RunDirectory,
    append_metrics,
    read_records,
    truncate_metrics,
)


def test_a_fresh_start_makes_the_directory_and_refuses_to_clobber_a_run(tmp_path):
    run = RunDirectory(tmp_path / "runs" / "a")
    run.prepare(resume=False, overwrite=False)
    assert run.path.is_dir() and not run.is_run()
    run.write_config({"task": "image", "model": "siren"})
    assert run.is_run() and run.read_config() == {"task": "image", "model": "siren"}
    with pytest.raises(NfieldError, match="already holds a run; pass --resume to continue it or --overwrite to replace it"):
        run.prepare(resume=False, overwrite=False)
    (run.path / "reconstruction.png").write_bytes(b"x")
    run.prepare(resume=False, overwrite=True)  # nfield's own run: replaced
    assert run.path.is_dir() and not any(run.path.iterdir())


def test_overwrite_never_deletes_a_folder_nfield_did_not_write(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    for marker, what in (("config.json", "run"), (COLLECTION_FILE, "collection")):
        with pytest.raises(NfieldError, match=f"is a non-empty directory that is not an nfield {what}; refusing to delete it"):
            RunDirectory(tmp_path / "photos").prepare(resume=False, overwrite=True, marker=marker)
    assert (tmp_path / "photos" / "holiday.jpg").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NfieldError, match="exists and is not a directory"):
        RunDirectory(tmp_path / "file").prepare(resume=False, overwrite=False)


def test_a_resume_needs_a_run_or_a_collection_and_not_both_flags(tmp_path):
    with pytest.raises(NfieldError, match="no such run directory"):
        RunDirectory(tmp_path / "none").prepare(resume=True, overwrite=False)
    with pytest.raises(NfieldError, match="holds no collection to resume"):
        RunDirectory(tmp_path).prepare(resume=True, overwrite=False, marker=COLLECTION_FILE)
    with pytest.raises(NfieldError, match="contradict each other"):
        RunDirectory(tmp_path).prepare(resume=True, overwrite=True)
    with pytest.raises(NfieldError, match="the run has no checkpoint yet"):
        RunDirectory(tmp_path).require_checkpoint()


def test_a_resume_refuses_a_change_of_kind_model_overrides_or_seed_in_the_same_words(tmp_path):
    recorded = {"kind": "image", "model": "siren", "seed": 3}
    run, collection = RunDirectory(tmp_path / "r"), RunDirectory(tmp_path / "c")
    run.refuse_changes(recorded, {"kind": "image", "model": None, "seed": 3})  # nothing changes: no error
    cases = [
        ({"kind": "nerf"}, "is a 'image' run, not a nerf run", "is a collection of 'image' runs, not nerf"),
        ({"kind": "image", "model": "hash"}, "was trained with --model siren", "was fitted with --model siren"),
        ({"kind": "image", "overrides": {"w0": 1.0}}, "start a new run to change the model", "start a new collection"),
        ({"kind": "image", "seed": 4}, "was trained with --seed 3", "was fitted with --seed 3"),
    ]
    for asked, for_run, for_collection in cases:
        with pytest.raises(NfieldError, match=for_run):
            run.refuse_changes(recorded, asked)
        with pytest.raises(NfieldError, match=for_collection):
            collection.refuse_changes(recorded, asked, what="collection")


def test_unreadable_configs_say_so_in_one_line(tmp_path):
    run = RunDirectory(tmp_path)
    with pytest.raises(NfieldError, match="not an nfield run directory"):
        run.read_config()
    run.config.write_text("{not json")
    with pytest.raises(NfieldError, match="unreadable"):
        run.read_config()
    run.config.write_text(json.dumps({"model": "siren"}))
    with pytest.raises(NfieldError, match="no 'task' key"):
        run.read_config()


def test_the_metrics_reader_follows_a_growing_file_and_starts_over_when_it_is_rewritten(tmp_path):
    path = tmp_path / "metrics.jsonl"
    reader = MetricsReader(path)
    assert reader.read_new() == ([], False)  # no file yet
    for step in (1, 2):
        append_metrics(path, {"step": step, "kind": "train", "loss": 1.0 / step})
    with open(path, "a") as f:
        f.write('{"step": 3, "kind": "tr')  # a line being written
    records, restarted = reader.read_new()
    assert [r["step"] for r in records] == [1, 2] and not restarted
    with open(path, "a") as f:
        f.write('ain", "loss": 0.3}\nnot json\n')
    assert [r["step"] for r in reader.read_new()[0]] == [3]  # the finished line; the corrupt one skipped
    assert reader.read_new() == ([], False)
    truncate_metrics(path, 1)  # a resume from step 1's checkpoint
    assert [r["step"] for r in read_records(path)] == [1]
    append_metrics(path, {"step": 2, "kind": "train", "loss": 0.4})
    records, restarted = reader.read_new()
    assert restarted and [r["step"] for r in records] == [1, 2]
