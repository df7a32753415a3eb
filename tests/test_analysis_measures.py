"""analyze.py's per-setting measures on synthetic records with planted structure (issue 4)."""

import csv
import math

import numpy as np
import pytest
import torch
from helpers.analysis import run_analysis
from helpers.records import (
    EXAMPLES,
    LAYERS,
    base_hidden,
    base_labels,
    flipped,
    noisy,
    planted_sweep,
    setting,
    write_run,
)
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from instability.analysis.loading import group_settings, load_setting, record_paths
from instability.analysis.setting_measures import ALL, REPRESENTATION

FAST = ("layer_trend=false", "failed_runs.enabled=false", "subsampling.enabled=false", "bootstrap.enabled=false",
        "benchmark.enabled=false")


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def values_of(rows, setting_name=None):
    """{(measure, layer or None): value} from measures.csv rows."""
    return {(row["measure"], int(row["layer"]) if row["layer"] else None): float(row["value"])
            for row in rows if setting_name is None or row["setting"] == setting_name}


def test_identical_runs_have_zero_instability(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=4, flips=[0] * 4, scales=[[0.0] * LAYERS] * 4)
    run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    values = values_of(read_csv(tmp_path / "out" / "measures.csv"))
    assert values[("mean", None)] == 1.0
    for label in ("SD", "I_pwd", "I_kappa", "I_jsd"):
        assert values[(label, None)] == pytest.approx(0.0, abs=1e-12), label
    for label in REPRESENTATION:
        for layer in range(1, LAYERS + 1):
            assert values[(label, layer)] == pytest.approx(0.0, abs=1e-6), (label, layer)


def test_planted_disagreement_is_recovered(tmp_path):
    flips = [1, 2, 3, 4, 5, 1]
    planted_sweep(tmp_path / "sweep", runs=6, flips=flips)
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    values = values_of(read_csv(tmp_path / "out" / "measures.csv"))
    # disjoint flip blocks: runs i and j disagree on k_i + k_j examples
    assert values[("I_pwd", None)] == pytest.approx(2 * np.mean(flips) / EXAMPLES, abs=1e-12)
    predictions = torch.stack([flipped(base_labels(), sum(flips[:i]), k) for i, k in enumerate(flips)])
    table, _ = aggregate_raters(predictions.T.numpy())
    assert values[("I_kappa", None)] == pytest.approx(1 - fleiss_kappa(table), abs=1e-10)
    scores = [1 - k / EXAMPLES for k in flips]
    assert values[("SD", None)] == pytest.approx(np.std(scores), abs=1e-7)
    assert values[("mean", None)] == pytest.approx(np.mean(scores), abs=1e-7)
    assert 0 < values[("I_jsd", None)] <= math.log(2)
    assert result.settings[0].seeds == list(range(6))


def test_measures_csv_has_a_row_per_measure_and_layer_and_setting_columns(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST)
    rows = read_csv(tmp_path / "out" / "measures.csv")
    assert len(rows) == 5 + len(REPRESENTATION) * LAYERS
    assert {row["measure"] for row in rows} == set(ALL)
    for label in REPRESENTATION:
        assert sorted(int(row["layer"]) for row in rows if row["measure"] == label) == list(range(1, LAYERS + 1))
    first = rows[0]
    assert (first["task"], first["model"], first["imm"], first["lr"], first["checkpoint"], first["runs"]) == \
        ("rte", "synthetic", "none", "2e-05", "best", "3")
    # representation distances grow with depth (noise scale grows with depth)
    for label in REPRESENTATION:
        curve = [float(row["value"]) for row in rows if row["measure"] == label]
        assert curve == sorted(curve), label


def test_runs_are_grouped_by_setting_dict_not_by_folder(tmp_path):
    first, second = setting(), setting(imm="mixout", **{"imm.p": 0.1})
    # two settings interleaved in one folder, and one setting's runs spread over two sweep folders
    planted_sweep(tmp_path / "a", runs=3, setting_dict=first)
    planted_sweep(tmp_path / "a", runs=2, setting_dict=second, first_job=10)
    planted_sweep(tmp_path / "b" / "deeper", runs=2, setting_dict=second, first_job=20)
    settings, skipped = group_settings(record_paths([tmp_path / "a", tmp_path / "b"]))
    sizes = {runs.name: len(runs.records) for runs in settings}
    assert sizes == {"rte-synthetic-none-lr2e-05-ep1": 3, "rte-synthetic-mixout0.1-lr2e-05-ep1": 2}
    # the second setting has seeds 0, 1 in both folders: later duplicates are reported, not silently dropped
    assert len(skipped) == 2 and all("appears twice" in s.reason for s in skipped)


def test_settings_that_share_a_name_stay_apart(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=2, setting_dict=setting())
    planted_sweep(tmp_path / "sweep", runs=2, setting_dict=setting(max_epochs=3), first_job=10)
    settings, _ = group_settings(record_paths([tmp_path / "sweep"]))
    assert len(settings) == 2 and len({runs.name for runs in settings}) == 2


def test_checkpoint_override_uses_the_other_outputs(tmp_path):
    states = base_hidden()
    for seed in range(3):
        best = flipped(base_labels(), 0, 0)
        final = flipped(base_labels(), 4 * seed, 4)
        final_states = noisy(states, [0.5] * LAYERS, seed)
        write_run(tmp_path / "sweep" / str(seed), seed, best, states, final=(final, final_states))
    settings, _ = group_settings(record_paths([tmp_path / "sweep"]))
    best_data, _ = load_setting(settings[0])
    settings, _ = group_settings(record_paths([tmp_path / "sweep"]), checkpoint="final")
    final_data, _ = load_setting(settings[0])
    assert best_data.checkpoint == "best" and final_data.checkpoint == "final"
    assert bool((best_data.predictions == best_data.predictions[0]).all())
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out", "checkpoint=final", *FAST)
    assert float(result.settings[0].values["I_pwd"]) == pytest.approx(2 * 4 / EXAMPLES)


def test_measure_options_reach_the_measures(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=4, flips=[1, 2, 3, 4])
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST, "measures.kappa_chance=released",
                             "measures.cka_debiased=false")
    values = result.settings[0].values
    assert float(values["I_kappa"]) == pytest.approx(float(values["I_pwd"]) * EXAMPLES / (EXAMPLES - 1))
    assert "NOT textbook" in (tmp_path / "out" / "summary.md").read_text()
    default, _ = run_analysis(tmp_path / "sweep", tmp_path / "default", *FAST)
    assert not np.allclose(values["CKA"], default.settings[0].values["CKA"])
