"""Robustness of analyze (issue 15): record text with rich markup, option checks at start-up, reruns after a failed
analysis, unwritable output folders, and a memory budget for loading."""

import json
import os

import pytest
from helpers.analysis import FAST, run_analysis
from helpers.records import planted_sweep, setting

from instability.analysis import pipeline
from instability.analysis.loading import AnalysisError
from instability.records import META_FILE


def test_markup_in_record_text_is_printed_literally(tmp_path):
    planted_sweep(tmp_path / "sweep" / "[bold]", runs=2, setting_dict=setting(model="[/bold]"))
    planted_sweep(tmp_path / "sweep" / "job[/red]", runs=1, setting_dict=setting(model="[/bold]"), first_job=5)
    broken = tmp_path / "sweep" / "job[/red]" / "5" / "record" / META_FILE
    broken.write_text(json.dumps({**json.loads(broken.read_text()), "status": "[/red]"}))
    result, printed = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    assert result.settings[0].name == "rte-[/bold]-none-lr2e-05-ep1"
    flat = printed.replace("\n", "")
    assert "rte-[/bold]-none-lr2e-05-ep1" in flat and "unknown status '[/red]'" in flat and "job[/red]" in flat


@pytest.mark.parametrize("override, option", [
    ("measures.kappa_chance=foo", "measures.kappa_chance='foo'"),
    ("bootstrap.replicates=0", "bootstrap.replicates=0"),
    ("subsampling.fractions=[2.0]", "subsampling.fractions=[2.0]"),
    ("bootstrap.confidence=1.5", "bootstrap.confidence=1.5"),
    ("checkpoint=fianl", "checkpoint='fianl'"),
    ("bootstrap.measures=[SD,I_foo]", "bootstrap.measures=['SD', 'I_foo']"),
])
def test_invalid_options_are_named_before_anything_is_read(tmp_path, override, option):
    planted_sweep(tmp_path / "sweep", runs=2)
    with pytest.raises(AnalysisError, match="invalid analysis option") as error:
        run_analysis(tmp_path / "sweep", tmp_path / "out", override)
    assert option in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_failed_analysis_does_not_block_its_rerun(tmp_path, monkeypatch):
    planted_sweep(tmp_path / "sweep", runs=2)
    real = pipeline.analyse_setting

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "analyse_setting", explode)
    with pytest.raises(RuntimeError, match="boom"):
        run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST, "wandb.mode=offline")
    monkeypatch.setattr(pipeline, "analyse_setting", real)
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST, "wandb.mode=offline")  # no overwrite=true
    assert (tmp_path / "out" / "summary.md").is_file() and len(result.settings) == 1


def test_leftover_wandb_files_alone_do_not_count_as_an_earlier_analysis(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=2)
    (tmp_path / "out" / "wandb" / "offline-run-x").mkdir(parents=True)
    run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    assert (tmp_path / "out" / "measures.csv").is_file()


def test_an_unwritable_output_folder_fails_before_any_measure(tmp_path, monkeypatch):
    planted_sweep(tmp_path / "sweep", runs=2)
    monkeypatch.setattr(pipeline, "analyse_setting", lambda *args: pytest.fail("measures computed"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(AnalysisError, match="cannot write into the output folder .*file/out"):
        run_analysis(tmp_path / "sweep", tmp_path / "file" / "out", *FAST)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_any_measure(tmp_path, monkeypatch):
    planted_sweep(tmp_path / "sweep", runs=2)
    monkeypatch.setattr(pipeline, "analyse_setting", lambda *args: pytest.fail("measures computed"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o555)
    try:
        with pytest.raises(AnalysisError, match="cannot write into the output folder"):
            run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    finally:
        (tmp_path / "out").chmod(0o755)


def test_loads_over_the_memory_budget_are_refused_naming_the_run(tmp_path, monkeypatch):
    planted_sweep(tmp_path / "sweep", runs=3)  # 3 runs x 4 x 40 x 16 float32 = 30720 bytes of hidden states
    monkeypatch.setattr(pipeline, "load_setting", lambda *args: pytest.fail("loaded"))
    with pytest.raises(AnalysisError, match=r"memory.max_gib=2e-05 \(largest: run .*sweep/\d, hidden states "
                                            r"\[4, 40, 16\]"):
        run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST, "memory.max_gib=0.00002")
    monkeypatch.undo()
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST, "memory.max_gib=0.0001")
    assert len(result.settings[0].seeds) == 3
