"""Hydra sweeper plugin over a union of grids (Hydra only loads sweepers from the hydra_plugins package)."""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import HydraContext
from hydra.types import TaskFunction
from omegaconf import DictConfig, OmegaConf

from instability.sweeper import check_literal, grid_jobs


class GridUnionSweeper(BasicSweeper):
    """BasicSweeper (same launching, batching and `multirun.yaml`) over the union of `grids`."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        grids: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.grids = [dict(grid) for grid in grids or []]
        self.arguments: list[str] = []  # the command line's overrides, which `sweep` receives

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        check_literal(OmegaConf.to_container(config.hydra.sweeper, resolve=False))  # before Hydra resolved it
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        self.arguments = list(arguments)
        return super().sweep(arguments)

    def split_arguments(self, overrides: Any, max_batch_size: int | None) -> list[list[list[str]]]:  # type: ignore[override]
        jobs = grid_jobs(self.params, self.grids, self.arguments)
        return list(self.split_overrides_to_chunks(jobs, max_batch_size)) if max_batch_size else [jobs]
