"""Bad input to analyze.py (issue 4): each problem is named with its run, unusable runs are listed and left
out, the analysis goes on when enough is left, and earlier output is never overwritten unless asked."""

import csv

import pytest
import torch
from helpers.analysis import run_analysis
from helpers.records import LAYERS, base_hidden, base_labels, planted_sweep, setting, write_run

from instability.analysis.loading import AnalysisError
from instability.records import META_FILE, TENSOR_FILE

FAST = ("layer_trend=false", "failed_runs.enabled=false", "subsampling.enabled=false", "bootstrap.enabled=false",
        "benchmark.enabled=false")


def skipped_rows(out):
    with open(out / "skipped.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def check_skipped(tmp_path, job, words, runs_left):
    """Analyse tmp_path/sweep; the run in job folder `job` must be skipped with a reason containing `words`."""
    result, printed = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    (row,) = [row for row in skipped_rows(tmp_path / "out") if row["run"].endswith(f"/sweep/{job}")]
    for word in words:
        assert word in row["reason"], row
    assert f"sweep/{job}" in printed and words[0] in printed.replace("\n", "")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"sweep/{job}" in summary and words[0] in summary
    assert len(result.settings) == 1 and len(result.settings[0].seeds) == runs_left
    return result


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalysisError, match="no run records under .*empty"):
        run_analysis(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(AnalysisError, match="sweep folder not found: .*nowhere"):
        run_analysis(tmp_path / "nowhere", tmp_path / "out")


def test_no_finished_record_is_an_error(tmp_path):
    for seed in range(2):
        write_run(tmp_path / "sweep" / str(seed), seed, base_labels(), base_hidden(), status="diverged")
    with pytest.raises(AnalysisError, match=r"no finished, usable run record.*sweep/0: run diverged"):
        run_analysis(tmp_path / "sweep", tmp_path / "out")


def test_diverged_run_is_listed_and_left_out(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    write_run(tmp_path / "sweep" / "9", 9, base_labels(), base_hidden(), status="diverged")
    check_skipped(tmp_path, "9", ["run diverged"], 3)


def test_corrupt_tensor_file_is_listed_and_left_out(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    (tmp_path / "sweep" / "1" / "record" / TENSOR_FILE).write_bytes(b"\x00garbage")
    check_skipped(tmp_path, "1", ["corrupt tensor file"], 2)


def test_partial_and_unreadable_records_are_listed(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=4)
    (tmp_path / "sweep" / "2" / "record" / TENSOR_FILE).unlink()
    (tmp_path / "sweep" / "3" / "record" / META_FILE).write_text('{"status": "finis')
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    reasons = {row["run"].rsplit("/", 1)[-1]: row["reason"] for row in skipped_rows(tmp_path / "out")}
    assert "run with outputs but without" in reasons["2"] and "unreadable record metadata" in reasons["3"]
    assert result.settings[0].seeds == [0, 1]


def test_nan_logits_are_named_and_left_out(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    logits = torch.zeros(40, 2)
    logits[5, 1] = float("nan")
    write_run(tmp_path / "sweep" / "7", 7, base_labels(), base_hidden(), logits=logits)
    check_skipped(tmp_path, "7", ["best/logits holds NaN"], 3)


def test_nan_hidden_states_are_named_and_left_out(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    hidden = base_hidden()
    hidden[LAYERS - 1, 0, 0] = float("inf")
    write_run(tmp_path / "sweep" / "7", 7, base_labels(), hidden)
    check_skipped(tmp_path, "7", ["best/hidden holds NaN or inf"], 3)


def test_different_example_ids_are_named_and_left_out(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    write_run(tmp_path / "sweep" / "7", 7, base_labels(), base_hidden(), example_ids=torch.arange(500, 540))
    check_skipped(tmp_path, "7", ["test half differs", "example ids differ"], 3)


def test_different_test_labels_are_named_and_left_out(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    write_run(tmp_path / "sweep" / "7", 7, base_labels(), base_hidden(), labels=1 - base_labels())
    result = check_skipped(tmp_path, "7", ["test half differs", "test labels differ"], 3)
    assert 7 not in result.settings[0].seeds


def test_setting_with_too_few_runs_is_reported_and_the_rest_analysed(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    write_run(tmp_path / "sweep" / "9", 0, base_labels(), base_hidden(), setting_dict=setting(lr=1e-3))
    result, printed = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    assert [r.name for r in result.settings] == ["rte-synthetic-none-lr2e-05-ep1"]
    (row,) = skipped_rows(tmp_path / "out")
    assert row["setting"] == "rte-synthetic-none-lr0.001-ep1" and "1 usable run(s)" in row["reason"]
    assert "1 usable run(s)" in printed


def test_nothing_left_is_an_error(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=2)
    (tmp_path / "sweep" / "1" / "record" / TENSOR_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(AnalysisError, match="no setting has 2 or more usable runs"):
        run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)


def test_earlier_output_is_kept_unless_overwrite(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST, "figures=true")
    before = (tmp_path / "out" / "measures.csv").read_text()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(AnalysisError, match=f"output folder {tmp_path / 'out'} already holds"):
        run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    assert (tmp_path / "out" / "measures.csv").read_text() == before
    run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST, "overwrite=true", "figures=false")
    stale = tmp_path / "out" / "figures" / "rte-synthetic-none-lr2e-05-ep1" / "layers.png"
    assert not stale.exists()  # stale: removed
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # not ours: kept
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_default_output_folder_is_inside_the_sweep(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=2)
    from helpers.analysis import analysis_config

    from instability.analysis.pipeline import run

    config = analysis_config(tmp_path / "sweep", tmp_path / "ignored", *FAST, "out_dir=null")
    result = run(config)
    assert result.out_dir == tmp_path / "sweep" / "analysis" and (result.out_dir / "summary.md").is_file()


def test_wandb_run_is_finished_even_on_error(tmp_path, monkeypatch):
    from instability.analysis import pipeline, wandb_report

    finished = []

    class FakeRun:
        def finish(self, exit_code=0):
            finished.append(exit_code)

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    planted_sweep(tmp_path / "sweep", runs=2)
    monkeypatch.setattr(wandb_report, "start", lambda *args: FakeRun())
    monkeypatch.setattr(pipeline, "analyse_setting", explode)
    with pytest.raises(RuntimeError, match="boom"):
        run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    assert finished == [1]
