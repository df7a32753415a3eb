"""Consistency analyses (issue 6): benchmark rankings with Kendall tau-b, and SD vs agreement."""

import csv

import numpy as np
import pytest
from helpers.analysis import run_analysis
from helpers.records import LAYERS, planted_sweep, setting
from scipy import stats

from instability.analysis.consistency import SettingPoint, benchmark, sd_vs_agreement
from instability.analysis.setting_measures import HEADLINE

IMMS = ("none", "mixout", "llrd", "reinit", "wd_pre")


def point(name, model="bert", task="rte", **values):
    numbers = {label: values.get(label, 0.0) for label in HEADLINE}
    return SettingPoint(name, setting(model=model, task=task, imm=name), numbers)


def test_same_ordering_gives_tau_one_and_a_reversed_measure_minus_one():
    points = [point(name, **{label: (5 - k if label == "SD" else k + 1.0) for label in HEADLINE})
              for k, name in enumerate(IMMS)]
    results, ranks, notes = benchmark(points, ["task", "model"])
    assert not notes and len(results) == 1
    tau = results[0].tau
    sd = HEADLINE.index("SD")
    for i, label in enumerate(HEADLINE):
        if label != "SD":
            assert tau[sd, i] == pytest.approx(-1.0)
            assert all(tau[i, j] == pytest.approx(1.0) for j, other in enumerate(HEADLINE) if other != "SD")
    assert [row["rank"] for row in ranks if row["measure"] == "I_pwd"] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_tau_with_five_settings_is_a_multiple_of_a_fifth_and_matches_scipy():
    rng = np.random.default_rng(3)
    table = rng.permutation(np.tile(np.arange(5.0), (len(HEADLINE), 1)).T)  # distinct values per measure
    table = np.stack([rng.permutation(column) for column in table.T], 1)
    points = [point(name, **dict(zip(HEADLINE, row))) for name, row in zip(IMMS, table)]
    (result,), _, _ = benchmark(points, ["task", "model"])
    for i in range(len(HEADLINE)):
        for j in range(len(HEADLINE)):
            assert result.tau[i, j] == pytest.approx(stats.kendalltau(table[:, i], table[:, j]).statistic)
            assert result.tau[i, j] * 5 == pytest.approx(round(result.tau[i, j] * 5))


def test_benchmark_groups_by_task_and_model_and_needs_two_settings():
    points = [point("none"), point("mixout"), point("none", model="roberta")]
    results, _, notes = benchmark(points, ["task", "model"])
    assert [r.group for r in results] == ["rte / bert"] and results[0].settings == ["none", "mixout"]
    assert len(notes) == 1 and "rte / roberta" in notes[0]


def test_sd_vs_agreement_recovers_a_planted_relation():
    sds = [0.01, 0.02, 0.05, 0.03, 0.08]
    points = []
    for name, sd in zip(IMMS, sds):
        agreement = {label: 0.1 + (k + 1) * sd for k, label in enumerate(HEADLINE)}  # rises with SD for every measure
        points.append(SettingPoint(name, setting(imm=name), {label: sd for label in HEADLINE}, agreement))
    rows, results, notes = sd_vs_agreement(points, ["model"])
    assert not notes and len(results) == 1 and len(rows) == 5 * len(HEADLINE)
    assert results[0]["pearson_r"] == pytest.approx(1.0) and results[0]["p_value"] < 1e-6
    z = [row["z_agreement"] for row in rows if row["measure"] == "SD"]
    assert np.mean(z) == pytest.approx(0.0, abs=1e-12) and np.std(z) == pytest.approx(1.0)
    _, _, notes = sd_vs_agreement(points[:2], ["model"])
    assert "needs at least 3" in notes[0]


def test_benchmark_and_sd_vs_agreement_end_to_end(tmp_path):
    # five settings: flips and noise grow with k (every finer measure ranks them 1..5); SD shrinks with k; flips differ
    # between runs, so no measure is constant across bootstrap replicates
    for k, name in enumerate(IMMS):
        spread = [0.3 - 0.05 * k, 0.0, -(0.3 - 0.05 * k), 0.1]
        planted_sweep(tmp_path / name, runs=4, flips=[k + 1, k + 2, k + 1, k + 3],
                      scales=[[0.1 * (k + 1)] * LAYERS] * 4, scores=[0.5 + s for s in spread],
                      setting_dict=setting(imm=name))
    result, text = run_analysis(tmp_path, tmp_path / "out", "layer_trend=false", "failed_runs.enabled=false",
                                "subsampling.enabled=false", "bootstrap.replicates=30", "figures=true")
    assert len(result.settings) == 5
    with open(tmp_path / "out" / "benchmark_tau.csv", newline="") as handle:
        taus = {(row["measure_a"], row["measure_b"]): float(row["kendall_tau_b"]) for row in csv.DictReader(handle)}
    assert taus[("SD", "I_pwd")] == pytest.approx(-1.0)
    assert taus[("I_pwd", "CKA")] == pytest.approx(1.0) and taus[("OP", "CKA")] == pytest.approx(1.0)
    (figure,) = (tmp_path / "out" / "figures").glob("benchmark_rte_synthetic_*.png")  # grouped by task, model, lr
    assert figure.stat().st_size > 0
    with open(tmp_path / "out" / "sd_vs_agreement.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["group"] == "synthetic" and int(row["settings"]) == 5
    assert (tmp_path / "out" / "figures" / "sd_vs_agreement_synthetic.png").stat().st_size > 0
    assert "## Benchmark" in (tmp_path / "out" / "summary.md").read_text()
