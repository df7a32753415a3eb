"""Re-init (Zhang et al. 2021): the top encoder layers are too specific to pre-training; start them afresh.

As Zhang et al.'s code, the model's own initialiser (`_init_weights`, applied to every submodule, children first as
transformers does) re-initialises the top layers and what sits between them and the output projection: BERT's
pooler, RoBERTa's classifier.dense, DeBERTa's pooler, DistilBERT's pre_classifier, ModernBERT's final norm and head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from instability.imm.base import Mitigation
from instability.models.layers import encoder_layers, model_parts, output_layers


def top_modules(model: nn.Module) -> list[nn.Module]:
    """The modules above the encoder layers and below the output projection (the pooler's place), outermost only."""
    parts = model_parts(model)
    output = {id(p) for m in output_layers(model) for p in m.parameters()}
    wanted = {id(p) for _, p in parts.above + parts.head} - output
    chosen: list[nn.Module] = []
    for module in model.modules():
        params = {id(p) for p in module.parameters()}
        if params and params <= wanted and not any(m is module or _inside(module, m) for m in chosen):
            chosen.append(module)
    return chosen


def _inside(module: nn.Module, container: nn.Module) -> bool:
    return any(sub is module for sub in container.modules())


@torch.no_grad()
def reinitialise(model: nn.Module, module: nn.Module) -> None:
    """Re-draw `module`'s parameters with the model's own initialiser; refuses parameters it leaves as they were."""
    params = dict(module.named_parameters())
    for p in params.values():
        p._is_hf_initialized = False  # transformers' init functions skip parameters flagged as loaded
    versions = {name: p._version for name, p in params.items()}
    module.apply(model._init_weights)
    untouched = [name for name, p in params.items() if p._version == versions[name]]
    if untouched:
        raise ValueError(f"reinit: {type(model).__name__}._init_weights leaves {untouched} as they are")


class ReInit(Mitigation):
    """Re-initialise the top `num_layers` encoder layers and the pooler's place (see the module docstring)."""

    name = "reinit"

    def __init__(self, num_layers: int = 5) -> None:
        if num_layers < 0:
            raise ValueError(f"reinit option num_layers must be >= 0, got {num_layers}")
        self.num_layers = num_layers

    def prepare(self, model: nn.Module) -> None:
        try:
            layers = encoder_layers(model)
        except ValueError as error:
            raise ValueError(f"imm=reinit has no meaning for this model: re-initialising the top layers needs distinct "
                             f"layers. {error}") from None
        if self.num_layers > len(layers):
            raise ValueError(f"reinit option num_layers={self.num_layers} exceeds the model's {len(layers)} layers")
        for module in [*layers[len(layers) - self.num_layers :], *top_modules(model)]:
            reinitialise(model, module)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_layers": self.num_layers}
