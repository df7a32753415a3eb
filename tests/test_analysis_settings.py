"""Settings in the analysis (issue 14): grouped by setting_id, named by the keys that differ, columns from the flat
setting keys, groupings through setting keys or aliases, and stopped runs left out unless asked."""

import csv

from helpers.analysis import FAST, run_analysis
from helpers.records import base_hidden, base_labels, flipped, planted_sweep, setting, write_run

from instability.analysis.loading import group_settings, record_paths
from instability.setting import ALIASES, setting_id


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_settings_are_keyed_by_id_and_named_by_the_keys_that_differ(tmp_path):
    small, large = setting(batch_size=16), setting(batch_size=32)
    planted_sweep(tmp_path / "sweep", runs=2, setting_dict=small)
    planted_sweep(tmp_path / "sweep", runs=3, setting_dict=large, first_job=10)
    settings, skipped = group_settings(record_paths([tmp_path / "sweep"]))
    assert not skipped
    by_id = {runs.key: runs for runs in settings}
    assert set(by_id) == {setting_id(small), setting_id(large)}
    assert len(by_id[setting_id(large)].records) == 3
    assert by_id[setting_id(small)].name == "rte-synthetic-none-lr2e-05-ep1-data.batch_size=16"
    assert by_id[setting_id(large)].name == "rte-synthetic-none-lr2e-05-ep1-data.batch_size=32"


def test_measures_csv_columns_come_from_the_flat_setting_aliases_first(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=2, setting_dict=setting(imm="mixout", **{"imm.p": 0.1}))
    run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    with open(tmp_path / "out" / "measures.csv", newline="") as handle:
        header = next(csv.reader(handle))
    aliases = list(ALIASES)
    assert header[:2 + len(aliases)] == ["setting", "setting_id", *aliases]
    assert "imm.p" in header and "imm._target_" in header and "module.lr" not in header  # the alias holds it
    row = read_csv(tmp_path / "out" / "measures.csv")[0]
    assert (row["imm"], row["imm.p"], row["lr"], row["setting_id"]) == \
        ("mixout", "0.1", "2e-05", setting_id(setting(imm="mixout", **{"imm.p": 0.1})))


def test_benchmark_groups_by_dotted_keys_as_by_aliases(tmp_path):
    for k, imm in enumerate(("none", "mixout", "llrd")):
        planted_sweep(tmp_path / imm, runs=3, flips=[k + 1, k + 2, k + 3], setting_dict=setting(imm=imm))
    quick = ("layer_trend=false", "failed_runs.enabled=false", "subsampling.enabled=false", "bootstrap.enabled=false")
    dotted, _ = run_analysis(tmp_path, tmp_path / "a", *quick, "benchmark.group_by=[task.name,model.name]")
    aliased, _ = run_analysis(tmp_path, tmp_path / "b", *quick, "benchmark.group_by=[task,model]")
    assert [b.group for b in dotted.benchmarks] == [b.group for b in aliased.benchmarks] == ["rte / synthetic"]
    assert len(dotted.benchmarks[0].settings) == 3


def test_stopped_runs_are_listed_and_left_out_unless_included(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    write_run(tmp_path / "sweep" / "7", 7, flipped(base_labels(), 30, 5), base_hidden(), status="stopped")
    result, printed = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    assert result.settings[0].seeds == [0, 1, 2]
    (row,) = read_csv(tmp_path / "out" / "skipped.csv")
    assert row["seed"] == "7" and "stopped before its planned steps" in row["reason"]
    assert "include_stopped=true" in row["reason"] and "stopped before" in printed
    included, _ = run_analysis(tmp_path / "sweep", tmp_path / "all", *FAST, "include_stopped=true")
    assert included.settings[0].seeds == [0, 1, 2, 7]
    assert read_csv(tmp_path / "all" / "skipped.csv") == []
