"""The analysis computes what the paper computes (issue 13): failure flags of the measured checkpoint, diverged runs
counted as failed, SD vs agreement over the same-lr settings with the six measures, and one self-pair convention
for every measure of a bootstrap replicate (I_kappa included)."""

import csv

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
from scipy import stats
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from instability.analysis.consistency import SettingPoint, sd_vs_agreement
from instability.analysis.loading import group_settings, load_setting, record_paths
from instability.analysis.setting_measures import PAPER, MeasureOptions, pair_matrices
from instability.analysis.validity import bootstrap, generator

ONLY_FAILED = ("layer_trend=false", "subsampling.enabled=false", "bootstrap.enabled=false", "benchmark.enabled=false",
               "failed_runs.permutations=300")
IMMS = ("none", "mixout", "llrd", "reinit", "wd_pre")


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_failed_runs_split_by_the_final_checkpoint_flags_with_diverged_runs_counted(tmp_path):
    # the paper's case: a higher lr, measured at the final checkpoint. There, runs 0, 3, 5, 8 predict the majority
    # class (accuracy 0.5 = the baseline: failed) and their top layers are noisy. At the best checkpoint every run
    # is fine except 1 and 2, which predict one class: best-checkpoint flags would give another split.
    failed_final, failed_best = {0, 3, 5, 8}, {1, 2}
    high_lr = setting(lr=5e-5, checkpoint="final")
    states = base_hidden()
    for seed in range(10):
        good = flipped(base_labels(), 2 * seed, 2)
        constant = torch.zeros(EXAMPLES, dtype=torch.long)
        scales = [0.1, 0.1, 2.0, 4.0] if seed in failed_final else [0.1, 0.1, 0.2, 0.3]
        write_run(tmp_path / "sweep" / str(seed), seed, constant if seed in failed_best else good,
                  noisy(states, scales, seed),
                  final=(constant if seed in failed_final else good, noisy(states, scales, seed)),
                  setting_dict=high_lr, failed=None)
    write_run(tmp_path / "sweep" / "10", 10, base_labels(), states, setting_dict=high_lr, status="diverged")
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out", *ONLY_FAILED)
    (r,) = result.settings
    assert r.checkpoint == "final" and r.seeds == list(range(10)) and r.diverged_seeds == [10]
    outcome = r.failed_runs
    assert outcome.checkpoint == "final" and outcome.failed_seeds == sorted(failed_final)
    assert outcome.diverged_seeds == [10]
    rows = [row for row in read_csv(tmp_path / "out" / "failed_runs.csv") if row["layer"] == str(LAYERS)]
    for row in rows:
        assert (row["n_failed"], row["n_diverged"], row["n_successful"]) == ("4", "1", "6")
        assert float(row["failed_mean"]) > 1.5 * float(row["successful_mean"]), row
        assert float(row["p_value"]) < 0.05, row  # 210 distinct splits: the expected p is about 1/210
    (skipped,) = read_csv(tmp_path / "out" / "skipped.csv")
    assert skipped["seed"] == "10" and "diverged" in skipped["reason"]
    assert "counted as a failed run" in skipped["reason"]
    measures = read_csv(tmp_path / "out" / "measures.csv")
    assert {(row["runs"], row["diverged"], row["measured_checkpoint"]) for row in measures} == {("10", "1", "final")}


def test_failed_runs_with_outputs_too_few_when_only_diverged_runs_failed(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=4)
    for seed in (4, 5):
        write_run(tmp_path / "sweep" / str(seed), seed, base_labels(), base_hidden(), status="diverged")
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out", *ONLY_FAILED)
    note = result.settings[0].failed_note
    assert "0 failed (and 2 diverged, failed without outputs) and 4 successful" in note


def point(task, imm, sd, agreement, lr=2e-5, checkpoint="best"):
    return SettingPoint(f"{task}-{imm}-{lr}", setting(task=task, imm=imm, lr=lr, checkpoint=checkpoint),
                        {"SD": sd}, agreement)


def six_measure_points(rng):
    """Two tasks x five same-lr settings with distinct SDs and agreements that rise with SD plus noise (no ties)."""
    points = []
    for t, task in enumerate(("rte", "mrpc")):
        for k, imm in enumerate(IMMS):
            sd = 0.01 + 0.013 * k + 0.004 * t
            points.append(point(task, imm, sd, {m: 0.2 + 4 * sd * (1 + 0.1 * j) + rng.normal(0, 0.02)
                                                for j, m in enumerate(PAPER)}))
    return points


def expected_r(points):
    """The notebook's computation, independently: z-score (ddof 0) each measure across settings; Pearson r of
    the SD against them over every (setting, measure) point."""
    sd = np.array([p.values["SD"] for p in points])
    xs, ys = [], []
    for m in PAPER:
        xs.append(sd)
        ys.append(stats.zscore(np.array([p.agreement[m] for p in points])))
    return stats.pearsonr(np.concatenate(xs), np.concatenate(ys))


def test_sd_vs_agreement_pools_the_six_measures_over_the_same_lr_settings():
    rng = np.random.default_rng(5)
    same_lr = six_measure_points(rng)
    # the failed-run settings: higher lr, final checkpoint, a large SD and low agreement that would pull r down
    failed = [point(task, "none", 0.2 + 0.01 * t, {m: 0.1 + 0.01 * j for j, m in enumerate(PAPER)}, 5e-5, "final")
              for t, task in enumerate(("rte", "mrpc"))]
    rows, (result,), notes = sd_vs_agreement(same_lr + failed, ["model"])
    reference = expected_r(same_lr)
    assert result["pearson_r"] == pytest.approx(reference.statistic, abs=1e-12)
    assert result["p_value"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert (result["points"], result["settings"], result["measures"]) == (60, 10, 6)
    assert {row["measure"] for row in rows} == set(PAPER)
    assert not any("5e-05" in row["setting"] for row in rows)
    assert sum("left out: lr 5e-05" in note for note in notes) == 2
    pooled_rows, (pooled,), _ = sd_vs_agreement(same_lr + failed, ["model"], same_lr=False)
    assert pooled["settings"] == 12 and pooled["pearson_r"] < reference.statistic - 0.1
    # the notebook averages each correlation column with its diagonal 1: ((K-1) a + 1) / K, an affine change
    with_diagonal = [SettingPoint(p.name, p.setting, p.values, {m: (5 * a + 1) / 6 for m, a in p.agreement.items()})
                     for p in same_lr]
    (_, (same,), _) = sd_vs_agreement(with_diagonal, ["model"])
    assert same["pearson_r"] == pytest.approx(result["pearson_r"], abs=1e-12)


def test_sd_vs_agreement_needs_a_standard_setting_for_the_lr():
    rng = np.random.default_rng(1)
    methods_only = [p for p in six_measure_points(rng) if p.setting["imm.name"] != "none"]
    _, results, notes = sd_vs_agreement(methods_only, ["model"])
    assert results == [] and any("no standard setting" in note for note in notes)
    _, (result,), _ = sd_vs_agreement(methods_only, ["model"], same_lr=False)
    assert result["settings"] == 8


def test_sd_vs_agreement_plots_the_sd_of_the_first_seeds(tmp_path):
    # end to end with the paper's defaults: 5 same-lr settings and a failed-run setting that stays out; the SD on
    # the x axis over seeds < 4 only (the notebook: seeds 0-9) and the bootstrap resampling seeds < 4 as well
    for k, imm in enumerate(IMMS):
        scores = [0.5 + 0.01 * (k + 1) * s for s in (1.0, -1.0, 0.5, -0.5)] + [0.9, 0.1]
        planted_sweep(tmp_path / imm, runs=6, flips=[1, 2, 3, 1 + k, 2, 1],
                      scales=[[0.1 * (k + 1) * (1 + 0.3 * i)] * LAYERS for i in range(6)], scores=scores,
                      setting_dict=setting(imm=imm))
    planted_sweep(tmp_path / "failed", runs=4, setting_dict=setting(lr=5e-5, checkpoint="final"))
    result, _ = run_analysis(tmp_path, tmp_path / "out", "layer_trend=false", "failed_runs.enabled=false",
                             "subsampling.enabled=false", "benchmark.enabled=false", "bootstrap.seeds_below=4",
                             "sd_vs_agreement.sd_seeds_below=4")
    assert all(r.bootstrap.seeds == [0, 1, 2, 3] for r in result.settings)
    assert all(set(np.unique(r.bootstrap.indices)) <= {0, 1, 2, 3} for r in result.settings)
    (row,) = read_csv(tmp_path / "out" / "sd_vs_agreement.csv")
    assert (row["settings"], row["points"], row["measures"]) == ("5", "30", "6")
    points = read_csv(tmp_path / "out" / "sd_vs_agreement_points.csv")
    for r in [r for r in result.settings if r.setting["module.lr"] == 2e-5]:
        sd = np.std(r.scores[:4])
        assert all(float(p["sd"]) == pytest.approx(sd) for p in points if p["setting"] == r.name)
        assert sd != pytest.approx(float(r.values["SD"]))  # seeds 4 and 5 would change it
    assert "lr 5e-05" in (tmp_path / "out" / "summary.md").read_text()


@pytest.fixture
def five_runs(tmp_path):
    planted_sweep(tmp_path, runs=5, flips=[1, 3, 5, 7, 9])
    settings, _ = group_settings(record_paths([tmp_path]))
    data, _ = load_setting(settings[0])
    return data, pair_matrices(data.logits, data.hidden, MeasureOptions(), runs=data.runs)


def test_bootstrap_kappa_follows_the_replicates_self_pair_convention(five_runs):
    data, pairs = five_runs
    predictions = data.predictions.numpy()
    dropped = bootstrap(data, pairs, MeasureOptions(), 60, False, 0.95, generator(0, data.key, "bootstrap"))
    kept = bootstrap(data, pairs, MeasureOptions(), 60, True, 0.95, generator(0, data.key, "bootstrap"))
    differ = 0
    for index, without, with_self in zip(dropped.indices, dropped.samples["I_kappa"], kept.samples["I_kappa"]):
        raters = predictions[index]
        # kept: Fleiss' kappa of the resampled raters, repeats included (the released notebook)
        table, _ = aggregate_raters(raters.T)
        assert with_self == pytest.approx(1 - fleiss_kappa(table), abs=1e-10)
        # dropped: the pairs of distinct runs only, as I_pwd and I_jsd use them; chance agreement of the raters
        pair_disagreement = [np.mean(raters[a] != raters[b]) for a in range(len(index))
                             for b in range(a + 1, len(index)) if index[a] != index[b]]
        shares = np.bincount(raters.ravel(), minlength=2) / raters.size
        assert without == pytest.approx(np.mean(pair_disagreement) / (1 - np.sum(shares**2)), abs=1e-10)
        if len(set(index)) == len(index):
            assert without == pytest.approx(with_self, abs=1e-12)
        else:
            differ += int(abs(without - with_self) > 1e-6)
    assert differ > 10  # replicates with a repeated seed: the conventions give different values there
    # within a replicate, I_kappa / I_pwd is 1 / (1 - P_e) under either convention: the same pairs
    for result in (dropped, kept):
        for index, kappa, pwd in zip(result.indices, result.samples["I_kappa"], result.samples["I_pwd"]):
            shares = np.bincount(predictions[index].ravel(), minlength=2) / predictions[index].size
            assert kappa * (1 - np.sum(shares**2)) == pytest.approx(pwd, abs=1e-12)


def test_bootstrap_correlates_the_paper_measures_unless_asked(five_runs):
    data, pairs = five_runs
    default = bootstrap(data, pairs, MeasureOptions(), 30, False, 0.95, generator(0, data.key, "bootstrap"))
    asked = bootstrap(data, pairs, MeasureOptions(), 30, False, 0.95, generator(0, data.key, "bootstrap"),
                      measures=("SD", "SVCCA", "CKA"))
    assert default.measures == PAPER and "SVCCA" not in default.agreement()
    assert asked.correlation.shape == (3, 3) and set(asked.agreement()) == {"SD", "SVCCA", "CKA"}
    assert "SVCCA" in default.samples  # intervals for every measure either way
    only_first = bootstrap(data, pairs, MeasureOptions(), 30, False, 0.95, generator(0, data.key, "bootstrap"),
                           seeds_below=3)
    assert only_first.seeds == [0, 1, 2] and only_first.indices.shape == (30, 3)
    assert set(np.unique(only_first.indices)) <= {0, 1, 2}
