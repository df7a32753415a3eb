"""The console: each log line once, no spurious warnings, a one-line result per run and a roll-up per multirun."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from helpers.config import REPO
from helpers.records import base_hidden, base_labels, write_run

from instability.hydra_callbacks import job_outcomes, rollup


def test_a_run_prints_each_line_once_and_its_result(tmp_path):
    command = [sys.executable, "train.py", "task=rte", "model=tiny-bert", "logger=wandb", "data.train_size=16",
               "trainer.max_epochs=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'job'}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("GPU available") == 1 and output.count("Seed set to 0") == 1
    assert "INFO: " not in output, "Lightning's own console handler printed a second copy"
    assert "anonymous" not in output and "Tip:" not in output and "LeafSpec" not in output
    (result,) = [line for line in output.splitlines() if "seed 0: best val accuracy" in line]
    assert "status finished" in result and str(tmp_path / "job" / "record") in result


def _job(folder: Path, status: str | None, log_age: float = 0.0) -> None:
    """A job folder with Hydra's job log (`log_age` seconds old) and, unless `status` is None, a record."""
    if status is not None:
        write_run(folder, 0, base_labels(), base_hidden(), status=status)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.log").write_text("...")
    when = time.time() - log_age
    os.utime(folder / "train.log", (when, when))


def test_rollup_tells_finished_skipped_diverged_stopped_and_failed_jobs_apart(tmp_path):
    _job(tmp_path / "a" / "seed0", "finished")                # complete before this multirun: skipped
    _job(tmp_path / "old" / "seed0", "finished", log_age=60)  # an earlier multirun's job, not this one's
    time.sleep(0.05)
    since = time.time()
    time.sleep(0.05)
    _job(tmp_path / "a" / "seed1", "finished")
    _job(tmp_path / "a" / "seed2", "finished")
    _job(tmp_path / "b" / "seed0", "diverged")
    _job(tmp_path / "b" / "seed1", "stopped")
    _job(tmp_path / "b" / "seed2", None)                      # no record: failed or interrupted
    os.utime(tmp_path / "a" / "seed0" / "train.log")          # this multirun wrote its "skipping" line
    outcomes = job_outcomes(tmp_path, "train.log", since)
    assert dict(outcomes) == {"finished": 2, "skipped": 1, "diverged": 1, "stopped": 1, "failed": 1}
    assert rollup(outcomes) == "6 jobs: 2 finished, 1 skipped, 1 diverged, 1 stopped, 1 failed"
