"""The analysis in W&B: one run per setting, in the group of the fine-tuning runs it analysed, and one for the
whole sweep; plus the definition of a W&B report of a sweep (wandb-workspaces), published by

    python -m instability.tracking report multirun/<name> --entity <entity>

A setting's run uses its runs' record artifacts (lineage), logs the representation measures per layer with
`layer` as their step axis (W&B draws them, and overlays them across settings), the prediction measures in its
summary, and that setting's tables and figures. The sweep run holds every table and the cross-setting figures;
with a single setting, the setting's run is the only one.
Offline unless configured otherwise (`wandb.mode`, from $WANDB_MODE); the pipeline finishes it even on error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instability import tracking
from instability.analysis.loading import SettingRuns
from instability.analysis.results import SettingResult, SweepResult
from instability.analysis.setting_measures import REPRESENTATION, headline
from instability.records import RunRecord
from instability.setting import setting_name

DEFAULT_PROJECT = "instability"
SWEEP_JOB_TYPE = "analyze-sweep"
SETTING_JOB_TYPE = "analyze"


def _shared(values: Sequence[Any]) -> Any:
    distinct = {value for value in values if value}
    return distinct.pop() if len(distinct) == 1 else None


def _info(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    return [record.meta.get("wandb") or {} for record in records]


def _group(runs: SettingRuns) -> str:
    """The fine-tuning runs' W&B group (the setting's name when they logged none)."""
    return _shared([info.get("group") for info in _info(runs.records + runs.diverged)]) or setting_name(runs.setting)


class AnalysisRuns:
    """The analysis's W&B runs: the sweep run is started at once (so a failing analysis is recorded); with a
    single setting it is that setting's run, as there is nothing across settings."""

    def __init__(self, config: dict[str, Any], settings: Sequence[SettingRuns], roots: Sequence[Path],
                 out_dir: Path) -> None:
        infos = _info([record for runs in settings for record in runs.records + runs.diverged])
        self.project = config["wandb"]["project"] or _shared([i.get("project") for i in infos]) or DEFAULT_PROJECT
        self.mode = config["wandb"]["mode"]
        self.out_dir = out_dir
        self.config = {**config, "sweep_dirs": [str(root) for root in roots], "out_dir": str(out_dir)}
        self.settings = {runs.key: runs for runs in settings}
        if self.mode != "disabled":
            (out_dir / "wandb").mkdir(parents=True, exist_ok=True)
        self.single = len(settings) == 1 and not config["wandb"]["group"]
        if self.single:
            self.run = self.start_setting(settings[0])
        else:
            group = config["wandb"]["group"] or roots[0].resolve().name
            self.run = tracking.init(self.mode, analysis=True, project=self.project, group=group,
                                     job_type=SWEEP_JOB_TYPE, name=f"analyze-{group}", dir=str(out_dir),
                                     config=self.config)

    def start_setting(self, runs: SettingRuns) -> Any:
        """The run of one setting, in its fine-tuning runs' group, using their record artifacts."""
        run = tracking.init(self.mode, analysis=True, project=self.project, group=_group(runs),
                            job_type=SETTING_JOB_TYPE, name=f"analyze-{runs.name}", dir=str(self.out_dir),
                            tags=tracking.tags(runs.setting),
                            config={**self.config, "setting": runs.setting, "setting_id": runs.key})
        for record in runs.records + runs.diverged:
            info = record.meta.get("wandb") or {}
            if info.get("artifact") and info.get("project") == self.project:
                tracking.use(run, tracking.record_artifact(record.path, record.meta, info["artifact"]))
        return run

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def start(config: dict[str, Any], settings: Sequence[SettingRuns], roots: Sequence[Path], out_dir: Path) -> AnalysisRuns:
    """Start the sweep run: project from the config, else shared by the records' W&B runs, else the default;
    group from the config, else (one setting) the setting's group, else the first sweep folder's name."""
    return AnalysisRuns(config, settings, roots, out_dir)


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (dict, list)):
        return str(value)
    return value


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Any:
    import wandb

    data = [[_cell(row.get(column)) for column in columns] for row in rows]
    return wandb.Table(columns=list(columns), data=data, allow_mixed_types=True)


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {label: value for label, value in values.items() if math.isfinite(value)}


def log_layers(run: Any, result: SettingResult) -> None:
    """The representation measures per layer (1 = first layer, as in measures.csv), `layer` their step axis,
    with the bootstrap interval when it ran."""
    run.define_metric("layer")
    run.define_metric("layers/*", step_metric="layer")
    for index in range(result.num_layers):
        row: dict[str, float] = {}
        for label in REPRESENTATION:
            row[f"layers/{label}"] = float(np.asarray(result.values[label])[index])
            if result.bootstrap is not None:
                row[f"layers/{label}_low"] = float(np.asarray(result.bootstrap.low[label])[index])
                row[f"layers/{label}_high"] = float(np.asarray(result.bootstrap.high[label])[index])
        run.log({"layer": index + 1, **_finite(row)})


def _log_setting(run: Any, result: SettingResult, sweep: SweepResult,
                 tables: dict[str, tuple[list[dict[str, Any]], list[str]]]) -> None:
    import wandb

    log_layers(run, result)
    for name, (rows, columns) in tables.items():
        own = [row for row in rows if row.get("setting") == result.name]
        if own:
            run.log({f"tables/{name}": _table(own, columns)})
    for kind, path in result.figures.items():
        run.log({f"figures/{kind}": wandb.Image(str(sweep.out_dir / path))})
    run.summary.update({**_finite(headline(result.values)), "runs": len(result.seeds),
                        "diverged": len(result.diverged_seeds), "metric": result.metric,
                        "checkpoint": result.checkpoint, "failed": int(sum(result.failed)),
                        "scores": {f"seed{seed}": float(score) for seed, score in zip(result.seeds, result.scores)}})


def log(runs: AnalysisRuns, sweep: SweepResult, tables: dict[str, tuple[list[dict[str, Any]], list[str]]]) -> None:
    """One run per setting (each finished before the next starts), then the tables without a setting column
    (all of them in the sweep run), the cross-setting figures and the headline measures of every setting."""
    import wandb

    for result in sweep.settings:
        run = runs.run if runs.single else runs.start_setting(runs.settings[result.setting_id])
        succeeded = False
        try:
            _log_setting(run, result, sweep, tables)
            succeeded = True
        finally:
            if run is not runs.run:
                run.finish(exit_code=0 if succeeded else 1)
    for name, (rows, columns) in tables.items():
        if not runs.single or not any("setting" in row for row in rows):
            runs.run.log({f"tables/{name}": _table(rows, columns)})
    for key, path in sweep.figures.items():
        runs.run.log({f"figures/{key}": wandb.Image(str(sweep.out_dir / path))})
    if not runs.single:
        for result in sweep.settings:
            for label, value in _finite(headline(result.values)).items():
                runs.run.summary[f"{result.name}/{label}"] = value
    runs.run.summary["settings"] = len(sweep.settings)
    runs.run.summary["skipped"] = len(sweep.skipped)


# -------------------------------------------------------------------------------------------- report definition


def report_definition(records: Sequence[RunRecord], entity: str, project: str | None = None,
                      title: str | None = None) -> Any:
    """A W&B report of a sweep (wandb-workspaces; built offline, saved with `.save()`): one section per setting
    with the representation measures by layer, the per-seed test scores of its fine-tuning runs and its
    measures table; first, the measures by layer of every setting overlaid."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    infos = _info(records)
    project = project or _shared([i.get("project") for i in infos]) or DEFAULT_PROJECT
    settings: dict[str, list[RunRecord]] = {}
    for record in records:
        settings.setdefault((record.meta.get("wandb") or {}).get("group") or record.setting_name, []).append(record)
    analyses = wr.Runset(entity=entity, project=project, name="setting analyses",
                         filters=[expr.Metric("Group").isin(sorted(settings)),
                                  expr.Metric("JobType") == SETTING_JOB_TYPE])
    blocks: list[Any] = [
        wr.H1("Instability across settings"),
        wr.PanelGrid(runsets=[analyses], panels=[
            wr.LinePlot(title=f"{label} by layer", x="layer", y=[f"layers/{label}"]) for label in REPRESENTATION]),
    ]
    for group, members in sorted(settings.items()):
        first = members[0]
        checkpoint, metric = first.measure_checkpoint, first.meta["metric"]
        runset = wr.Runset(entity=entity, project=project, name=group, filters=[expr.Metric("Group") == group])
        blocks += [
            wr.H2(group),
            wr.PanelGrid(runsets=[runset], panels=[
                wr.LinePlot(title="representation measures by layer", x="layer",
                            y=[f"layers/{label}" for label in REPRESENTATION]),
                wr.BarPlot(title=f"test-half {metric} per seed ({checkpoint} checkpoint)",
                           metrics=[wr.SummaryMetric(f"{checkpoint}/test/{metric}")], orientation="v"),
                wr.WeavePanelSummaryTable(table_name="tables/measures"),
            ]),
        ]
    return wr.Report(entity=entity, project=project, title=title or f"Fine-tuning instability: {project}",
                     description="Measures by layer, per-seed scores and summary per setting "
                                 "(instability/analysis/wandb_report.py).", blocks=blocks)
