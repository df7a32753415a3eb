"""Figures of the analysis (matplotlib, Agg backend): each function returns a figure with a title, axis labels
and, where there is more than one series, a legend."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from instability.analysis.consistency import Benchmark  # noqa: E402
from instability.analysis.results import SettingResult  # noqa: E402
from instability.analysis.setting_measures import HEADLINE, REPRESENTATION  # noqa: E402

MARKERS = {"SVCCA": "o", "OP": "v", "CKA": "^", "SD": "x", "I_pwd": "*", "I_kappa": "1", "I_jsd": "+"}


def layers(result: SettingResult) -> Figure:
    """Each representation measure against layer (mean over seed pairs), with bootstrap bands when available."""
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    layer = np.arange(1, result.num_layers + 1)
    for label in REPRESENTATION:
        axis.plot(layer, result.values[label], marker=MARKERS[label], label=label)
        if result.bootstrap is not None:
            axis.fill_between(layer, result.bootstrap.low[label], result.bootstrap.high[label], alpha=0.2)
    axis.set(title=f"Representation instability by layer\n{result.name} ({len(result.seeds)} seeds)",
             xlabel="layer", ylabel="distance, mean over seed pairs")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(title="measure")
    figure.tight_layout()
    return figure


def scores(result: SettingResult) -> Figure:
    """The per-seed task metric, its mean, and the majority-class baseline; failed runs marked."""
    figure, axis = plt.subplots(figsize=(max(4.8, 0.35 * len(result.seeds) + 2), 4))
    positions = np.arange(len(result.seeds))
    failed = np.array(result.failed, dtype=bool)
    axis.scatter(positions[~failed], result.scores[~failed], label="successful run", color="tab:blue")
    if failed.any():
        axis.scatter(positions[failed], result.scores[failed], label=f"failed run ({result.checkpoint} checkpoint)",
                     color="tab:red",
                     marker="x")
    mean, sd = float(result.values["mean"]), float(result.values["SD"])
    axis.axhline(mean, color="black", label=f"mean {mean:.4f} (SD {sd:.4f})")
    axis.axhline(result.majority_baseline, color="gray", linestyle="--", label="majority-class baseline")
    axis.set_xticks(positions, [str(seed) for seed in result.seeds])
    axis.set(title=f"Test-half {result.metric} per seed\n{result.name} ({result.checkpoint} checkpoint)",
             xlabel="seed", ylabel=result.metric)
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def distance_matrix(result: SettingResult) -> Figure:
    """The seed x seed distance matrix of the last layer, one panel per representation measure."""
    figure, axes = plt.subplots(1, len(REPRESENTATION), figsize=(4.6 * len(REPRESENTATION), 4.2))
    ticks = [str(seed) for seed in result.seeds]
    for axis, label in zip(axes, REPRESENTATION):
        image = axis.imshow(result.last_layer[label], cmap="viridis")
        axis.set_xticks(range(len(ticks)), ticks, fontsize="small")
        axis.set_yticks(range(len(ticks)), ticks, fontsize="small")
        axis.set(title=f"{label}, layer {result.num_layers}", xlabel="seed", ylabel="seed")
        figure.colorbar(image, ax=axis, shrink=0.8, label="distance")
    figure.suptitle(f"Seed-pair distances at the last layer: {result.name}")
    figure.tight_layout()
    return figure


def failed_runs(result: SettingResult) -> Figure:
    """Within-group mean distance per layer for the failed and the successful runs (groups named from the data);
    layers where the permutation test gives p < alpha are marked."""
    outcome = result.failed_runs
    alpha = outcome.alpha
    groups = {True: (outcome.failed_seeds, outcome.failed_mean, "tab:red"),
              False: (outcome.successful_seeds, outcome.successful_mean, "tab:blue")}
    figure, axes = plt.subplots(1, len(REPRESENTATION), figsize=(4.6 * len(REPRESENTATION), 4.2), sharex=True)
    layer = np.arange(1, result.num_layers + 1)
    for axis, label in zip(axes, REPRESENTATION):
        for is_failed, (seeds, means, color) in groups.items():
            name = "failed" if is_failed else "successful"
            axis.plot(layer, means[label], marker="o", color=color, label=f"{name} runs (n={len(seeds)})")
        significant = outcome.p_value[label] < alpha
        if significant.any():
            top = np.fmax(outcome.failed_mean[label], outcome.successful_mean[label])
            axis.scatter(layer[significant], top[significant], marker="*", s=80, color="black", zorder=3,
                         label=f"p < {alpha:g} (permutation)")
        axis.set(title=label, xlabel="layer", ylabel="distance, mean over within-group pairs")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    diverged = f", {len(outcome.diverged_seeds)} diverged runs counted as failed" if outcome.diverged_seeds else ""
    figure.suptitle(f"Failed vs successful runs ({outcome.checkpoint} checkpoint{diverged}): {result.name}")
    figure.tight_layout()
    return figure


def subsampling(result: SettingResult) -> Figure:
    """Relative change of each measure (last layer for representation measures) on example subsets."""
    rows = [row for row in result.subsampling if row["layer"] in (None, result.num_layers)]
    fractions = sorted({row["fraction"] for row in rows})
    labels = list(HEADLINE)
    width = 0.8 / max(1, len(fractions))
    figure, axis = plt.subplots(figsize=(7, 4))
    for k, fraction in enumerate(fractions):
        heights = [next(r["relative_change"] for r in rows if r["measure"] == label and r["fraction"] == fraction)
                   for label in labels]
        axis.bar(np.arange(len(labels)) + k * width, heights, width, label=f"{fraction:g} of the test half")
    axis.set_xticks(np.arange(len(labels)) + width * (len(fractions) - 1) / 2, labels)
    axis.set(title=f"Change of each measure on random subsets of the test half\n{result.name}",
             xlabel="measure", ylabel="mean |subset - full| / |full|")
    axis.legend(title="subset size")
    figure.tight_layout()
    return figure


def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str, colorbar: str) -> Figure:
    """A labelled, annotated [K, K] heatmap in [-1, 1] (correlations, Kendall tau)."""
    figure, axis = plt.subplots(figsize=(6.2, 5.2))
    image = axis.imshow(matrix, cmap="coolwarm", vmin=-1, vmax=1)
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            text = "n/a" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}"
            axis.text(j, i, text, ha="center", va="center", fontsize="small")
    axis.set(title=title, xlabel="measure", ylabel="measure")
    figure.colorbar(image, ax=axis, label=colorbar)
    figure.tight_layout()
    return figure


def bootstrap_correlation(result: SettingResult) -> Figure:
    boot = result.bootstrap
    return heatmap(boot.correlation, boot.measures,
                   f"Correlation of the measures over {boot.used} bootstrap replicates\n{result.name}", "Pearson r")


def benchmark(outcome: Benchmark) -> Figure:
    return heatmap(outcome.tau, HEADLINE, f"Agreement of the measures' rankings of {len(outcome.settings)} settings\n"
                   f"{outcome.group}", "Kendall tau-b")


def sd_vs_agreement(group: str, points: Sequence[dict], r: float, p: float) -> Figure:
    """Each (setting, measure) point: the setting's SD against the measure's z-scored agreement."""
    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for label in dict.fromkeys(point["measure"] for point in points):
        mine = [point for point in points if point["measure"] == label]
        axis.scatter([x["sd"] for x in mine], [x["z_agreement"] for x in mine], marker=MARKERS[label], label=label)
    axis.set(title=f"SD vs agreement of the measures: {group}\nPearson r = {r:.3f}, p = {p:.3g}",
             xlabel="SD of the task metric over seeds", ylabel="agreement with the other measures (z-score)")
    axis.grid(alpha=0.3)
    axis.legend(title="measure", fontsize="small")
    figure.tight_layout()
    return figure
