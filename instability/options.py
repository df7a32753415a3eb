"""Training options checked at start-up, before any data is read or model loaded: an error names the option."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from instability.records import CHECKPOINTS, is_finite_number

# Trainer arguments the run sets itself: a user's value would be silently replaced, so it is refused.
RUN_SETS = {
    "val_check_interval": "validation runs `eval_per_epoch` times per epoch: set eval_per_epoch=N",
    "callbacks": "the run adds its own callbacks",
    "logger": "choose a logger with logger=wandb|csv|none",
    "default_root_dir": "Lightning's files go to the job folder (paths.output_dir)",
}
DEBUG_MODES = ("fast_dev_run",)


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _require(ok: bool, option: str, x: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{option}={x!r}: expected {expected}")


def check_options(cfg: DictConfig) -> None:
    """The run's own options, the optimiser's, and the Trainer arguments the run relies on."""
    _require(_whole(cfg.seed) and cfg.seed >= 0, "seed", cfg.seed, "a whole number >= 0")
    _require(_whole(cfg.eval_per_epoch) and cfg.eval_per_epoch >= 1, "eval_per_epoch", cfg.eval_per_epoch,
             "a whole number >= 1")
    _require(cfg.measure_checkpoint in CHECKPOINTS, "measure_checkpoint", cfg.measure_checkpoint,
             f"one of {', '.join(CHECKPOINTS)}")
    module = cfg.module
    _require(is_finite_number(module.lr) and module.lr > 0, "module.lr", module.lr, "a number > 0")
    _require(is_finite_number(module.weight_decay) and module.weight_decay >= 0, "module.weight_decay",
             module.weight_decay, "a number >= 0")
    _require(is_finite_number(module.warmup_ratio) and 0 <= module.warmup_ratio <= 1, "module.warmup_ratio",
             module.warmup_ratio, "a number in [0, 1]")
    _require(is_finite_number(module.dropout) and 0 <= module.dropout < 1, "module.dropout", module.dropout,
             "a number in [0, 1)")
    _require(is_finite_number(module.adam_eps) and module.adam_eps > 0, "module.adam_eps", module.adam_eps,
             "a number > 0")
    _require(len(module.adam_betas) == 2 and all(is_finite_number(b) and 0 <= b < 1 for b in module.adam_betas),
             "module.adam_betas", list(module.adam_betas), "two numbers in [0, 1)")
    trainer = cfg.trainer
    for key, value in RUN_SETS.items():
        if key in trainer:
            raise ValueError(f"trainer.{key} is set by the run ({value}); remove trainer.{key}")
    steps = trainer.max_steps
    _require(_whole(steps) and (steps == -1 or steps >= 1), "trainer.max_steps", steps, "-1 (no limit) or >= 1")
    epochs = trainer.max_epochs
    _require(_whole(epochs) and (epochs >= 0 or (epochs == -1 and steps >= 1)), "trainer.max_epochs", epochs,
             "a whole number >= 0 (-1 only with trainer.max_steps)")


def check_job_folder(job_dir: Path) -> None:
    """The job folder exists (or can be made) and is writable, so a finished run can write its record."""
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"paths.output_dir={str(job_dir)!r}: cannot make the job folder ({error})") from error
    if not os.access(job_dir, os.W_OK | os.X_OK):
        raise ValueError(f"paths.output_dir={str(job_dir)!r}: the job folder is not writable; the run could not "
                         "write its record")


def debug_mode(cfg: DictConfig) -> str | None:
    """The Lightning debugging mode switched on (its runs write no record), or None."""
    return next((f"trainer.{key}={cfg.trainer[key]}" for key in DEBUG_MODES if cfg.trainer.get(key)), None)
