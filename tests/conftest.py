"""Shared test set-up: offline hub, local GLUE data, W&B disabled."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GLUE_DIR", str(REPO.parent / "shared" / "data" / "glue"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # OpenMP threads sleep instead of spinning: far faster on shared cores

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

GLUE_DIR = Path(os.environ["GLUE_DIR"])
FAST = ["model=tiny-bert", "logger=none", "data.train_size=32", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


def compose_train(output_dir: Path, *overrides: str) -> DictConfig:
    """The training config as `train.py` would see it, with quick defaults for tests (later overrides win)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *FAST, *overrides])


@pytest.fixture
def train_cfg(tmp_path):
    """Compose a quick training config whose job folder is a fresh temporary folder."""
    counter = iter(range(1000))

    def make(*overrides: str) -> DictConfig:
        return compose_train(tmp_path / f"job{next(counter)}", *overrides)

    return make
