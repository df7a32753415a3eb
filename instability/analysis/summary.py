"""summary.md: the human-readable report, written from the results alone (an analysis that did not run is None)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from instability.analysis.results import SettingResult, SweepResult
from instability.analysis.setting_measures import ALL, HEADLINE, MEAN, REPRESENTATION, MeasureOptions


def measure_notes(options: MeasureOptions) -> list[str]:
    """What the table's measures are, as computed (SPEC section 2)."""
    kappa = ("I_kappa is 1 - Fleiss' kappa with the textbook chance agreement P_e = sum_c p_c^2 (equal to statsmodels' "
             "`fleiss_kappa`), not the released notebook's variant, whose P_e = 1/N makes it I_pwd * N/(N-1)."
             if options.kappa_chance == "textbook" else
             "I_kappa uses the released notebook's chance agreement P_e = 1/N (so it is I_pwd * N/(N-1)), NOT textbook "
             "Fleiss' kappa (measures.kappa_chance=released).")
    cka = "debiased (unbiased HSIC); it can exceed 1" if options.cka_debiased else "biased form"
    return [
        kappa,
        "SVCCA is the paper's near-degenerate variant: the SVD reduction runs on uncentred states and keeps 99% of "
        "the singular-value sum, so with N not much larger than D even independent random states score close to 0.",
        f"OP is 1 - ||X^T Y||_* on centred, unit-norm states (half of Ding et al.'s distance); CKA is 1 - linear CKA "
        f"({cka}). SD is the population SD (ddof 0) of the task metric.",
    ]


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _with_ci(result: SettingResult, label: str) -> str:
    value = float(np.atleast_1d(result.values[label])[-1])
    if result.bootstrap is None:
        return _num(value)
    low, high = (float(np.atleast_1d(bound[label])[-1]) for bound in (result.bootstrap.low, result.bootstrap.high))
    return f"{_num(value)} [{_num(low)}, {_num(high)}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines + [""]


def summary_markdown(sweep: SweepResult) -> str:
    """The human-readable report: one row per setting like the paper's table, then every analysis that ran."""
    runs = sum(len(r.seeds) for r in sweep.settings)
    lines = [
        "# Fine-tuning instability: analysis",
        "",
        f"Sweep folder(s): {', '.join(f'`{root}`' for root in sweep.roots)}. "
        f"Analysed {runs} run(s) in {len(sweep.settings)} setting(s); "
        f"skipped {len(sweep.skipped)} run(s) or setting(s). "
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, seed {sweep.seed}.",
        "",
        "All measures are on the test half, at each setting's measure checkpoint; larger means less stable.",
        "",
        *[f"- {note}" for note in measure_notes(sweep.options)],
    ]
    boots = [r.bootstrap for r in sweep.settings if r.bootstrap is not None]
    if boots:
        self_pairs = "kept" if boots[0].keep_self_pairs else "excluded"
        lines.append(f"- Brackets: {boots[0].confidence:.0%} percentile intervals from {len(boots[0].indices)} "
                     f"bootstrap resamples of the seeds (self-pairs of a repeated seed {self_pairs}, for every pair "
                     "measure and I_kappa alike).")
    lines += ["", "## Measures", ""]
    header = ["setting", "runs", "diverged", "checkpoint", "metric", "mean", "SD", "I_jsd", "I_kappa", "I_pwd",
              *REPRESENTATION]
    rows = [[r.name, len(r.seeds), len(r.diverged_seeds), r.checkpoint, r.metric, _with_ci(r, MEAN), _with_ci(r, "SD"),
             _with_ci(r, "I_jsd"), _with_ci(r, "I_kappa"), _with_ci(r, "I_pwd"),
             *(_with_ci(r, label) for label in REPRESENTATION)] for r in sweep.settings]
    lines += _table(header, rows)
    layers = ", ".join(f"{r.name} {r.num_layers}" for r in sweep.settings)
    lines += [f"SVCCA, OP and CKA at the last layer (layers: {layers}); every layer is in `measures.csv`. "
              "Diverged runs (no outputs) are in no measure; they count as failed runs.", ""]
    lines += ["## Skipped runs and settings", ""]
    if sweep.skipped:
        lines += _table(["run", "setting", "seed", "problem"],
                        [[f"`{s.run}`", s.setting, "" if s.seed is None else s.seed, s.reason] for s in sweep.skipped])
    else:
        lines += ["None: every run record found was used.", ""]
    notes = [f"{r.name}: {note}" for r in sweep.settings for note in r.notes] + sweep.notes
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    if any(r.trend is not None for r in sweep.settings):
        lines += _layer_section(sweep)
    if any(r.failed_runs is not None or r.failed_note is not None for r in sweep.settings):
        lines += _failed_section(sweep)
    if any(r.subsampling is not None for r in sweep.settings):
        lines += _subsampling_section(sweep)
    if boots:
        lines += _bootstrap_section(sweep)
    if sweep.benchmarks is not None:
        lines += _benchmark_section(sweep)
    figures = [path for r in sweep.settings for path in r.figures.values()] + list(sweep.figures.values())
    if figures:
        lines += ["## Figures", "", *[f"- [{path}]({path})" for path in figures], ""]
    return "\n".join(lines)


def _layer_section(sweep: SweepResult) -> list[str]:
    lines = ["## Layer trend and agreement of the representation measures", "",
             "Spearman rho of each measure with depth (distances should grow with depth), and the Pearson correlation "
             "of the measures' per-layer curves (n/a with fewer than 3 layers or a flat curve).", ""]
    for r in sweep.settings:
        if r.trend is None:
            continue
        lines += [f"### {r.name}", ""]
        lines += _table(["measure", "layer 1", f"layer {r.num_layers}", "rho with depth", "p"],
                        [[t["measure"], _num(t["first_layer"]), _num(t["last_layer"]), _num(t["spearman_rho"], 3),
                          _num(t["p_value"], 3)] for t in r.trend])
        lines += _table(["measures", "Pearson r of the curves", "p"],
                        [[f"{a['measure_a']} vs {a['measure_b']}", _num(a["pearson_r"], 3), _num(a["p_value"], 3)]
                         for a in r.agreement or []])
    return lines


def _failed_section(sweep: SweepResult) -> list[str]:
    lines = ["## Successful vs failed runs", "",
             "Runs grouped by the failure flag of the checkpoint measured (its test score at or below the majority "
             "baseline of the test half). Mean distance over failed-failed and over successful-successful pairs "
             "(cross pairs dropped); two-sided permutation test of the difference per layer. Diverged runs count as "
             "failed but have no outputs, so no distance includes them.", ""]
    for r in sweep.settings:
        if r.failed_runs is None:
            if r.failed_note is not None:
                lines += [f"- {r.name}: not compared: {r.failed_note}"]
            continue
        f = r.failed_runs
        splits = math.comb(len(f.failed_seeds) + len(f.successful_seeds), len(f.failed_seeds))
        floor = (2 if len(f.failed_seeds) == len(f.successful_seeds) else 1) / splits
        diverged = f"; diverged (failed, no outputs): {f.diverged_seeds}" if f.diverged_seeds else ""
        lines += ["", f"### {r.name}", "",
                  f"Failure flags of the {f.checkpoint} checkpoint. Failed seeds: {f.failed_seeds}{diverged}; "
                  f"successful seeds: {f.successful_seeds}. {f.permutations} seeded permutations; {splits} distinct "
                  f"splits, so p cannot go much below {floor:.3g}.", ""]
        lines += _table(["measure", "failed (last layer)", "successful (last layer)", "p (last layer)",
                         f"layers with p < {f.alpha:g}"],
                        [[label, _num(f.failed_mean[label][-1]), _num(f.successful_mean[label][-1]),
                          _num(f.p_value[label][-1]), int((f.p_value[label] < f.alpha).sum())]
                         for label in f.failed_mean])
    return lines + [""]


def _subsampling_section(sweep: SweepResult) -> list[str]:
    lines = ["## Sub-sampling of the test half", "",
             "Each measure on random subsets per fraction (draws in `subsampling.csv`); mean absolute change from the "
             "full-data value (relative change in brackets); representation measures at the last layer.", ""]
    for r in sweep.settings:
        if r.subsampling is None:
            continue
        rows = [row for row in r.subsampling if row["layer"] in (None, r.num_layers)]
        fractions = sorted({row["fraction"] for row in rows})
        draws = sorted({row["draws"] for row in rows})
        lines += [f"### {r.name}", "", f"{', '.join(map(str, draws))} draw(s) per fraction.", ""]
        table = []
        for label in ALL:
            cells = []
            for fraction in fractions:
                row = next(x for x in rows if x["measure"] == label and x["fraction"] == fraction)
                cells.append(f"{_num(row['mean_abs_change'])} ({_num(row['relative_change'], 3)})")
            table.append([label, *cells])
        lines += _table(["measure", *[f"{fraction:g} of the test half" for fraction in fractions]], table)
    return lines


def _bootstrap_section(sweep: SweepResult) -> list[str]:
    lines = ["## Bootstrap over seeds", "",
             "Pearson correlation of the measures across bootstrap replicates (representation measures at the last "
             "layer); `bootstrap_correlation.csv` has every pair.", ""]
    for r in sweep.settings:
        if r.bootstrap is None:
            continue
        b = r.bootstrap
        lines += [f"### {r.name}", "", f"Seeds resampled: {b.seeds}. {b.used} of {len(b.indices)} replicates have "
                  "every correlated measure defined.", ""]
        lines += _table(["", *b.measures], [[a, *(_num(b.correlation[i, j], 2) for j in range(len(b.measures)))]
                                             for i, a in enumerate(b.measures)])
    result = sweep.sd_vs_agreement
    if result is None:
        return lines
    sd = "the SD over all seeds" if result.sd_seeds_below is None else f"the SD over seeds < {result.sd_seeds_below}"
    pooled = ("the settings at their task's standard lr (standard fine-tuning and the mitigation methods; not the "
              "failed-run setting)" if result.same_lr else "every setting")
    lines += ["### SD vs agreement", "",
              "Per setting, each bootstrap measure's mean correlation with the others, z-scored per measure across the "
              f"settings of a group ({', '.join(result.group_by)}; {pooled}), against {sd}: Pearson r over all "
              "(setting, measure) points (paper: r = 0.734 for BERT, 0.653 for RoBERTa).", ""]
    if result.results:
        lines += _table(["group", "r", "p", "points", "settings", "measures"],
                        [[x["group"], _num(x["pearson_r"], 3), _num(x["p_value"], 4), x["points"], x["settings"],
                          x["measures"]] for x in result.results])
    else:
        lines += ["Not computed: no group has 3 or more settings (see Notes).", ""]
    return lines


def _benchmark_section(sweep: SweepResult) -> list[str]:
    lines = ["## Benchmark: rankings of the settings", "",
             "Kendall tau-b between the measures' rankings of the settings, per group "
             f"({', '.join(sweep.benchmark_group_by)}).", ""]
    if not sweep.benchmarks:
        return lines + ["Not computed: no group has 2 or more settings (see Notes).", ""]
    for b in sweep.benchmarks:
        lines += [f"### {b.group}", "", f"Settings: {', '.join(b.settings)}.", ""]
        lines += _table(["", *HEADLINE], [[a, *(_num(b.tau[i, j], 2) for j in range(len(HEADLINE)))]
                                           for i, a in enumerate(HEADLINE)])
    return lines
