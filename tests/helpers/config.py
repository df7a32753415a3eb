"""Training configs composed as `train.py` composes them, with quick defaults for tests."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[2]
GLUE_DIR = Path(os.environ.get("GLUE_DIR", REPO.parent / "shared" / "data" / "glue"))
FAST = ["model=tiny-bert", "logger=none", "data.train_size=32", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def compose_train(output_dir: Path, *overrides: str) -> DictConfig:
    """The training config as `train.py` would see it, with quick defaults for tests (later overrides win)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *FAST, *overrides])
