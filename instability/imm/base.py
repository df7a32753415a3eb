"""The interface every instability mitigation method (IMM) implements.

The LightningModule calls these hooks; a method changes only what it must. Every optimiser parameter group has a
unique "name" (e.g. "layer.0/no_decay"), which Lightning's LearningRateMonitor uses to name its curves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from instability.models.layers import no_decay_ids

NO_DECAY_SUFFIX = "/no_decay"


def split_decay(
    named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float, name: str, no_decay: set[int],
) -> list[dict[str, Any]]:
    """AdamW groups `name` and `name/no_decay` at one lr for trainable parameters: decay on weights, none on the
    parameters in `no_decay` (biases, normalisation layers); no empty groups."""
    named = [(n, p) for n, p in named if p.requires_grad]
    groups = [
        {"params": [p for _, p in named if id(p) not in no_decay], "lr": lr, "weight_decay": weight_decay,
         "name": name},
        {"params": [p for _, p in named if id(p) in no_decay], "lr": lr, "weight_decay": 0.0,
         "name": name + NO_DECAY_SUFFIX},
    ]
    return [group for group in groups if group["params"]]


class Mitigation:
    """A mitigation method's hooks; each default leaves standard fine-tuning as it is. Subclasses override the
    hooks they need and set `name`."""

    name: str

    def dropout(self, dropout: float) -> float:
        """The dropout probability the model is built with, given the configured one (Mixout turns it off)."""
        return dropout

    def config_overrides(self) -> dict[str, Any]:
        """Other changes to the Hugging Face model config before the model is built."""
        return {}

    def prepare(self, model: nn.Module) -> None:
        """Change the freshly loaded model in place, before the optimiser exists (re-init, Mixout, snapshots), and
        refuse an architecture the method has no meaning for."""

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Named AdamW parameter groups: decay on weights, none on biases and normalisation layers."""
        return split_decay(model.named_parameters(), lr, weight_decay, "model", no_decay_ids(model))

    @torch.no_grad()
    def before_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called after gradients are final (clipped) and before the optimiser step."""

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for the run record and the W&B group."""
        return {"name": self.name}


class Standard(Mitigation):
    """Standard fine-tuning: no mitigation."""

    name = "none"
