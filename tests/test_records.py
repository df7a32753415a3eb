"""Run records: one builder, atomic writes under a lock, a reader that validates every field it uses."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers.config import REPO
from helpers.records import base_hidden, base_labels, setting, write_run

from instability import atomic, records
from instability.records import Halves, Outputs, RecordError, build_record, find_records, read_record, write_record


def diverged(seed: int = 1, **overrides) -> tuple[dict, dict]:
    halves = Halves(torch.arange(4), torch.tensor([0, 1, 1, 1]), torch.arange(2), torch.tensor([0, 1]))
    return build_record(seed=seed, setting=setting(**overrides), metrics=("accuracy",), halves=halves, outputs=None,
                        status="diverged")


def edit_meta(job, change) -> None:
    path = job / "record" / "record.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_killed_mid_write_leaves_no_valid_record(tmp_path):
    job = tmp_path / "job"
    code = f"""
import os, instability.records as records
from helpers.records import base_hidden, base_labels, write_run
def dying(data, handle):
    handle.write('{{"schema_version": 2, "sta')
    handle.flush()
    os._exit(9)
records.dump_json = dying
write_run({str(job)!r}, 0, base_labels(), base_hidden())
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"})
    assert result.returncode == 9
    assert job.is_dir() and find_records([job]) == []
    with pytest.raises(RecordError, match="no record.json"):
        read_record(job)


def test_rewrite_of_the_same_run_replaces_the_record_whole(tmp_path):
    write_run(tmp_path, 0, base_labels(), base_hidden(), status="diverged")
    write_run(tmp_path, 0, base_labels(), base_hidden())
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["record"]
    assert read_record(tmp_path).finished


@pytest.mark.parametrize("other", [{"seed": 1}, {"lr": 1e-3}, {"module.dropout": 0.0}])
def test_a_record_of_another_run_is_never_replaced(tmp_path, other):
    write_run(tmp_path, 0, base_labels(), base_hidden())
    before = (tmp_path / "record" / "record.json").read_text()
    seed = other.pop("seed", 0)
    with pytest.raises(RecordError, match="holds the record of another run"):
        write_run(tmp_path, seed, base_labels(), base_hidden(), setting_dict=setting(**other))
    assert (tmp_path / "record" / "record.json").read_text() == before


def test_best_and_final_may_be_the_same_tensors(tmp_path):
    """A run that never validated keeps its final outputs as the best ones: stored as two copies."""
    logits, hidden = torch.randn(4, 2), torch.randn(2, 4, 3)
    outputs = Outputs(logits, hidden, torch.randn(2, 2))
    halves = Halves(torch.arange(4), torch.tensor([0, 1, 1, 1]), torch.arange(2), torch.tensor([0, 1]))
    meta, tensors = build_record(seed=0, setting=setting(), metrics=("accuracy",), halves=halves,
                                 outputs={"best": outputs, "final": outputs})
    write_record(tmp_path, meta, tensors)
    record = read_record(tmp_path)
    assert torch.equal(record.hidden("best"), record.hidden("final"))
    assert meta["majority"] == {"label": 1, "baseline": pytest.approx(0.75)}


def test_failure_flags_per_checkpoint_against_the_test_half_majority():
    labels = torch.tensor([1, 1, 1, 0])  # majority 1: baseline accuracy 0.75
    halves = Halves(torch.arange(4), labels, torch.arange(2), torch.tensor([0, 1]))
    good = torch.nn.functional.one_hot(labels, 2).float()  # accuracy 1.0
    collapsed = torch.tensor([[0.0, 1.0]] * 4)  # always the majority class: at the baseline, so failed
    hidden = torch.zeros(1, 4, 2)
    meta, _ = build_record(seed=0, setting=setting(), metrics=("accuracy",), halves=halves,
                           outputs={"best": Outputs(good, hidden, torch.zeros(2, 2)),
                                    "final": Outputs(collapsed, hidden, torch.zeros(2, 2))})
    assert meta["failed"] == {"best": False, "final": True}
    assert diverged()[0]["failed"] == {"best": True, "final": True}


def test_records_and_json_get_ordinary_permissions(tmp_path):
    """tempfile makes private files (0600/0700); records and reports must be readable like any other file."""
    write_record(tmp_path, *diverged())
    atomic.write_json(tmp_path / "report.json", {"a": 1})
    (tmp_path / "plain").touch()
    (tmp_path / "plain_dir").mkdir()
    assert (tmp_path / "record").stat().st_mode & 0o777 == (tmp_path / "plain_dir").stat().st_mode & 0o777
    for made in (tmp_path / "record" / "record.json", tmp_path / "report.json"):
        assert made.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_an_older_schema_gets_a_clear_message(tmp_path):
    write_record(tmp_path, *diverged())
    edit_meta(tmp_path, lambda meta: meta.update(schema_version=1))
    with pytest.raises(RecordError, match=r"schema version 1; this release reads version 2"):
        read_record(tmp_path)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(seed="abc"), "seed is 'abc'"),
    (lambda m: m.update(seed=True), "seed is True"),
    (lambda m: m["setting"].update({"module.lr": "fast"}), "setting lr is 'fast'"),
    (lambda m: m.update(setting=[1, 2]), "setting is"),
    (lambda m: m["setting"].update({"measure_checkpoint": "bets"}), "measure_checkpoint is 'bets'"),
    (lambda m: m.update(failed={"best": "no"}), "failed must hold"),
    (lambda m: m["setting"].update({"module.dropout": 0.5}), "setting_id does not match"),
    (lambda m: m.update(status="[/red]"), r"unknown status '\[/red\]'"),
])
def test_wrongly_typed_fields_are_refused_naming_the_file(tmp_path, change, message):
    write_run(tmp_path, 0, base_labels(), base_hidden())
    edit_meta(tmp_path, change)
    with pytest.raises(RecordError, match=f"{tmp_path}.*{message}"):
        read_record(tmp_path)


def test_tensor_shapes_must_match_the_metadata_before_any_data_is_read(tmp_path):
    write_run(tmp_path, 0, base_labels(), base_hidden())
    edit_meta(tmp_path, lambda meta: meta["shapes"].update(dim=10**6))
    with pytest.raises(RecordError, match=r"best/hidden has shape \[4, 40, 16\], expected \[4, 40, 1000000\]"):
        read_record(tmp_path)


def test_full_disk_gives_a_clear_error_and_keeps_the_earlier_record(tmp_path, monkeypatch):
    import errno

    write_run(tmp_path, 0, base_labels(), base_hidden())
    before = (tmp_path / "record" / "record.json").read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records, "save_file", full)
    with pytest.raises(OSError, match=f"{tmp_path}.*No space left"):
        write_run(tmp_path, 0, base_labels(), base_hidden())
    assert (tmp_path / "record" / "record.json").read_text() == before and read_record(tmp_path).finished
    assert not list(tmp_path.glob(".record-*")), "the partial write was cleaned up"
