"""One fine-tuning run from a composed config to a run record in the job folder."""

from __future__ import annotations

import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets
import lightning
import lightning.pytorch as pl
import torch
import transformers
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from instability.callbacks import BestWeights, OutputCapture
from instability.data import GlueDataModule
from instability.imm import Mitigation
from instability.models.module import FineTuner
from instability.models.metrics import score
from instability.records import RecordError, RunRecord, read_record, setting_name, write_record

log = logging.getLogger(__name__)


def setting_of(cfg: DictConfig, imm: Mitigation) -> dict[str, Any]:
    """What makes runs one training setting (everything but the seed): analyses group runs by it."""
    return {
        "task": cfg.task.name,
        "model": cfg.model.name,
        "imm": imm.describe(),
        "lr": float(cfg.module.lr),
        "train_size": cfg.data.train_size,
        "max_epochs": cfg.trainer.max_epochs,
        "batch_size": cfg.data.batch_size,
        "split_seed": cfg.data.split_seed,
        "measure_checkpoint": cfg.measure_checkpoint,
    }


def _logger(cfg: DictConfig, setting: dict[str, Any], seed: int) -> Logger | None:
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return None
    if cfg.logger._target_.endswith("WandbLogger"):
        group = setting_name(setting)
        return instantiate(cfg.logger, group=group, name=f"{group}-seed{seed}")
    return instantiate(cfg.logger)


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
        "datasets": datasets.__version__,
    }


def _half_scores(task_metrics: tuple[str, ...], logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return score(task_metrics, logits.argmax(-1), labels)


def assemble_record(
    cfg: DictConfig,
    setting: dict[str, Any],
    module: pl.LightningModule,
    datamodule: GlueDataModule,
    capture: OutputCapture,
    best: BestWeights,
    timings: dict[str, float],
    wandb_info: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The record's metadata and tensors for a finished or diverged run."""
    task = module.task
    labels = {half: torch.as_tensor(datamodule.labels(half)) for half in ("val", "test")}
    majority = datamodule.majority_label
    baseline = score(task.metrics, torch.full_like(labels["test"], majority), labels["test"])[task.metric]
    meta: dict[str, Any] = {
        "status": "diverged" if module.diverged else "finished",
        "seed": int(cfg.seed),
        "split_seed": int(cfg.data.split_seed),
        "task": task.name,
        "metric": task.metric,
        "setting": setting,
        "measure_checkpoint": cfg.measure_checkpoint,
        "majority_label": majority,
        "majority_baseline": baseline,
        "global_step": int(module.global_step),
        "best_step": best.best_step,
        "best_score": best.best_score,
        "timings": timings,
        "versions": _versions(),
        "wandb": wandb_info,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "created": datetime.now(timezone.utc).isoformat(),
        "metrics": {},
        "failed": None,
    }
    if module.diverged:
        return meta, {}
    tensors = {
        "example_ids": torch.as_tensor(datamodule.ids("test")),
        "labels": labels["test"],
        "val_example_ids": torch.as_tensor(datamodule.ids("val")),
        "val_labels": labels["val"],
    }
    for checkpoint, outputs in capture.outputs.items():
        tensors[f"{checkpoint}/logits"] = outputs["test_logits"]
        tensors[f"{checkpoint}/hidden"] = outputs["test_hidden"]
        tensors[f"{checkpoint}/val_logits"] = outputs["val_logits"]
        meta["metrics"][checkpoint] = {
            "val": _half_scores(task.metrics, outputs["val_logits"], labels["val"]),
            "test": _half_scores(task.metrics, outputs["test_logits"], labels["test"]),
        }
    hidden = tensors["best/hidden"]
    meta.update(num_layers=hidden.shape[0], num_test=hidden.shape[1], hidden_size=hidden.shape[2])
    meta["failed"] = meta["metrics"]["final"]["test"][task.metric] <= baseline + 1e-12
    return meta, tensors


def build(cfg: DictConfig) -> tuple[GlueDataModule, FineTuner, Mitigation]:
    """Tokenised data, then (after seeding) the model with its mitigation method applied."""
    datasets.disable_progress_bars()
    backbone = instantiate(cfg.model)
    datamodule = instantiate(cfg.data, _partial_=True)(task=cfg.task.name, tokenizer=backbone.load_tokenizer())
    datamodule.setup("fit")
    imm: Mitigation = instantiate(cfg.imm)
    pl.seed_everything(int(cfg.seed), workers=True)
    module = instantiate(cfg.module, _partial_=True)(backbone=backbone, task=cfg.task.name, imm=imm)
    return datamodule, module, imm


def check_precision(precision: Any) -> None:
    """bf16 needs a GPU that has it (Ampere or later); on an older one say which option to change, rather than
    let the run fail or silently train in another precision than its record says."""
    if str(precision).startswith("bf16") and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError(f"trainer.precision={precision}: {torch.cuda.get_device_name()} has no bfloat16; "
                         "use trainer.precision=16-mixed (or 32-true)")


def make_trainer(cfg: DictConfig, callbacks: list[pl.Callback], logger: Logger | None, job_dir: Path) -> pl.Trainer:
    """The configured Lightning Trainer (plus a rich progress bar when progress bars are on)."""
    if cfg.trainer.enable_progress_bar:
        callbacks = [*callbacks, RichProgressBar()]
    check_precision(cfg.trainer.precision)
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=logger if logger is not None else False,
        default_root_dir=str(job_dir),
        val_check_interval=1.0 / cfg.eval_per_epoch,
    )


# Config keys (and everything under them) that say where things are or how a run is displayed, not what it
# computes: a rerun with the data in another folder or the progress bar off still resumes the sweep.
IGNORED_FOR_RESUME = (
    "paths", "logger", "wandb", "data.glue_dir", "data.cache_dir", "data.num_workers",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
)


def _comparable(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config flattened to dotted keys, without IGNORED_FOR_RESUME."""
    flat = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if dotted in IGNORED_FOR_RESUME:
            continue
        if isinstance(value, dict) and value:
            flat |= _comparable(value, f"{dotted}.")
        else:
            flat[dotted] = value
    return flat


def finished_record(job_dir: Path, cfg: DictConfig) -> RunRecord | None:
    """The complete record of this very job if the folder holds one (a rerun skips it), else None.

    A record of a different configuration is an error: silently keeping or replacing it would mix settings.
    """
    if not (job_dir / "record").exists():
        return None
    try:
        record = read_record(job_dir)
    except RecordError as error:
        log.warning("rerunning %s: its record is unusable (%s)", job_dir, error)
        return None
    current = _comparable(OmegaConf.to_container(cfg, resolve=True))
    stored = _comparable(record.meta["config"])
    if stored != current:
        differing = sorted(k for k in current.keys() | stored.keys() if current.get(k) != stored.get(k))
        raise RuntimeError(
            f"{job_dir} holds a record of a different configuration (differs in: {', '.join(differing)}); "
            "choose another sweep folder (name=... or hydra.sweep.dir=...) or remove that job folder"
        )
    return record


def run(cfg: DictConfig) -> float | None:
    """Fine-tune one seed and write its record; returns the best validation-half task metric.

    A job folder that already holds this job's complete record is left alone (sweeps resume).
    """
    start = time.perf_counter()
    job_dir = Path(cfg.paths.output_dir)
    existing = finished_record(job_dir, cfg)
    if existing is not None:
        log.info("skipping %s: it already holds a complete record (status %s)", job_dir, existing.status)
        return existing.meta.get("best_score")
    datamodule, module, imm = build(cfg)
    setting = setting_of(cfg, imm)
    logger = _logger(cfg, setting, int(cfg.seed))
    best, capture = BestWeights(), OutputCapture()
    callbacks: list[pl.Callback] = [best, capture]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = make_trainer(cfg, callbacks, logger, job_dir)
    succeeded = False
    try:
        if logger is not None:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        fit_start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        fit_seconds = time.perf_counter() - fit_start - capture.seconds
        wandb_info = None
        if isinstance(logger, WandbLogger):
            wandb_info = {"run_id": logger.experiment.id, "group": logger.experiment.group, "project": cfg.wandb.project}
        timings = {"fit_s": fit_seconds, "capture_s": capture.seconds, "total_s": time.perf_counter() - start}
        meta, tensors = assemble_record(cfg, setting, module, datamodule, capture, best, timings, wandb_info)
        if trainer.is_global_zero:
            path = write_record(job_dir, meta, tensors)
            log.info("run record written to %s (status %s)", path, meta["status"])
        if logger is not None and meta["metrics"]:
            flat = {f"{c}/{h}/{m}": v for c, halves in meta["metrics"].items() for h, ms in halves.items() for m, v in ms.items()}
            logger.log_metrics({**flat, "failed": float(meta["failed"])}, step=int(module.global_step))
            logger.save()
        succeeded = True
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish(exit_code=0 if succeeded else 1)
    return best.best_score
