"""Job lists that are a union of grids, for study designs that are not one Cartesian product.

The paper's grid gives standard fine-tuning 20 seeds, each mitigation method 10 and the failed-run setting
20: three grids over the same models and tasks. Hydra's basic sweeper only knows one product.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser


def check_literal(sweeper: Mapping[str, Any]) -> None:
    """Refuse interpolations in the (unresolved) sweeper config's `params` and `grids`: Hydra resolves the sweeper's
    config once, against the primary config (its default model), so `module.lr: \\${model.failed_lr}` would give
    every job the default model's value. A value that depends on a job's own choices belongs in a config group
    (e.g. `regime: failed`), which each job composes for itself."""
    for values in [sweeper.get("params") or {}, *(sweeper.get("grids") or [])]:
        for key, value in values.items():
            if "${" in str(value):
                raise ValueError(f"hydra.sweeper: {key}={value} is an interpolation, which the sweeper would resolve "
                                 "once for all jobs; set it in a config group and sweep over the group instead")


def grid_jobs(params: Mapping[str, Any], grids: Sequence[Mapping[str, Any]], arguments: Sequence[str]) -> list[list[str]]:
    """Each job's overrides: for every grid, the product of `params`, the grid's own values and the command line.

    A key set in several places takes the command line's value first, then the grid's, then `params`'.
    """
    parser = OverridesParser.create()
    jobs: list[list[str]] = []
    for grid in grids or [{}]:
        merged = [f"{k}={v}" for k, v in params.items()] + [f"{k}={v}" for k, v in grid.items()] + list(arguments)
        (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(merged), None)
        jobs.extend(batch)
    return jobs
