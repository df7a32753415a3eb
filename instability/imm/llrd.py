"""Layer-wise learning-rate decay: lower layers, which hold more general features, move less."""

from __future__ import annotations

from typing import Any

from torch import nn

from instability.imm.base import Mitigation, split_decay
from instability.models.layers import encoder_layers, model_parts, no_decay_ids


class LLRD(Mitigation):
    """Head (and what runs above the layers: BERT's pooler, a final norm): base lr, no decay; encoder layer k from the
    top: lr * eta^k; embeddings and everything read before the first layer (an embedding projection, relative-
    position tables): lr * eta^(L+1). Refused for models whose layers share weights (ALBERT)."""

    name = "llrd"

    def __init__(self, eta: float = 0.95) -> None:
        if not 0 < eta <= 1:
            raise ValueError(f"llrd option eta must be in (0, 1], got {eta}")
        self.eta = eta

    def prepare(self, model: nn.Module) -> None:
        _layers(model)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        _layers(model)
        parts, no_decay = model_parts(model), no_decay_ids(model)
        depth = len(parts.layers)
        groups = split_decay(parts.below, lr * self.eta ** (depth + 1), weight_decay, "embeddings", no_decay)
        for index, layer in enumerate(parts.layers):
            groups += split_decay(layer, lr * self.eta ** (depth - index), weight_decay, f"layer.{index}", no_decay)
        head = [p for _, p in parts.above + parts.head]
        groups.append({"params": head, "lr": lr, "weight_decay": 0.0, "name": "head"})
        return groups

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "eta": self.eta}


def _layers(model: nn.Module) -> list[nn.Module]:
    try:
        return encoder_layers(model)
    except ValueError as error:
        raise ValueError(f"imm=llrd has no meaning for this model: per-layer learning rates need distinct layers. "
                         f"{error}") from None
