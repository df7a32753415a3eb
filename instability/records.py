"""Run records: everything the measures need from one fine-tuning run, in safetensors and JSON (never pickle).

This module is the only place that spells a record's layout. A record is a folder `<job dir>/record/` holding
`record.json` and, for a run with outputs, `tensors.safetensors`:

    example_ids [N] int64, labels [N] int64                test half, in a fixed order
    val_example_ids [Nv] int64, val_labels [Nv] int64      validation half
    <ckpt>/logits [N, C], <ckpt>/hidden [L, N, D], <ckpt>/val_logits [Nv, C]   float32, for ckpt in best, final

`record.json` holds the status, the seed, the training setting (instability/setting.py) and its id, the task
metric, the scores and failure flags of each checkpoint on each dev half, the majority-class baseline of the
test half, the steps done and planned, where and in which precision the run ran, timings, versions, W&B ids,
the resolved config and the overrides. `build_record` makes one; `write_record` writes it atomically; `read_record`
validates one.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from instability.atomic import dump_json, fsync_dir, staged_folder
from instability.models.metrics import score
from instability.setting import differing, setting_id, setting_name, value

SCHEMA_VERSION = 2
RECORD_DIR = "record"
META_FILE = "record.json"
TENSOR_FILE = "tensors.safetensors"
LOCK_FILE = ".record.lock"
CHECKPOINTS = ("best", "final")
HALVES = ("val", "test")
# finished: trained the planned steps; stopped: ended early (time limit, early stopping, a callback), outputs kept
# but left out of analyses by default; diverged: NaN/inf loss or outputs, no outputs.
STATUSES = ("finished", "stopped", "diverged")
WITH_OUTPUTS = ("finished", "stopped")


class RecordError(ValueError):
    """A record is missing, partial, corrupt or inconsistent; the message names the record."""


@dataclass(frozen=True)
class Outputs:
    """One checkpoint's outputs on the dev halves."""

    test_logits: torch.Tensor  # [N, C]
    test_hidden: torch.Tensor  # [L, N, D] first-token states of every layer
    val_logits: torch.Tensor  # [Nv, C]


@dataclass(frozen=True)
class Halves:
    """Example ids and gold labels of the two dev halves, in loader order."""

    test_ids: torch.Tensor
    test_labels: torch.Tensor
    val_ids: torch.Tensor
    val_labels: torch.Tensor


def majority_baseline(metric: str, labels: torch.Tensor) -> tuple[int, float]:
    """The majority class of `labels` (the smaller on ties) and the task metric of always predicting it."""
    majority = int(torch.bincount(labels).argmax())
    return majority, score((metric,), torch.full_like(labels, majority), labels)[metric]


def build_record(
    *,
    seed: int,
    setting: Mapping[str, Any],
    metrics: tuple[str, ...],
    halves: Halves,
    outputs: Mapping[str, Outputs] | None,
    status: str = "finished",
    **info: Any,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The metadata and tensors of a run. `metrics` are the task's (the first is the task metric); `outputs` has
    both checkpoints unless the run diverged. A checkpoint *failed* when its test-half task metric is at or below
    the majority-class baseline of the test half (SPEC section 1); a diverged run failed at both. `info` adds
    descriptive fields (config, overrides, steps, runtime, timings, versions, wandb)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    metric = metrics[0]
    majority, baseline = majority_baseline(metric, halves.test_labels)
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "seed": int(seed),
        "setting": dict(setting),
        "setting_id": setting_id(setting),
        "metric": metric,
        "majority": {"label": majority, "baseline": baseline},
        "metrics": {},
        "failed": {checkpoint: True for checkpoint in CHECKPOINTS},
        "created": datetime.now(timezone.utc).isoformat(),
        **info,
    }
    if status not in WITH_OUTPUTS:
        return meta, {}
    if outputs is None or set(outputs) != set(CHECKPOINTS):
        raise ValueError(f"a {status} run needs outputs of both checkpoints {CHECKPOINTS}")
    tensors = {"example_ids": halves.test_ids, "labels": halves.test_labels,
               "val_example_ids": halves.val_ids, "val_labels": halves.val_labels}
    for checkpoint in CHECKPOINTS:
        out = outputs[checkpoint]
        tensors |= {f"{checkpoint}/logits": out.test_logits, f"{checkpoint}/hidden": out.test_hidden,
                    f"{checkpoint}/val_logits": out.val_logits}
        meta["metrics"][checkpoint] = {
            "val": score(metrics, out.val_logits.argmax(-1), halves.val_labels),
            "test": score(metrics, out.test_logits.argmax(-1), halves.test_labels),
        }
        meta["failed"][checkpoint] = bool(meta["metrics"][checkpoint]["test"][metric] <= baseline + 1e-12)
    layers, examples, dim = outputs["best"].test_hidden.shape
    meta["shapes"] = {"layers": layers, "examples": examples, "dim": dim,
                      "classes": int(outputs["best"].test_logits.shape[-1]),
                      "val_examples": int(halves.val_ids.numel())}
    # Own, contiguous float32 copies: best and final may be the same tensors (no validation ever ran), which
    # safetensors refuses to store twice.
    tensors = {k: (v.float() if v.is_floating_point() else v).detach().cpu().clone().contiguous()
               for k, v in tensors.items()}
    return meta, tensors


@contextmanager
def _locked(job_dir: Path) -> Iterator[None]:
    with open(job_dir / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def same_run(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """What differs between two records' runs (setting keys, or `seed`); empty when they are the same run."""
    keys = differing(first["setting"], second["setting"])
    return keys + (["seed"] if first["seed"] != second["seed"] else [])


def write_record(job_dir: str | os.PathLike, meta: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> Path:
    """Write a record atomically into `job_dir/record/`. Under a lock, a record of another run (other setting or
    seed) already there is an error; one of the same run is replaced only once the new one is complete."""
    job_dir = Path(job_dir)
    target = job_dir / RECORD_DIR
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        with _locked(job_dir):
            earlier = _readable_meta(target)
            if earlier is not None and (different := same_run(earlier, meta)):
                raise RecordError(f"{job_dir} holds the record of another run (differs in: {', '.join(different)}); "
                                  "it is left as it is: choose another folder (name=... or hydra.sweep.dir=...)")
            with staged_folder(target) as staging:
                if tensors:
                    save_file(dict(tensors), staging / TENSOR_FILE)
                with (staging / META_FILE).open("w", encoding="utf-8") as handle:
                    dump_json(meta, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            fsync_dir(job_dir)
    except OSError as error:
        raise OSError(f"cannot write a run record in {job_dir}: {error}; earlier records are untouched") from error
    return target


def _readable_meta(record_dir: Path) -> dict[str, Any] | None:
    try:
        return read_record(record_dir).meta
    except RecordError:
        return None


@dataclass
class RunRecord:
    """A validated record. Metadata and shapes are read at once; tensors on demand."""

    path: Path
    meta: dict[str, Any]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The job folder's path, for messages."""
        return str(self.path.parent)

    @property
    def seed(self) -> int:
        return self.meta["seed"]

    @property
    def status(self) -> str:
        return self.meta["status"]

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def has_outputs(self) -> bool:
        return self.status in WITH_OUTPUTS

    @property
    def setting(self) -> dict[str, Any]:
        """The training setting (flat dotted keys; see instability/setting.py)."""
        return self.meta["setting"]

    @property
    def setting_id(self) -> str:
        return self.meta["setting_id"]

    @property
    def setting_name(self) -> str:
        return setting_name(self.setting)

    @property
    def task(self) -> str:
        return str(value(self.setting, "task"))

    @property
    def measure_checkpoint(self) -> str:
        """The checkpoint the measures use by default: best, or final for failed-run studies."""
        return str(value(self.setting, "checkpoint") or "best")

    @property
    def majority_baseline(self) -> float:
        return float(self.meta["majority"]["baseline"])

    def failed(self, checkpoint: str) -> bool:
        """Whether `checkpoint` is at or below the test half's majority baseline (a diverged run failed)."""
        return bool(self.meta["failed"][_checked(checkpoint)])

    def score(self, checkpoint: str = "best", half: str = "test", metric: str | None = None) -> float:
        """A task metric of one checkpoint on one dev half (the task metric unless `metric` names another)."""
        name = metric or self.meta["metric"]
        try:
            result = self.meta["metrics"][checkpoint][half][name]
        except (KeyError, TypeError):
            raise RecordError(f"{self.name}: no {name} for {checkpoint}/{half}") from None
        if not is_finite_number(result):
            raise RecordError(f"{self.name}: {name} of {checkpoint}/{half} is {result!r}, not a finite number")
        return float(result)

    def tensor(self, key: str) -> torch.Tensor:
        """One stored tensor, checked for NaN/inf."""
        if not self.has_outputs:
            raise RecordError(f"{self.name}: run status is {self.status!r}, it has no outputs")
        with safe_open(self.path / TENSOR_FILE, framework="pt") as handle:
            data = handle.get_tensor(key)
        if data.is_floating_point() and not bool(torch.isfinite(data).all()):
            raise RecordError(f"{self.name}: {key} holds NaN or inf values")
        return data

    @property
    def example_ids(self) -> torch.Tensor:
        return self.tensor("example_ids")

    @property
    def labels(self) -> torch.Tensor:
        return self.tensor("labels")

    def logits(self, checkpoint: str = "best") -> torch.Tensor:
        """Test-half logits [N, C] of the best or the final checkpoint."""
        return self.tensor(f"{_checked(checkpoint)}/logits")

    def hidden(self, checkpoint: str = "best") -> torch.Tensor:
        """Test-half first-token states [layers, N, dim] of the best or the final checkpoint."""
        return self.tensor(f"{_checked(checkpoint)}/hidden")


def _checked(checkpoint: str) -> str:
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, not {checkpoint!r}")
    return checkpoint


# Fields read by training and analysis, with their JSON types (bool is not an int here).
_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "seed": (int,), "setting": (dict,), "setting_id": (str,), "metric": (str,),
    "majority": (dict,), "metrics": (dict,), "failed": (dict,),
}


def _validate(meta: Any, where: Path) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise RecordError(f"{where}: record metadata is not a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"{where}: record schema version {version!r}; this release reads version {SCHEMA_VERSION} "
                          "(records of older releases cannot be analysed with it: rerun the job, or analyse them with "
                          "the release that wrote them)")
    problems = []
    for key, types in _TYPES.items():
        if key not in meta:
            problems.append(f"lacks {key}")
        elif not isinstance(meta[key], types) or isinstance(meta[key], bool):
            problems.append(f"{key} is {meta[key]!r}, expected {' or '.join(t.__name__ for t in types)}")
    if problems:
        raise RecordError(f"{where}: invalid record metadata: {'; '.join(problems)}")
    if meta["status"] not in STATUSES:
        problems.append(f"unknown status {meta['status']!r}")
    if meta["seed"] < 0:
        problems.append(f"seed {meta['seed']} is negative")
    if not all(isinstance(k, str) and isinstance(v, (str, int, float, bool, list, type(None)))
               for k, v in meta["setting"].items()):
        problems.append("setting is not a flat object of plain values")
    else:
        problems += _setting_problems(meta["setting"])
        if meta["setting_id"] != setting_id(meta["setting"]):
            problems.append("setting_id does not match the setting")
    if not all(isinstance(meta["failed"].get(c), bool) for c in CHECKPOINTS):
        problems.append(f"failed must hold true/false for {', '.join(CHECKPOINTS)}")
    if not is_finite_number(meta["majority"].get("baseline")):
        problems.append("majority.baseline is not a finite number")
    if problems:
        raise RecordError(f"{where}: invalid record metadata: {'; '.join(problems)}")
    return meta


def _setting_problems(setting: Mapping[str, Any]) -> list[str]:
    """The setting keys that analyses read, checked for type and range."""
    problems = []
    for alias in ("task", "model", "imm"):
        if not isinstance(value(setting, alias), str):
            problems.append(f"setting {alias} is {value(setting, alias)!r}, expected a name")
    lr = value(setting, "lr")
    if not is_finite_number(lr) or lr <= 0:
        problems.append(f"setting lr is {lr!r}, expected a positive number")
    if value(setting, "checkpoint") not in CHECKPOINTS:
        problems.append(f"setting measure_checkpoint is {value(setting, 'checkpoint')!r}, "
                        f"expected one of {CHECKPOINTS}")
    for alias in ("train_size", "epochs"):
        if value(setting, alias) is not None and not isinstance(value(setting, alias), int):
            problems.append(f"setting {alias} is {value(setting, alias)!r}, expected a whole number")
    return problems


def read_record(path: str | os.PathLike) -> RunRecord:
    """Load and validate a record, given its folder or the job folder that holds it."""
    path = Path(path)
    if path.name != RECORD_DIR and (path / RECORD_DIR).is_dir():
        path = path / RECORD_DIR
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise RecordError(f"{path}: no {META_FILE}; not a finished run record")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"{meta_path}: unreadable record metadata ({error})") from error
    record = RunRecord(path=path, meta=_validate(meta, meta_path))
    if record.has_outputs:
        record.shapes = _tensor_shapes(path / TENSOR_FILE)
        _check_shapes(record)
    return record


def _tensor_shapes(tensor_path: Path) -> dict[str, tuple[int, ...]]:
    if not tensor_path.is_file():
        raise RecordError(f"{tensor_path.parent}: run with outputs but without {TENSOR_FILE}")
    try:
        with safe_open(tensor_path, framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for truncated or corrupt files
        raise RecordError(f"{tensor_path}: corrupt tensor file ({error})") from error
    wrong = [f"{k} is {t}" for k, t in dtypes.items() if t != ("F32" if "/" in k else "I64")]
    if wrong:
        raise RecordError(f"{tensor_path}: unexpected tensor types: {', '.join(wrong)}")
    return shapes


def _check_shapes(record: RunRecord) -> None:
    """Every tensor present, with the shapes the metadata states (checked before any data is read)."""
    shapes = record.shapes
    expected = ["example_ids", "labels", "val_example_ids", "val_labels"]
    expected += [f"{c}/{k}" for c in CHECKPOINTS for k in ("logits", "hidden", "val_logits")]
    missing = [key for key in expected if key not in shapes]
    if missing:
        raise RecordError(f"{record.name}: tensors missing: {', '.join(missing)}")
    stated = record.meta.get("shapes")
    if not isinstance(stated, dict) or not all(is_count(stated.get(k)) for k in
                                               ("layers", "examples", "dim", "classes", "val_examples")):
        raise RecordError(f"{record.name}: record metadata lacks the tensor shapes (layers, examples, dim, classes)")
    n, nv, classes = stated["examples"], stated["val_examples"], stated["classes"]
    want = {"example_ids": (n,), "labels": (n,), "val_example_ids": (nv,), "val_labels": (nv,)}
    for checkpoint in CHECKPOINTS:
        want |= {f"{checkpoint}/logits": (n, classes), f"{checkpoint}/val_logits": (nv, classes),
                 f"{checkpoint}/hidden": (stated["layers"], n, stated["dim"])}
    problems = [f"{key} has shape {list(shapes[key])}, expected {list(shape)}"
                for key, shape in want.items() if shapes[key] != shape]
    if problems:
        raise RecordError(f"{record.name}: inconsistent record: {'; '.join(problems)}")


def find_records(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Record folders under the given folders, at any depth, sorted (partial writes are never found)."""
    found = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"sweep folder not found: {root}")
        found.update(meta.parent for meta in root.rglob(f"{RECORD_DIR}/{META_FILE}"))
    return sorted(found)


def is_finite_number(x: Any) -> bool:
    """True for a real number that is not NaN or inf (JSON metrics of a diverged run are null)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_count(x: Any) -> bool:
    """A positive whole number (bool excluded)."""
    return isinstance(x, int) and not isinstance(x, bool) and x > 0
