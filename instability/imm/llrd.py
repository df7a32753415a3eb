"""Layer-wise learning-rate decay: lower layers, which hold more general features, move less."""

from __future__ import annotations

from typing import Any

from torch import nn

from instability.imm.base import Mitigation, split_decay
from instability.models.layers import encoder_layers


class LLRD(Mitigation):
    """Head (and BERT's pooler): base lr, no decay; encoder layer k from the top: lr * eta^k; embeddings: lr * eta^(L+1)."""

    name = "llrd"

    def __init__(self, eta: float = 0.95) -> None:
        if not 0 < eta <= 1:
            raise ValueError(f"llrd option eta must be in (0, 1], got {eta}")
        self.eta = eta

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        base = model.base_model
        layers = encoder_layers(model)
        depth = len(layers)
        groups = split_decay(base.embeddings.named_parameters(), lr * self.eta ** (depth + 1), weight_decay)
        for index, layer in enumerate(layers):
            groups += split_decay(layer.named_parameters(), lr * self.eta ** (depth - index), weight_decay)
        placed = {id(p) for group in groups for p in group["params"]}
        head = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in placed]
        allowed = {id(p) for p in model.parameters()} - {id(p) for p in base.parameters()}
        if getattr(base, "pooler", None) is not None:
            allowed |= {id(p) for p in base.pooler.parameters()}
        stray = [n for n, p in head if id(p) not in allowed]
        if stray:
            raise ValueError(f"llrd cannot place base-model parameters outside embeddings/encoder/pooler: {stray}")
        groups.append({"params": [p for _, p in head], "lr": lr, "weight_decay": 0.0})
        return groups

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "eta": self.eta}
