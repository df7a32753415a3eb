"""Re-init (Zhang et al. 2021): the top encoder layers are too specific to pre-training; start them afresh."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from instability.imm.base import Mitigation
from instability.models.layers import encoder_layers


@torch.no_grad()
def _reinitialise(module: nn.Module, std: float) -> None:
    """BERT's initialiser: Linear weights normal(0, std), biases 0, LayerNorm 1/0; refuses unknown parameters."""
    done: set[int] = set()
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sub.weight.normal_(0.0, std)
        elif isinstance(sub, nn.LayerNorm):
            sub.weight.fill_(1.0)
        else:
            continue
        if sub.bias is not None:
            sub.bias.zero_()
        done.update(id(p) for p in sub.parameters(recurse=False))
    missed = [n for n, p in module.named_parameters() if id(p) not in done]
    if missed:
        raise ValueError(f"reinit does not know how to initialise {missed}")


def _top_dense(model: nn.Module) -> nn.Module:
    """BERT's pooler, or for models without one (RoBERTa) the classification head's dense layer."""
    pooler = getattr(model.base_model, "pooler", None)
    if pooler is not None:
        return pooler
    dense = getattr(getattr(model, "classifier", None), "dense", None)
    if dense is None:
        raise ValueError("reinit found neither a pooler nor a classifier.dense layer")
    return dense


class ReInit(Mitigation):
    """Re-initialise the top `num_layers` encoder layers and the pooler (RoBERTa: classifier.dense)."""

    name = "reinit"

    def __init__(self, num_layers: int = 5) -> None:
        if num_layers < 0:
            raise ValueError(f"reinit option num_layers must be >= 0, got {num_layers}")
        self.num_layers = num_layers

    def prepare(self, model: nn.Module) -> None:
        layers = encoder_layers(model)
        if self.num_layers > len(layers):
            raise ValueError(f"reinit option num_layers={self.num_layers} exceeds the model's {len(layers)} layers")
        std = model.config.initializer_range
        for module in [*layers[len(layers) - self.num_layers :], _top_dense(model)]:
            _reinitialise(module, std)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_layers": self.num_layers}
