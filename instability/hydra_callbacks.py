"""Hydra callbacks: a one-line roll-up of every multirun, and the analysis of a sweep as soon as its jobs are done."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
ANALYZE = Path(__file__).resolve().parents[1] / "analyze.py"
OUTCOMES = ("finished", "skipped", "diverged", "stopped", "failed")


def job_outcomes(sweep_dir: Path, job_log: str, since: float) -> Counter:
    """What became of the jobs of a multirun that started at `since` (seconds since the epoch), from the sweep
    folder alone: a job folder is one holding the Hydra job log `job_log` (written to by this multirun: modified
    since it started) or a record. A record written since then gives the run's status; an older one means the
    job was skipped (already complete); no record, that it failed (or was interrupted)."""
    from instability.records import RECORD_DIR, RecordError, read_record

    jobs = {log_file.parent for log_file in sweep_dir.rglob(job_log) if log_file.stat().st_mtime >= since}
    jobs |= {record.parent for record in sweep_dir.rglob(RECORD_DIR) if record.is_dir()}
    outcomes: Counter = Counter()
    for job in jobs:
        try:
            record = read_record(job)
        except RecordError:
            if (job / job_log).is_file() and (job / job_log).stat().st_mtime >= since:
                outcomes["failed"] += 1
            continue
        created = datetime.fromisoformat(record.meta["created"]).timestamp() if "created" in record.meta else 0.0
        if created >= since:
            outcomes[record.status] += 1
        elif (job / job_log).is_file() and (job / job_log).stat().st_mtime >= since:
            outcomes["skipped"] += 1
    return outcomes


def rollup(outcomes: Counter) -> str:
    """`6 jobs: 4 finished, 1 skipped, 0 diverged, 0 stopped, 1 failed`."""
    return f"{sum(outcomes.values())} jobs: " + ", ".join(f"{outcomes[kind]} {kind}" for kind in OUTCOMES)


class SweepSummary(Callback):
    """Logs a one-line roll-up when a multirun ends (jobs finished / skipped / diverged / stopped / failed)."""

    def __init__(self) -> None:
        self.start = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.start = time.time() - 1.0  # file times may be coarser than the clock

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        outcomes = job_outcomes(sweep_dir, f"{config.hydra.job.name}.log", self.start)
        log.info("%s in %s", rollup(outcomes), sweep_dir)


class AnalyzeSweep(Callback):
    """Runs `analyze.py` over the sweep folder when a multirun ends (its own process, so a failure is reported
    without touching the finished runs). Its W&B runs follow the training's logger: the same mode (offline,
    online), and none when the training used no W&B."""

    def __init__(self, overrides: list[str] | None = None) -> None:
        self.overrides = list(overrides or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        logger = config.get("logger") or {}
        wandb = str(logger.get("_target_", "")).endswith("WandbLogger")
        mode = [f"wandb.mode={logger.mode if wandb else 'disabled'}"]
        command = [sys.executable, str(ANALYZE), f"sweep_dir={sweep_dir}", "overwrite=true", *mode, *self.overrides]
        log.info("analysing the sweep: %s", " ".join(command))
        env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}  # its own W&B service
        result = subprocess.run(command, check=False, env=env)
        if result.returncode != 0:
            log.error("the analysis of %s failed (exit %d); rerun: %s", sweep_dir, result.returncode, " ".join(command))
