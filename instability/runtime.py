"""Where and how a run computes: precision and launch checks, TF32, and the facts for the record."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

def check_precision(precision: Any, accelerator: str) -> None:
    """bf16 needs a GPU that has it (Ampere or later); on an older one say which option to change, rather than
    let the run fail or silently train in another precision than its record says."""
    if (str(precision).startswith("bf16") and accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported()):
        raise ValueError(f"trainer.precision={precision}: {torch.cuda.get_device_name()} has no bfloat16; "
                         "use trainer.precision=16-mixed (or 32-true)")


def check_resolved_precision(trainer: pl.Trainer, requested: Any) -> None:
    """Lightning quietly swaps some precisions (16-mixed becomes bf16-mixed on a CPU): refuse rather than record
    a run under a precision it did not use."""
    from lightning.fabric.connector import _convert_precision_to_unified_args

    wanted = _convert_precision_to_unified_args(requested)
    if str(trainer.precision) != str(wanted):
        raise ValueError(f"trainer.precision={requested} is not available on {trainer.strategy.root_device.type} "
                         f"(Lightning would train in {trainer.precision}); set trainer.precision={trainer.precision} "
                         "explicitly, or run on a device that has it")


def set_tf32(allowed: bool) -> None:
    """TF32 matmuls and convolutions on Ampere+ GPUs only when asked for: the protocol computes in fp32."""
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    torch.set_float32_matmul_precision("high" if allowed else "highest")


def check_launch(trainer: pl.Trainer, multirun: bool) -> None:
    """A DDP run that Lightning would start by re-running the command line cannot live inside a local multirun
    (each child would start the whole sweep again): refuse it with what works instead."""
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher as Script
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = trainer.strategy.launcher
    if multirun and isinstance(launcher, (Script, _SubprocessScriptLauncher)) and launcher.num_processes > 1:
        raise ValueError(
            f"trainer.strategy={trainer.strategy.__class__.__name__} over {trainer.world_size} processes cannot run "
            "inside a local multirun (-m with the basic or joblib launcher); run each seed as a single run, or "
            "use hydra/launcher=slurm with hydra.launcher.tasks_per_node equal to the devices per node")


def runtime_facts(trainer: pl.Trainer, per_device_batch_size: int) -> dict[str, Any]:
    """Where and how the run computed, for the log and the record."""
    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"accelerator": device.type, "device": name, "precision": str(trainer.precision),
            "world_size": int(trainer.world_size), "per_device_batch_size": int(per_device_batch_size),
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
