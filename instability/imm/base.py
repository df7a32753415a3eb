"""The interface every instability mitigation method (IMM) implements.

The LightningModule calls these hooks; a method changes only what it must.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

NO_DECAY_KEYS = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm.weight", "layer_norm.bias")


def is_no_decay(param_name: str) -> bool:
    """Biases and LayerNorm parameters get no weight decay (SPEC section 1)."""
    return any(key in param_name for key in NO_DECAY_KEYS)


def split_decay(named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups at one lr for trainable parameters: decay on weights, none on biases/LayerNorm; no empty groups."""
    named = [(n, p) for n, p in named if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not is_no_decay(n)], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for n, p in named if is_no_decay(n)], "lr": lr, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


class Mitigation:
    """A mitigation method's hooks; each default leaves standard fine-tuning as it is. Subclasses override the
    hooks they need and set `name`."""

    name: str

    def config_overrides(self) -> dict[str, Any]:
        """Changes to the Hugging Face model config before the model is built (e.g. dropout off)."""
        return {}

    def prepare(self, model: nn.Module) -> None:
        """Change the freshly loaded model in place, before the optimiser exists (re-init, Mixout, snapshots)."""

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: decay on weights, none on biases and LayerNorm."""
        return split_decay(model.named_parameters(), lr, weight_decay)

    @torch.no_grad()
    def before_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called after gradients are final (clipped) and before the optimiser step."""

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for the run record and the W&B group."""
        return {"name": self.name}


class Standard(Mitigation):
    """Standard fine-tuning: no mitigation."""

    name = "none"
