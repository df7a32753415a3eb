"""GLUE data: TSV/hub readers, the fixed dev split, and the LightningDataModule."""

from instability.data.datamodule import GlueDataModule
from instability.data.glue import TASKS, TaskSpec, get_task

__all__ = ["GlueDataModule", "TASKS", "TaskSpec", "get_task"]
