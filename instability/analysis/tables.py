"""The analysis's CSV tables, in long form: a table for each analysis that ran (its result is not None).

Setting columns come from the flat setting keys: the aliases of `instability.setting.ALIASES` first (task, model,
imm, lr, ...), then every other key by its dotted name.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np

from instability.analysis.output import OutputFolder
from instability.analysis.results import SettingResult, SweepResult
from instability.analysis.setting_measures import ALL, REPRESENTATION
from instability.setting import ALIASES

Table = tuple[list[dict[str, Any]], list[str]]

COLUMNS = {
    "measures": ["measure", "layer", "value", "ci_low", "ci_high", "ci_level"],
    "scores": ["seed", "score", "failed", "run"],
    "skipped": ["run", "setting", "seed", "reason"],
    "layer_trend": ["setting", "measure", "first_layer", "last_layer", "max_layer", "spearman_rho", "p_value"],
    "layer_agreement": ["setting", "measure_a", "measure_b", "pearson_r", "p_value", "layers"],
    "failed_runs": ["setting", "checkpoint", "measure", "layer", "failed_mean", "successful_mean", "difference",
                    "p_value", "n_failed", "n_diverged", "n_successful", "permutations"],
    "subsampling": ["setting", "measure", "layer", "fraction", "examples", "draws", "defined_draws", "full_value",
                    "subset_mean", "mean_abs_change", "relative_change"],
    "bootstrap_correlation": ["setting", "measure_a", "measure_b", "pearson_r", "replicates"],
    "sd_vs_agreement": ["group", "pearson_r", "p_value", "points", "settings", "measures"],
    "sd_vs_agreement_points": ["group", "setting", "measure", "sd", "agreement", "z_agreement"],
    "benchmark_tau": ["group", "measure_a", "measure_b", "kendall_tau_b", "p_value", "settings"],
    "benchmark_ranks": ["group", "setting", "measure", "value", "rank"],
}


def setting_columns(result: SettingResult) -> dict[str, Any]:
    """The setting as columns: name and id, the aliases, every other key, then what was measured."""
    setting = result.setting
    columns: dict[str, Any] = {"setting": result.name, "setting_id": result.setting_id}
    columns |= {alias: setting.get(key) for alias, key in ALIASES.items()}
    columns |= {key: setting[key] for key in sorted(setting) if key not in ALIASES.values()}
    columns |= {"measured_checkpoint": result.checkpoint, "metric": result.metric, "runs": len(result.seeds),
                "diverged": len(result.diverged_seeds), "examples": result.num_examples}
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


def tables(sweep: SweepResult) -> dict[str, Table]:
    """Every table of the analysis: name -> (rows, columns). Only the analyses that ran have a table."""
    setting_keys: list[str] = []
    for result in sweep.settings:
        setting_keys += [key for key in setting_columns(result) if key not in setting_keys]
    out: dict[str, Table] = {
        "measures": ([row for r in sweep.settings for row in measure_rows(r)], setting_keys + COLUMNS["measures"]),
        "scores": ([{**setting_columns(r), "seed": seed, "score": float(value), "failed": flag, "run": run}
                    for r in sweep.settings for seed, value, flag, run in zip(r.seeds, r.scores, r.failed, r.runs)],
                   setting_keys + COLUMNS["scores"]),
        "skipped": ([vars(s) for s in sweep.skipped], COLUMNS["skipped"]),
    }

    def per_setting(name: str, pick: Callable[[SettingResult], list[dict] | None]) -> None:
        picked = [(r, pick(r)) for r in sweep.settings]
        if any(rows is not None for _, rows in picked):
            out[name] = ([{"setting": r.name, **row} for r, rows in picked for row in rows or []], COLUMNS[name])

    per_setting("layer_trend", lambda r: r.trend)
    per_setting("layer_agreement", lambda r: r.agreement)
    if any(r.failed_runs is not None or r.failed_note is not None for r in sweep.settings):
        out["failed_runs"] = ([{"setting": r.name, **row} for r in sweep.settings
                               for row in (r.failed_runs.rows() if r.failed_runs else [])], COLUMNS["failed_runs"])
    per_setting("subsampling", lambda r: r.subsampling)
    per_setting("bootstrap_correlation", lambda r: r.bootstrap.rows() if r.bootstrap else None)
    if sweep.sd_vs_agreement is not None:
        out["sd_vs_agreement"] = (sweep.sd_vs_agreement.results, COLUMNS["sd_vs_agreement"])
        out["sd_vs_agreement_points"] = (sweep.sd_vs_agreement.points, COLUMNS["sd_vs_agreement_points"])
    if sweep.benchmarks is not None:
        out["benchmark_tau"] = ([row for b in sweep.benchmarks for row in b.tau_rows()], COLUMNS["benchmark_tau"])
        out["benchmark_ranks"] = (sweep.ranks, COLUMNS["benchmark_ranks"])
    return out


def write_csv(output: OutputFolder, name: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """One table as `<name>.csv`: floats in full precision, NaN as `nan`, missing as empty, lists as JSON."""
    def produce(out: IO) -> None:
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _cell(row.get(key)) for key in columns} for row in rows)

    output.write(f"{name}.csv", produce)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else repr(float(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value
