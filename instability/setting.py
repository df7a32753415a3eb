"""What makes runs one training setting: every config key that can change what a run computes, but the seed.

Defined once, here, from the resolved config. Every key is part of the setting unless `IRRELEVANT` declares it
(or a key above it) to be about locations, logging, display or hardware placement, so a new config key splits
settings by default. From the setting derive its short stable id, its readable label, the job folder (through
the `setting_dir` resolver that `conf/hydra/default.yaml` uses), the W&B group, the analysis grouping and the
resume comparison.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Dotted keys (and everything under them) that do not change what a run computes.
IRRELEVANT = (
    "seed",                          # the one thing that varies within a setting
    "name", "hydra", "paths",        # where a sweep and its jobs live
    "logger", "wandb",               # where metrics are shown
    "data.glue_dir", "data.cache_dir", "data.num_workers",
    "data.eval_batch_size",          # inference batching: outputs equal up to rounding
    "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.num_nodes",  # placement; the global
                                     # batch stays data.batch_size, and the record says where a run ran
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps", "trainer.profiler",
    "model.failed_lr",               # a study's parameter; what a run uses is module.lr
)

# Short names for the keys that tables, groupings and labels use most.
ALIASES = {
    "task": "task.name",
    "model": "model.name",
    "imm": "imm.name",
    "lr": "module.lr",
    "train_size": "data.train_size",
    "epochs": "trainer.max_epochs",
    "batch_size": "data.batch_size",
    "checkpoint": "measure_checkpoint",
    "precision": "trainer.precision",
    "split": "data.split",
    "split_seed": "data.split_seed",
}
DEFAULT_PRECISION = "32-true"


def _irrelevant(dotted: str) -> bool:
    return any(dotted == key or dotted.startswith(f"{key}.") for key in IRRELEVANT)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if _irrelevant(dotted):
            continue
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{dotted}.")  # an empty mapping adds nothing
        else:
            flat[dotted] = list(value) if isinstance(value, tuple) else value
    return flat


def _imm_name(target: str | None) -> str:
    if not target:
        return "none"
    from hydra.utils import get_class

    return str(getattr(get_class(target), "name", target.rsplit(".", 1)[-1].lower()))


def setting_of(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The setting of a training config: its relevant keys, flattened to dotted names, plus `imm.name`."""
    if isinstance(cfg, DictConfig):
        keep = [key for key in cfg if not _irrelevant(str(key))]
        cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keep), resolve=True)
    setting = _flatten(cfg)
    setting["imm.name"] = _imm_name(setting.get("imm._target_"))
    if setting.get("trainer.precision") in (None, 32, "32"):
        setting["trainer.precision"] = DEFAULT_PRECISION
    return dict(sorted(setting.items()))


def value(setting: Mapping[str, Any], key: str) -> Any:
    """A setting's value at a dotted key or one of `ALIASES`."""
    return setting.get(ALIASES.get(key, key))


def setting_id(setting: Mapping[str, Any]) -> str:
    """A short stable hash of the whole setting: equal ids, equal settings."""
    text = json.dumps(dict(setting), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _number(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def method_label(setting: Mapping[str, Any]) -> str:
    """The mitigation method with its parameters, e.g. `reinit3`, `mixout0.1`, `none`."""
    params = [_number(v) for k, v in setting.items() if k.startswith("imm.") and k not in ("imm._target_", "imm.name")]
    return "".join([str(value(setting, "imm")), *params])


def setting_label(setting: Mapping[str, Any]) -> str:
    """A readable label of the keys studies vary most (the id tells the rest apart), e.g. `none-lr2e-05-n200`."""
    parts = [method_label(setting), f"lr{_number(value(setting, 'lr'))}"]
    if value(setting, "train_size"):
        parts.append(f"n{value(setting, 'train_size')}")
    parts.append(f"ep{value(setting, 'epochs')}")
    if value(setting, "checkpoint") != "best":
        parts.append(str(value(setting, "checkpoint")))
    if value(setting, "precision") != DEFAULT_PRECISION:
        parts.append(str(value(setting, "precision")))
    return "-".join(parts)


def setting_name(setting: Mapping[str, Any]) -> str:
    """The setting's unique name: task, model, readable label and id (the W&B group)."""
    return f"{value(setting, 'task')}-{value(setting, 'model')}-{setting_label(setting)}-{setting_id(setting)}"


def setting_dir(setting: Mapping[str, Any]) -> str:
    """The setting's folder in a sweep: `<task>/<model>/<label>-<id>` (the seed's folder goes below)."""
    return f"{value(setting, 'task')}/{value(setting, 'model')}/{setting_label(setting)}-{setting_id(setting)}"


def differing(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two settings (or that only one has), sorted."""
    return sorted(key for key in first.keys() | second.keys() if first.get(key, ...) != second.get(key, ...))


def display_names(settings: Iterable[Mapping[str, Any]]) -> list[str]:
    """Short names for settings analysed together: task, model and label, plus `key=value` for every other key
    that differs among them, so that no two settings share a name (the id as a last resort)."""
    settings = list(settings)
    varying = sorted({key for a in settings for b in settings for key in differing(a, b)})
    shown = {ALIASES[k] for k in ("task", "model", "lr", "train_size", "epochs", "checkpoint", "precision")}
    extra = [key for key in varying if key not in shown and not key.startswith("imm.")]
    names = []
    for setting in settings:
        parts = [str(value(setting, "task")), str(value(setting, "model")), setting_label(setting)]
        parts += [f"{key}={_number(setting.get(key))}" for key in extra]
        names.append("-".join(parts))
    if len(set(names)) < len(names):
        names = [f"{name}-{setting_id(setting)}" for name, setting in zip(names, settings)]
    return names


def _setting_dir_resolver(*, _root_: DictConfig) -> str:
    return setting_dir(setting_of(_root_))


def register_resolver() -> None:
    """Make `${setting_dir:}` (the job folder of the config it sits in) known to OmegaConf; done at import."""
    OmegaConf.register_new_resolver("setting_dir", _setting_dir_resolver, replace=True)


register_resolver()
