"""WD_pre: weight decay towards the pre-trained weights instead of towards zero, for the encoder layers and
everything read before them (embeddings, projections, position tables).

AdamW gives those weights no decay of its own; before each optimiser step they move
p <- p - lr * coefficient * (p - p_pretrained) with their group's current (scheduled) lr, decoupled from the
gradient like AdamW's own decay. What runs above the layers (pooler, final norm) and the head keep AdamW's decay
towards zero; biases and normalisation layers get no decay at all.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from instability.imm.base import Mitigation, split_decay
from instability.models.layers import model_parts, no_decay_ids

ANCHOR_KEY = "wd_pre_anchor"


class WDPre(Mitigation):
    """Decay encoder and embedding weights towards their snapshot taken in prepare()."""

    name = "wd_pre"

    def __init__(self, coefficient: float = 0.01) -> None:
        if coefficient < 0:
            raise ValueError(f"wd_pre option coefficient must be >= 0, got {coefficient}")
        self.coefficient = coefficient
        self._anchored: list[nn.Parameter] | None = None
        self._pretrained: list[torch.Tensor] = []

    def prepare(self, model: nn.Module) -> None:
        no_decay = no_decay_ids(model)
        self._anchored = [p for _, p in _encoder_side(model) if p.requires_grad and id(p) not in no_decay]
        self._pretrained = [p.detach().clone() for p in self._anchored]

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        if self._anchored is None:
            raise RuntimeError("wd_pre: call prepare(model) before param_groups")
        anchored = {id(p) for p in self._anchored}
        rest = [(n, p) for n, p in model.named_parameters() if id(p) not in anchored]
        anchor = {"params": list(self._anchored), "lr": lr, "weight_decay": 0.0, ANCHOR_KEY: True,
                  "name": "to_pretrained"}
        return [anchor, *split_decay(rest, lr, weight_decay, "other", no_decay_ids(model))]

    @torch.no_grad()
    def before_optimizer_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            if not group.get(ANCHOR_KEY):
                continue
            params = group["params"]
            if len(params) != len(self._pretrained):
                raise RuntimeError("wd_pre: the optimiser's anchored group does not match the snapshot")
            if self._pretrained[0].device != params[0].device:  # the model moved to the accelerator after prepare()
                self._pretrained = [t.to(params[0].device) for t in self._pretrained]
            # lerp(p, p0, a) = p - a * (p - p0)
            torch._foreach_lerp_(params, self._pretrained, group["lr"] * self.coefficient)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "coefficient": self.coefficient}



def _encoder_side(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The base model's parameters but those of modules that run above the layers (pooler, final norm)."""
    parts = model_parts(model)
    return [*parts.below, *(named for layer in parts.layers for named in layer)]
