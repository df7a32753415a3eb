"""One fine-tuning run, from a composed config to a run record in the job folder."""

from __future__ import annotations

import logging
import platform
import signal
import time
from pathlib import Path
from typing import Any

import datasets
import lightning
import lightning.pytorch as pl
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, RichProgressBar
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from instability import tracking
from instability.callbacks import BestWeights, OutputCapture
from instability.data import GlueDataModule
from instability.imm import Mitigation
from instability.models.backbone import Backbone
from instability.models.module import FineTuner
from instability.options import check_job_folder, check_options, debug_mode
from instability.records import Halves, RecordError, RunRecord, build_record, read_record, same_run, write_record
from instability.runtime import check_launch, check_precision, check_resolved_precision, runtime_facts, set_tf32
from instability.setting import setting_name, setting_of

log = logging.getLogger(__name__)
tracking.one_console_line()  # this module is imported once Hydra has set up logging


def build(cfg: DictConfig) -> tuple[GlueDataModule, FineTuner, Mitigation]:
    """Tokenised data, then (after seeding) the model with its mitigation method applied."""
    datasets.disable_progress_bars()
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("failed_lr", None)  # a study's parameter (regime=failed reads it), not the backbone's
    backbone: Backbone = instantiate(model)
    task = OmegaConf.to_container(cfg.task, resolve=True)  # the task as configured (task.* overrides included)
    datamodule = instantiate(cfg.data, _partial_=True)(task=task, tokenizer=backbone.load_tokenizer())
    datamodule.setup("fit")
    imm: Mitigation = instantiate(cfg.imm)
    pl.seed_everything(int(cfg.seed), workers=True)
    module = instantiate(cfg.module, _partial_=True)(backbone=backbone, task=task, imm=imm)
    return datamodule, module, imm


def make_trainer(cfg: DictConfig, callbacks: list[pl.Callback], logger: Logger | None, job_dir: Path) -> pl.Trainer:
    """The configured Lightning Trainer (plus a rich progress bar when progress bars are on)."""
    check_precision(cfg.trainer.precision, str(cfg.trainer.accelerator))
    set_tf32(bool(cfg.get("tf32", False)))
    if cfg.trainer.enable_progress_bar:
        callbacks = [*callbacks, RichProgressBar()]
    trainer = instantiate(cfg.trainer, _convert_="all", callbacks=callbacks,
                          logger=logger if logger is not None else False,
                          default_root_dir=str(job_dir), val_check_interval=1.0 / cfg.eval_per_epoch)
    check_resolved_precision(trainer, cfg.trainer.precision)
    return trainer


def finished_record(job_dir: Path, setting: dict[str, Any], seed: int) -> RunRecord | None:
    """The complete record of this very run (setting and seed) if the folder holds one (a rerun skips it).

    A record of another run is an error: silently keeping or replacing it would mix settings.
    """
    if not (job_dir / "record").exists():
        return None
    try:
        record = read_record(job_dir)
    except RecordError as error:
        log.warning("rerunning %s: its record is unusable (%s)", job_dir, error)
        return None
    different = same_run(record.meta, {"setting": setting, "seed": seed})
    if different:
        raise RuntimeError(
            f"{job_dir} holds the record of another run (differs in: {', '.join(different)}); it is left as it is: "
            "choose another sweep folder (name=... or hydra.sweep.dir=...) or remove that job folder")
    return record


def _logger(cfg: DictConfig, setting: dict[str, Any], seed: int) -> Logger | None:
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return None
    if cfg.logger._target_.endswith("WandbLogger"):
        return tracking.finetune_logger(cfg, setting, seed)
    return instantiate(cfg.logger)


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "lightning": lightning.__version__, "datasets": datasets.__version__}


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record(cfg: DictConfig, setting: dict[str, Any], trainer: pl.Trainer, module: FineTuner,
            datamodule: GlueDataModule, capture: OutputCapture, best: BestWeights, **info: Any):
    planned = 0 if trainer.max_epochs == 0 else int(trainer.estimated_stepping_batches)  # Lightning counts >= 1 epoch
    status = "diverged" if module.diverged else "stopped" if module.global_step < planned else "finished"
    halves = Halves(*(torch.as_tensor(x) for x in (datamodule.ids("test"), datamodule.labels("test"),
                                                   datamodule.ids("val"), datamodule.labels("val"))))
    return build_record(
        seed=int(cfg.seed), setting=setting, metrics=module.task.metrics, halves=halves,
        outputs=capture.outputs or None, status=status,
        steps={"done": int(module.global_step), "planned": planned, "best": best.best_step},
        best_score=best.best_score, versions=_versions(), config=OmegaConf.to_container(cfg, resolve=True),
        overrides=_overrides(), **info)


def run(cfg: DictConfig) -> float | None:
    """Fine-tune one seed and write its record; returns the best validation-half task metric.

    A job folder that already holds this run's complete record is left alone (sweeps resume). A run ended by
    SIGTERM (a scheduler's time limit, `kill`) writes no record and exits with status 143, so a rerun resumes it.
    """
    start = time.perf_counter()
    check_options(cfg)
    job_dir = Path(cfg.paths.output_dir)
    check_job_folder(job_dir)
    setting, seed = setting_of(cfg), int(cfg.seed)
    existing = finished_record(job_dir, setting, seed)
    if existing is not None:
        log.info("skipping %s: it already holds a complete record (status %s)", job_dir, existing.status)
        return existing.meta.get("best_score")
    debug = debug_mode(cfg)
    logger = _logger(cfg, setting, seed)
    best, capture = BestWeights(), OutputCapture()
    callbacks: list[pl.Callback] = [best, capture]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = make_trainer(cfg, callbacks, logger, job_dir)  # Lightning's checks of its options come first
    check_launch(trainer, _multirun())
    datamodule, module, _ = build(cfg)
    succeeded = False
    try:
        if logger is not None:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        fit_start = time.perf_counter()
        try:
            trainer.fit(module, datamodule=datamodule)
        except SIGTERMException:
            log.error("terminated (SIGTERM) while training seed %d: no record written; rerun the command to resume",
                      seed)
            raise SystemExit(128 + signal.SIGTERM) from None
        facts = runtime_facts(trainer, datamodule.per_device_batch_size)
        log.info("ran on %(device)s (%(accelerator)s), precision %(precision)s, world size %(world_size)d, "
                 "%(per_device_batch_size)d examples per device and step", facts)
        if debug is not None:
            log.warning("%s is a debugging mode: no run record written", debug)
            succeeded = True
            return best.best_score
        wandb_info = tracking.record_info(logger)
        timings = {"fit_s": time.perf_counter() - fit_start - capture.seconds, "capture_s": capture.seconds,
                   "total_s": time.perf_counter() - start}
        meta, tensors = _record(cfg, setting, trainer, module, datamodule, capture, best,
                                runtime=facts, timings=timings, wandb=wandb_info)
        if trainer.is_global_zero:
            path = write_record(job_dir, meta, tensors)
            score = "n/a" if best.best_score is None else f"{best.best_score:.4f}"
            log.info("%s seed %d: best val %s %s, status %s, record %s", setting_name(setting), seed,
                     meta["metric"], score, meta["status"], path)
            tracking.log_record(logger, meta, path, int(module.global_step))
        succeeded = True
    finally:
        tracking.finish(logger, succeeded)
    return best.best_score
