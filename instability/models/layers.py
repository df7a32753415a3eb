"""Where a Hugging Face encoder classifier keeps its transformer layers."""

from __future__ import annotations

from torch import nn


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT/RoBERTa-style classifier, bottom layer first (embedding output excluded)."""
    try:
        return model.base_model.encoder.layer
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no base_model.encoder.layer: not a BERT/RoBERTa-style encoder") from None
