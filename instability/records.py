"""Run records: everything the measures need from one fine-tuning run, in safetensors and JSON (never pickle).

A record is a folder `<job dir>/record/` holding `record.json` (config, seed, metrics, status, timings, ...)
and, for a finished run, `tensors.safetensors`:

    example_ids [N] int64, labels [N] int64                test half, in a fixed order
    val_example_ids [Nv] int64, val_labels [Nv] int64      validation half
    <ckpt>/logits [N, C], <ckpt>/hidden [L, N, D], <ckpt>/val_logits [Nv, C]   for ckpt in best, final

The folder is written under a temporary name and renamed into place, so a run killed mid-write leaves no
folder that the reader accepts.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SCHEMA_VERSION = 1
RECORD_DIR = "record"
META_FILE = "record.json"
TENSOR_FILE = "tensors.safetensors"
CHECKPOINTS = ("best", "final")
STATUSES = ("finished", "diverged")
REQUIRED_META = ("schema_version", "status", "seed", "split_seed", "task", "metric", "setting", "metrics", "config")


class RecordError(ValueError):
    """A record is missing, partial, corrupt or inconsistent; the message names the record."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file or folder made by `tempfile` (always private, 0600/0700) the permissions an ordinary
    `open`/`mkdir` would give it, so records and reports stay readable by the rest of a research group."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_UMASK)


def write_record(job_dir: str | os.PathLike, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write a record atomically into `job_dir/record/`, replacing an earlier one only once the new one is complete."""
    job_dir = Path(job_dir)
    meta = {"schema_version": SCHEMA_VERSION, **meta}
    target = job_dir / RECORD_DIR
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".record-", dir=job_dir))
    except OSError as error:
        raise OSError(f"cannot write a run record in {job_dir}: {error}") from error
    try:
        if tensors:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, staging / TENSOR_FILE)
        _write_json(staging / META_FILE, meta)
        apply_umask(staging)
        _fsync_dir(staging)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=".record-old-", dir=job_dir))
            os.replace(target, retired / RECORD_DIR)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
        _fsync_dir(job_dir)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise OSError(f"cannot write a run record in {job_dir}: {error}; earlier records are untouched") from error
    return target


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(handle)
    try:
        _write_json(Path(temporary), data)
        apply_umask(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_json(path: Path, data: Any) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, allow_nan=False, default=str)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass
class RunRecord:
    """A validated record. Metadata and ids/labels are read at once; logits and hidden states on demand."""

    path: Path
    meta: dict[str, Any]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The job folder's path, for messages."""
        return str(self.path.parent)

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    @property
    def status(self) -> str:
        return self.meta["status"]

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def setting(self) -> dict[str, Any]:
        """What defines the training setting (task, model, mitigation, lr, ...): runs are grouped by it."""
        return self.meta["setting"]

    @property
    def failed(self) -> bool | None:
        """Whether the final checkpoint is at or below the majority-class baseline on the test half (SPEC)."""
        return self.meta.get("failed")

    def score(self, checkpoint: str = "best", half: str = "test", metric: str | None = None) -> float:
        """A task metric of one checkpoint on one dev half (the task metric unless `metric` names another)."""
        try:
            return float(self.meta["metrics"][checkpoint][half][metric or self.meta["metric"]])
        except (KeyError, TypeError):
            raise RecordError(f"{self.name}: no {metric or self.meta['metric']} for {checkpoint}/{half}") from None

    def tensor(self, key: str) -> torch.Tensor:
        """One stored tensor, checked for NaN/inf."""
        if not self.finished:
            raise RecordError(f"{self.name}: run status is {self.status!r}, it has no outputs")
        with safe_open(self.path / TENSOR_FILE, framework="pt") as handle:
            value = handle.get_tensor(key)
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise RecordError(f"{self.name}: {key} holds NaN or inf values")
        return value

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
    if not isinstance(meta, dict):
        raise RecordError(f"{meta_path}: record metadata is not a JSON object")
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise RecordError(f"{meta_path}: record metadata lacks {', '.join(missing)}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise RecordError(f"{meta_path}: schema version {meta['schema_version']}, this reader knows {SCHEMA_VERSION}")
    if meta["status"] not in STATUSES:
        raise RecordError(f"{meta_path}: unknown status {meta['status']!r}")
    record = RunRecord(path=path, meta=meta)
    if record.finished:
        record.shapes = _tensor_shapes(path / TENSOR_FILE)
        _check_shapes(record)
    return record


def _tensor_shapes(tensor_path: Path) -> dict[str, tuple[int, ...]]:
    if not tensor_path.is_file():
        raise RecordError(f"{tensor_path.parent}: finished run without {TENSOR_FILE}")
    try:
        with safe_open(tensor_path, framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for truncated or corrupt files
        raise RecordError(f"{tensor_path}: corrupt tensor file ({error})") from error


def _check_shapes(record: RunRecord) -> None:
    shapes = record.shapes
    expected = ["example_ids", "labels", "val_example_ids", "val_labels"]
    expected += [f"{c}/{k}" for c in CHECKPOINTS for k in ("logits", "hidden", "val_logits")]
    missing = [key for key in expected if key not in shapes]
    if missing:
        raise RecordError(f"{record.name}: tensors missing: {', '.join(missing)}")
    (n,) = shapes["example_ids"]
    (n_val,) = shapes["val_example_ids"]
    problems = []
    if shapes["labels"] != (n,) or shapes["val_labels"] != (n_val,):
        problems.append("labels and example ids differ in length")
    for checkpoint in CHECKPOINTS:
        logits, hidden = shapes[f"{checkpoint}/logits"], shapes[f"{checkpoint}/hidden"]
        if len(logits) != 2 or logits[0] != n:
            problems.append(f"{checkpoint}/logits has shape {logits}, expected [{n}, classes]")
        if len(hidden) != 3 or hidden[1] != n:
            problems.append(f"{checkpoint}/hidden has shape {hidden}, expected [layers, {n}, dim]")
        if shapes[f"{checkpoint}/val_logits"][:1] != (n_val,):
            problems.append(f"{checkpoint}/val_logits does not match the validation half")
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


def setting_name(setting: dict[str, Any]) -> str:
    """A short readable name of a training setting (the W&B group), e.g. `rte-minilm-llrd-lr2e-05-n200`."""
    parts = [setting["task"], setting["model"], setting["imm"]["name"], f"lr{setting['lr']:g}"]
    if setting.get("train_size"):
        parts.append(f"n{setting['train_size']}")
    if setting.get("measure_checkpoint") == "final":
        parts.append("final")
    return "-".join(parts)


def is_finite_number(value: Any) -> bool:
    """True for a real number that is not NaN or inf (JSON metrics of a diverged run are null)."""
    return isinstance(value, (int, float)) and math.isfinite(value)
