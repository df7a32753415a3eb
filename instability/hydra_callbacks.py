"""Hydra callbacks: analyse a sweep as soon as its jobs are done."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
ANALYZE = Path(__file__).resolve().parents[1] / "analyze.py"


class AnalyzeSweep(Callback):
    """Runs `analyze.py` over the sweep folder when a multirun ends (its own process, so a failure is reported
    without touching the finished runs)."""

    def __init__(self, overrides: list[str] | None = None) -> None:
        self.overrides = list(overrides or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        command = [sys.executable, str(ANALYZE), f"sweep_dir={sweep_dir}", "overwrite=true", *self.overrides]
        log.info("analysing the sweep: %s", " ".join(command))
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            log.error("the analysis of %s failed (exit %d); rerun: %s", sweep_dir, result.returncode, " ".join(command))
