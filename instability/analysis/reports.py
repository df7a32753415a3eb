"""The analysis folder: CSV tables in long form, summary.md, figures, a manifest; every file written atomically
(temporary file beside it, then rename). Earlier output is never replaced unless asked (`overwrite`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from instability.analysis.compute import ALL, HEADLINE, MEAN, REPRESENTATION
from instability.analysis.loading import AnalysisError
from instability.analysis.results import SettingResult, SweepResult
from instability.records import apply_umask, write_json_atomic

MANIFEST = "analysis.json"


def measure_notes(measures: dict[str, Any]) -> list[str]:
    """What the table's measures are, as configured (SPEC section 2)."""
    kappa = ("I_kappa is 1 - Fleiss' kappa with the textbook chance agreement P_e = sum_c p_c^2 (equal to statsmodels' "
             "`fleiss_kappa`), not the released notebook's variant, whose P_e = 1/N makes it I_pwd * N/(N-1)."
             if measures["kappa_chance"] == "textbook" else
             "I_kappa uses the released notebook's chance agreement P_e = 1/N (so it is I_pwd * N/(N-1)), NOT textbook "
             "Fleiss' kappa (measures.kappa_chance=released).")
    cka = "debiased (unbiased HSIC); it can exceed 1" if measures["cka_debiased"] else "biased form"
    return [
        kappa,
        "SVCCA is the paper's near-degenerate variant: the SVD reduction runs on uncentred states and keeps 99% of "
        "the singular-value sum, so with N not much larger than D even independent random states score close to 0.",
        f"OP is 1 - ||X^T Y||_* on centred, unit-norm states (half of Ding et al.'s distance); CKA is 1 - linear CKA "
        f"({cka}). SD is the population SD (ddof 0) of the task metric.",
    ]


TABLE_COLUMNS = {
    "measures": ["measure", "layer", "value", "ci_low", "ci_high", "ci_level"],
    "scores": ["seed", "score", "failed", "run"],
    "skipped": ["run", "setting", "seed", "reason"],
    "layer_trend": ["setting", "measure", "first_layer", "last_layer", "max_layer", "spearman_rho", "p_value"],
    "layer_agreement": ["setting", "measure_a", "measure_b", "pearson_r", "p_value", "layers"],
    "failed_runs": ["setting", "measure", "layer", "failed_mean", "successful_mean", "difference", "p_value",
                    "n_failed", "n_successful", "permutations"],
    "subsampling": ["setting", "measure", "layer", "fraction", "examples", "draws", "defined_draws", "full_value",
                    "subset_mean", "mean_abs_change", "relative_change"],
    "bootstrap_correlation": ["setting", "measure_a", "measure_b", "pearson_r", "replicates"],
    "sd_vs_agreement": ["group", "pearson_r", "p_value", "points", "settings"],
    "sd_vs_agreement_points": ["group", "setting", "measure", "sd", "agreement", "z_agreement"],
    "benchmark_tau": ["group", "measure_a", "measure_b", "kendall_tau_b", "p_value", "settings"],
    "benchmark_ranks": ["group", "setting", "measure", "value", "rank"],
}


class OutputFolder:
    """Writes the analysis outputs into one folder, each file atomically, and records them in a manifest.

    An existing folder with files in it is an error unless `overwrite`; then files are replaced one by one
    and, at `finish`, those the previous analysis wrote but this one did not are removed.
    """

    def __init__(self, folder: str | os.PathLike, overwrite: bool) -> None:
        self.folder = Path(folder)
        self.written: list[str] = []
        self.previous: list[str] = []
        if self.folder.exists() and not self.folder.is_dir():
            raise AnalysisError(f"output folder {self.folder} is a file")
        if self.folder.is_dir() and any(self.folder.iterdir()):
            if not overwrite:
                raise AnalysisError(f"output folder {self.folder} already holds an earlier analysis (or other files); "
                                    "pass overwrite=true to replace it, or out_dir=<another folder>")
            manifest = self.folder / MANIFEST
            if manifest.is_file():
                self.previous = list(json.loads(manifest.read_text(encoding="utf-8")).get("files", []))
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, relative: str, produce: Callable[[io.IOBase], None], binary: bool = False) -> Path:
        """Write a file through `produce(handle)` under a temporary name, then rename it into place."""
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
        try:
            text = {} if binary else {"encoding": "utf-8", "newline": ""}
            with os.fdopen(handle, "wb" if binary else "w", **text) as out:
                produce(out)
                out.flush()
                os.fsync(out.fileno())
            apply_umask(temporary)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.written.append(relative)
        return target

    def write_csv(self, name: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
        def produce(out: io.IOBase) -> None:
            writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows({key: _cell(row.get(key)) for key in columns} for row in rows)

        return self.write(f"{name}.csv", produce)

    def write_text(self, relative: str, text: str) -> Path:
        return self.write(relative, lambda out: out.write(text))

    def save_figure(self, relative: str, figure: Any) -> str:
        """Save a matplotlib figure as PNG and close it."""
        import matplotlib.pyplot as plt

        try:
            self.write(relative, lambda out: figure.savefig(out, format="png", dpi=120), binary=True)
        finally:
            plt.close(figure)
        return relative

    def finish(self, info: dict[str, Any]) -> None:
        """Write the manifest, then remove files of the previous analysis that this one did not write."""
        write_json_atomic(self.folder / MANIFEST, {**info, "files": sorted(set(self.written))})
        for stale in set(self.previous) - set(self.written):
            path = self.folder / stale
            if path.is_file() and self.folder.resolve() in path.resolve().parents:
                path.unlink()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else repr(float(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


# --- tables -------------------------------------------------------------------------------------------------


def setting_columns(result: SettingResult) -> dict[str, Any]:
    """The setting's config flattened into columns (a dict value, such as imm, as name + params JSON)."""
    columns: dict[str, Any] = {"setting": result.name}
    for key in sorted(result.setting):
        value = result.setting[key]
        if isinstance(value, dict):
            columns[key] = value.get("name")
            params = {k: v for k, v in value.items() if k != "name"}
            columns[f"{key}_params"] = json.dumps(params.get("params", params), sort_keys=True)
        else:
            columns[key] = value
    columns.update(checkpoint=result.checkpoint, metric=result.metric, runs=len(result.seeds),
                   examples=result.num_examples)
    return columns


def measure_rows(result: SettingResult) -> list[dict[str, Any]]:
    """measures.csv rows of one setting: one per prediction measure, one per layer of each representation measure."""
    base = setting_columns(result)
    rows = []
    boot = result.bootstrap
    for label in ALL:
        value = np.atleast_1d(result.values[label])
        for layer, v in enumerate(value):
            row = {**base, "measure": label, "layer": layer + 1 if label in REPRESENTATION else None, "value": float(v)}
            if boot is not None:
                row.update(ci_low=float(np.atleast_1d(boot.low[label])[layer]),
                           ci_high=float(np.atleast_1d(boot.high[label])[layer]), ci_level=boot.confidence)
            rows.append(row)
    return rows


def tables(sweep: SweepResult) -> dict[str, tuple[list[dict[str, Any]], list[str]]]:
    """Every table of the analysis: name -> (rows, columns). Only the analyses that ran have a table."""
    setting_keys: list[str] = []
    for result in sweep.settings:
        setting_keys += [key for key in setting_columns(result) if key not in setting_keys]
    out: dict[str, tuple[list[dict[str, Any]], list[str]]] = {
        "measures": ([row for r in sweep.settings for row in measure_rows(r)],
                     setting_keys + TABLE_COLUMNS["measures"]),
        "scores": ([{**setting_columns(r), "seed": seed, "score": float(value), "failed": flag, "run": run}
                    for r in sweep.settings for seed, value, flag, run in zip(r.seeds, r.scores, r.failed, r.runs)],
                   setting_keys + TABLE_COLUMNS["scores"]),
        "skipped": ([vars(s) for s in sweep.skipped], TABLE_COLUMNS["skipped"]),
    }
    config = sweep.config

    def per_setting(name: str, pick: Callable[[SettingResult], list[dict] | None]) -> None:
        rows = [{"setting": r.name, **row} for r in sweep.settings for row in (pick(r) or [])]
        out[name] = (rows, TABLE_COLUMNS[name])

    if config["layer_trend"]:
        per_setting("layer_trend", lambda r: r.trend)
        per_setting("layer_agreement", lambda r: r.agreement)
    if config["failed_runs"]["enabled"]:
        per_setting("failed_runs", lambda r: r.failed_runs.rows() if r.failed_runs else None)
    if config["subsampling"]["enabled"]:
        per_setting("subsampling", lambda r: r.subsampling)
    if config["bootstrap"]["enabled"]:
        per_setting("bootstrap_correlation", lambda r: r.bootstrap.rows() if r.bootstrap else None)
        out["sd_vs_agreement"] = (sweep.sd_results, TABLE_COLUMNS["sd_vs_agreement"])
        out["sd_vs_agreement_points"] = (sweep.sd_points, TABLE_COLUMNS["sd_vs_agreement_points"])
    if config["benchmark"]["enabled"]:
        out["benchmark_tau"] = ([row for b in sweep.benchmarks for row in b.tau_rows()], TABLE_COLUMNS["benchmark_tau"])
        out["benchmark_ranks"] = (sweep.ranks, TABLE_COLUMNS["benchmark_ranks"])
    return out


# --- summary.md ---------------------------------------------------------------------------------------------


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
    """The human-readable report: one row per setting like the paper's table, then every analysis."""
    config = sweep.config
    runs = sum(len(r.seeds) for r in sweep.settings)
    boot = config["bootstrap"]
    lines = [
        "# Fine-tuning instability: analysis",
        "",
        f"Sweep folder(s): {', '.join(f'`{root}`' for root in sweep.roots)}. "
        f"Analysed {runs} run(s) in {len(sweep.settings)} setting(s); "
        f"skipped {len(sweep.skipped)} run(s) or setting(s). "
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, seed {config['seed']}.",
        "",
        "All measures are on the test half, at each setting's measure checkpoint; larger means less stable.",
        "",
        *[f"- {note}" for note in measure_notes(config["measures"])],
    ]
    if boot["enabled"]:
        self_pairs = "kept" if boot["keep_self_pairs"] else "excluded"
        lines.append(f"- Brackets: {boot['confidence']:.0%} percentile intervals from {boot['replicates']} bootstrap "
                     f"resamples of the seeds (self-pairs of a repeated seed {self_pairs}).")
    lines += ["", "## Measures", ""]
    header = ["setting", "runs", "checkpoint", "metric", "mean", "SD", "I_jsd", "I_kappa", "I_pwd", *REPRESENTATION]
    rows = [[r.name, len(r.seeds), r.checkpoint, r.metric, _with_ci(r, MEAN), _with_ci(r, "SD"), _with_ci(r, "I_jsd"),
             _with_ci(r, "I_kappa"), _with_ci(r, "I_pwd"), *(_with_ci(r, label) for label in REPRESENTATION)]
            for r in sweep.settings]
    lines += _table(header, rows)
    layers = ", ".join(f"{r.name} {r.num_layers}" for r in sweep.settings)
    lines += [f"SVCCA, OP and CKA at the last layer (layers: {layers}); every layer is in `measures.csv`.", ""]
    lines += ["## Skipped runs and settings", ""]
    if sweep.skipped:
        lines += _table(["run", "setting", "seed", "problem"],
                        [[f"`{s.run}`", s.setting, "" if s.seed is None else s.seed, s.reason] for s in sweep.skipped])
    else:
        lines += ["None: every run record found was used.", ""]
    notes = [f"{r.name}: {note}" for r in sweep.settings for note in r.notes] + sweep.notes
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    if config["layer_trend"]:
        lines += _layer_section(sweep)
    if config["failed_runs"]["enabled"]:
        lines += _failed_section(sweep)
    if config["subsampling"]["enabled"]:
        lines += _subsampling_section(sweep)
    if boot["enabled"]:
        lines += _bootstrap_section(sweep)
    if config["benchmark"]["enabled"]:
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
        lines += [f"### {r.name}", ""]
        lines += _table(["measure", "layer 1", f"layer {r.num_layers}", "rho with depth", "p"],
                        [[t["measure"], _num(t["first_layer"]), _num(t["last_layer"]), _num(t["spearman_rho"], 3),
                          _num(t["p_value"], 3)] for t in r.trend or []])
        lines += _table(["measures", "Pearson r of the curves", "p"],
                        [[f"{a['measure_a']} vs {a['measure_b']}", _num(a["pearson_r"], 3), _num(a["p_value"], 3)]
                         for a in r.agreement or []])
    return lines


def _failed_section(sweep: SweepResult) -> list[str]:
    permutations = sweep.config["failed_runs"]["permutations"]
    lines = ["## Successful vs failed runs", "",
             "Runs grouped by the record's `failed` flag (final test score at or below the majority baseline). "
             "Mean distance over failed-failed and over successful-successful pairs (cross pairs dropped); "
             f"two-sided permutation test of the difference per layer ({permutations} seeded permutations).", ""]
    for r in sweep.settings:
        if r.failed_runs is None:
            lines += [f"- {r.name}: not compared: {r.failed_note}"]
            continue
        f = r.failed_runs
        alpha = sweep.config["failed_runs"]["alpha"]
        splits = math.comb(len(f.failed_seeds) + len(f.successful_seeds), len(f.failed_seeds))
        floor = (2 if len(f.failed_seeds) == len(f.successful_seeds) else 1) / splits
        lines += ["", f"### {r.name}", "",
                  f"Failed seeds: {f.failed_seeds}; successful seeds: {f.successful_seeds}. "
                  f"{splits} distinct splits, so p cannot go much below {floor:.3g}.", ""]
        lines += _table(["measure", "failed (last layer)", "successful (last layer)", "p (last layer)",
                         f"layers with p < {alpha}"],
                        [[label, _num(f.failed_mean[label][-1]), _num(f.successful_mean[label][-1]),
                          _num(f.p_value[label][-1]), int((f.p_value[label] < alpha).sum())]
                         for label in f.failed_mean])
    return lines + [""]


def _subsampling_section(sweep: SweepResult) -> list[str]:
    config = sweep.config["subsampling"]
    lines = ["## Sub-sampling of the test half", "",
             f"Each measure on {config['draws']} random subsets per fraction; mean absolute change from the full-data "
             "value (relative change in brackets); representation measures at the last layer.", ""]
    for r in sweep.settings:
        rows = [row for row in r.subsampling or [] if row["layer"] in (None, r.num_layers)]
        fractions = sorted({row["fraction"] for row in rows})
        lines += [f"### {r.name}", ""]
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
        lines += [f"### {r.name}", "", f"{b.used} of {len(b.indices)} replicates have every measure defined.", ""]
        lines += _table(["", *HEADLINE], [[a, *(_num(b.correlation[i, j], 2) for j in range(len(HEADLINE)))]
                                           for i, a in enumerate(HEADLINE)])
    lines += ["### SD vs agreement", "",
              "Per setting, each measure's mean correlation with the others, z-scored across the settings of a group, "
              "against the setting's SD (Pearson r over all setting-measure points; paper: r = 0.734 for BERT, "
              "0.653 for RoBERTa).", ""]
    if sweep.sd_results:
        lines += _table(["group", "r", "p", "points", "settings"],
                        [[x["group"], _num(x["pearson_r"], 3), _num(x["p_value"], 4), x["points"], x["settings"]]
                         for x in sweep.sd_results])
    else:
        lines += ["Not computed: no group has 3 or more settings (see Notes).", ""]
    return lines


def _benchmark_section(sweep: SweepResult) -> list[str]:
    lines = ["## Benchmark: rankings of the settings", "",
             "Kendall tau-b between the measures' rankings of the settings, per group "
             f"({', '.join(sweep.config['benchmark']['group_by'])}).", ""]
    if not sweep.benchmarks:
        return lines + ["Not computed: no group has 2 or more settings (see Notes).", ""]
    for b in sweep.benchmarks:
        lines += [f"### {b.group}", "", f"Settings: {', '.join(b.settings)}.", ""]
        lines += _table(["", *HEADLINE], [[a, *(_num(b.tau[i, j], 2) for j in range(len(HEADLINE)))]
                                           for i, a in enumerate(HEADLINE)])
    return lines
