"""GLUE data: TSV/hub readers, the fixed dev split, and the LightningDataModule."""

from instability.data.datamodule import GlueDataModule
from instability.data.glue import TaskSpec, get_task, task_names

__all__ = ["GlueDataModule", "TaskSpec", "get_task", "task_names"]
