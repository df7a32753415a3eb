"""Shared test set-up: offline hub, local GLUE data, W&B disabled."""

import os
from pathlib import Path

os.environ.setdefault("GLUE_DIR", str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # OpenMP threads sleep instead of spinning: far faster on shared cores

import pytest  # noqa: E402
from helpers.config import compose_train  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@pytest.fixture
def train_cfg(tmp_path):
    """Compose a quick training config whose job folder is a fresh temporary folder."""
    counter = iter(range(1000))

    def make(*overrides: str) -> DictConfig:
        return compose_train(tmp_path / f"job{next(counter)}", *overrides)

    return make


@pytest.fixture(autouse=True)
def fresh_wandb_service():
    """Each test starts W&B's service anew: a service an earlier test stopped must not be reused."""
    import sys

    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
    os.environ.pop("WANDB_SERVICE", None)
    yield
