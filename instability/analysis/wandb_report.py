"""The W&B `analyze` run: in the sweep's group, with every table (`wandb.Table`) and figure of the analysis.

Offline unless configured otherwise (`wandb.mode`, from $WANDB_MODE); the pipeline finishes it even on error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instability.analysis.loading import SettingRuns
from instability.analysis.results import SweepResult
from instability.analysis.setting_measures import headline

DEFAULT_PROJECT = "instability"


def _shared(values: Sequence[Any]) -> Any:
    distinct = {value for value in values if value}
    return distinct.pop() if len(distinct) == 1 else None


def start(config: dict[str, Any], settings: Sequence[SettingRuns], roots: Sequence[Path], out_dir: Path) -> Any:
    """Start the analyze run: project and group from the config, else shared by the records' W&B runs, else
    the default project and the setting's name (one setting) or the first sweep folder's name."""
    import wandb

    infos = [record.meta.get("wandb") or {} for runs in settings for record in runs.records]
    project = config["wandb"]["project"] or _shared([info.get("project") for info in infos]) or DEFAULT_PROJECT
    group = (config["wandb"]["group"] or _shared([info.get("group") for info in infos])
             or (settings[0].name if len(settings) == 1 else roots[0].resolve().name))
    if config["wandb"]["mode"] != "disabled":
        (out_dir / "wandb").mkdir(parents=True, exist_ok=True)
    return wandb.init(project=project, group=group, job_type="analyze", name=f"analyze-{group}",
                      mode=config["wandb"]["mode"], dir=str(out_dir),
                      config={**config, "sweep_dirs": [str(root) for root in roots], "out_dir": str(out_dir)})


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (dict, list)):
        return str(value)
    return value


def log(run: Any, sweep: SweepResult, tables: dict[str, tuple[list[dict[str, Any]], list[str]]]) -> None:
    """Log every table, every figure, and the headline measures per setting as summary values."""
    import wandb

    for name, (rows, columns) in tables.items():
        data = [[_cell(row.get(column)) for column in columns] for row in rows]
        run.log({f"tables/{name}": wandb.Table(columns=list(columns), data=data, allow_mixed_types=True)})
    figures = {f"{r.name}/{kind}": path for r in sweep.settings for kind, path in r.figures.items()}
    figures.update(sweep.figures)
    for key, path in figures.items():
        run.log({f"figures/{key}": wandb.Image(str(sweep.out_dir / path))})
    for result in sweep.settings:
        for label, value in headline(result.values).items():
            if math.isfinite(value):
                run.summary[f"{result.name}/{label}"] = value
    run.summary["settings"] = len(sweep.settings)
    run.summary["skipped"] = len(sweep.skipped)
