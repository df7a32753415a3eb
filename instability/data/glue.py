"""GLUE classification tasks: read the official TSV layout or the hub copy, and split dev in two halves.

A task is data, not code: `conf/task/<name>.yaml` says where its files are, which columns hold the texts and the
label, how labels map to classes, how it is scored and how many rows the official files have (`TaskSpec`).
The dev set is split once, with a split seed that does not depend on the training seed, into a
validation half (model selection) and a test half (every instability measure is computed on it).
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from instability.models.metrics import check_metrics

GLUE_DIR_ENV = "GLUE_DIR"
TASK_DIR = Path(__file__).resolve().parents[2] / "conf" / "task"
SPLIT_NAMES = ("train", "dev")


@dataclass(frozen=True)
class HubSource:
    """Where the hub keeps a task: dataset, its config name, the split names and the text fields."""

    dataset: str
    config: str
    splits: dict[str, str]  # train/dev -> the hub's split name (MNLI: validation_matched / validation_mismatched)
    text_fields: tuple[str, ...]


@dataclass(frozen=True)
class TaskSpec:
    """How one GLUE task is stored and scored (one `conf/task/<name>.yaml`)."""

    name: str
    folder: str
    files: dict[str, str]  # train/dev -> file name in the folder
    header: bool
    text_columns: tuple[str | int, ...]  # TSV columns (by header name, or by position for header-less files)
    label_column: str | int
    label_map: dict[str, int]  # the file's label strings -> classes 0..C-1 (the hub's class ids)
    metrics: tuple[str, ...]  # on a 0-1 scale; the first is the task metric (model selection, SD, failed runs)
    expected_rows: dict[str, int]  # the official GLUE data rows per split (checked on load, see load_split)
    hub: HubSource

    @property
    def metric(self) -> str:
        """The task metric: accuracy (RTE, SST-2, MNLI, ...), F1 of the positive class (MRPC, QQP), MCC (CoLA)."""
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        """The number of classes C."""
        return len(set(self.label_map.values()))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TaskSpec:
        """A task from its config, checked; a task marked `unsupported` is refused with the reason it gives."""
        config = dict(OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config)
        name = config.get("name")
        if config.get("unsupported"):
            raise ValueError(f"task={name} is not supported: {config['unsupported']}")
        fields = {"name", "folder", "files", "header", "text_columns", "label_column", "label_map", "metrics",
                  "expected_rows", "hub"}
        missing, unknown = sorted(fields - set(config)), sorted(set(config) - fields - {"unsupported"})
        if missing or unknown:
            raise ValueError(f"task {name!r}: config lacks {missing or 'nothing'}, "
                             f"has unknown keys {unknown or 'none'}")
        hub = dict(config["hub"])
        spec = cls(
            name=str(name), folder=str(config["folder"]), files=dict(config["files"]), header=bool(config["header"]),
            text_columns=tuple(config["text_columns"]), label_column=config["label_column"],
            label_map={str(k): int(v) for k, v in dict(config["label_map"]).items()},
            metrics=tuple(config["metrics"]),
            expected_rows={k: int(v) for k, v in dict(config["expected_rows"]).items()},
            hub=HubSource(str(hub["dataset"]), str(hub["config"]), dict(hub["splits"]), tuple(hub["text_fields"])),
        )
        spec.check()
        return spec

    def check(self) -> None:
        """Consistent fields: 1 or 2 texts, classes 0..C-1 (C >= 2), the metrics C allows, both splits named."""
        problems = []
        if not 1 <= len(self.text_columns) <= 2 or len(self.hub.text_fields) != len(self.text_columns):
            problems.append("text_columns and hub.text_fields must both name 1 or 2 texts")
        if sorted(set(self.label_map.values())) != list(range(max(self.num_labels, 2))):
            classes = sorted(set(self.label_map.values()))
            problems.append(f"label_map must map onto classes 0..C-1 with C >= 2, not {classes}")
        if not self.metrics:
            problems.append("metrics is empty")
        for key in ("files", "expected_rows", "hub.splits"):
            table = self.hub.splits if key == "hub.splits" else getattr(self, key)
            if set(table) != set(SPLIT_NAMES):
                problems.append(f"{key} must have exactly {', '.join(SPLIT_NAMES)}")
        if problems:
            raise ValueError(f"task {self.name!r}: {'; '.join(problems)}")
        check_metrics(self.metrics, self.num_labels)


def task_names() -> list[str]:
    """The tasks `conf/task/` defines (supported or not)."""
    return sorted(path.stem for path in TASK_DIR.glob("*.yaml"))


def get_task(task: str | Mapping[str, Any] | TaskSpec) -> TaskSpec:
    """The spec of a task: given as is, from its config, or by name from `conf/task/<name>.yaml`."""
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, (Mapping, DictConfig)):
        return TaskSpec.from_config(task)
    return _task_by_name(task.lower())


@functools.cache
def _task_by_name(name: str) -> TaskSpec:
    path = TASK_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
    return TaskSpec.from_config(OmegaConf.load(path))


@dataclass(frozen=True)
class Split:
    """One split of a task: texts per field, integer labels, and stable example ids (row positions)."""

    texts: tuple[list[str], ...]
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, positions: np.ndarray) -> Split:
        """The examples at the given positions, ids kept."""
        return Split(
            texts=tuple([column[i] for i in positions] for column in self.texts),
            labels=self.labels[positions],
            ids=self.ids[positions],
        )


def _column_index(header: list[str] | None, column: str | int, path: Path) -> int:
    if isinstance(column, int):
        return column
    assert header is not None
    if column not in header:
        raise ValueError(f"{path}: column {column!r} not in header {header}")
    return header.index(column)


def read_tsv_split(task: TaskSpec, path: Path) -> Split:
    """Read one labelled GLUE TSV file: tab-separated, no quote handling, BOM stripped, last newline optional."""
    if not path.is_file():
        raise FileNotFoundError(
            f"GLUE file not found: {path}. Expected the official GLUE layout <glue_dir>/{task.folder}/"
            f"{{{','.join(task.files.values())}}}; point data.glue_dir (or the GLUE_DIR environment variable) at the "
            "folder that holds it."
        )
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows.pop(0) if task.header and rows else None
    if not rows:
        raise ValueError(f"{path}: no data rows (an empty or header-only file); expected the GLUE {task.name} data")
    text_idx = [_column_index(header, c, path) for c in task.text_columns]
    label_idx = _column_index(header, task.label_column, path)
    width = max(text_idx + [label_idx]) + 1
    texts: tuple[list[str], ...] = tuple([] for _ in text_idx)
    labels = []
    for line_no, row in enumerate(rows, start=2 if task.header else 1):
        if len(row) < width:
            raise ValueError(f"{path}, line {line_no}: expected at least {width} tab-separated fields, got {len(row)}")
        if row[label_idx] not in task.label_map:
            raise ValueError(f"{path}, line {line_no}: unknown label {row[label_idx]!r}; "
                             f"known {sorted(task.label_map)}")
        for column, idx in zip(texts, text_idx):
            column.append(row[idx])
        labels.append(task.label_map[row[label_idx]])
    return Split(texts=texts, labels=np.asarray(labels, dtype=np.int64), ids=np.arange(len(labels), dtype=np.int64))


def resolve_glue_dir(glue_dir: str | os.PathLike | None) -> Path | None:
    """The local GLUE folder: the option if given, else the GLUE_DIR environment variable, else None (use the hub)."""
    chosen = glue_dir if glue_dir not in (None, "") else os.environ.get(GLUE_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"GLUE folder not found: {path} (from {'data.glue_dir' if glue_dir else GLUE_DIR_ENV}). "
            "It must hold the tasks' folders (RTE/, MRPC/, CoLA/, SST-2/, QQP/, MNLI/, QNLI/, WNLI/) in the official "
            "GLUE layout."
        )
    return path


def load_split(task: TaskSpec, split: str, glue_dir: Path | None, check_rows: bool = True) -> Split:
    """Train or dev split of a task, from the local folder if one is set, else from the hub.

    With `check_rows` the number of rows must be the official GLUE count: a file cut at a line boundary
    parses cleanly and would otherwise shrink the data (and change the dev halves) without a word.
    """
    if glue_dir is not None:
        source = glue_dir / task.folder / task.files[split]
        data = read_tsv_split(task, source)
    else:
        source = f"the hub's {task.hub.dataset} {task.hub.config} {task.hub.splits[split]}"
        data = _load_hub_split(task, split)
    expected = task.expected_rows[split]
    if check_rows and len(data) != expected:
        raise ValueError(
            f"{source}: {len(data)} data rows, but the official GLUE {task.name} {split} set has {expected}. "
            "Replace it with the official file; for deliberately modified data set data.check_rows=false"
        )
    return data


def _load_hub_split(task: TaskSpec, split: str) -> Split:
    import datasets

    hub, hub_split = task.hub, task.hub.splits[split]
    try:
        data = datasets.load_dataset(hub.dataset, hub.config, split=hub_split)
    except Exception as error:  # offline, no cache, or hub down: all end the same way for the user
        raise RuntimeError(
            f"could not load GLUE {task.name} ({hub_split}) from the Hugging Face hub ({hub.dataset}/{hub.config}): "
            f"{error}. Without internet, point at a local GLUE folder in the official TSV layout: "
            f"data.glue_dir=/path/to/glue or export {GLUE_DIR_ENV}=/path/to/glue"
        ) from error
    texts = tuple(list(data[field]) for field in hub.text_fields)
    labels = np.asarray(data["label"], dtype=np.int64)
    if labels.size and not 0 <= labels.min() <= labels.max() < task.num_labels:
        raise ValueError(f"{hub.dataset}/{hub.config} {hub_split}: labels outside 0..{task.num_labels - 1} "
                         "(an unlabelled test split?)")
    return Split(texts=texts, labels=labels, ids=np.asarray(data["idx"], dtype=np.int64))


def split_dev(num_examples: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the validation half and the test half (the larger half, ceil(n/2)), sorted.

    The split depends only on the split seed and the dev size, so every training seed shares the same halves.
    """
    order = np.random.default_rng(split_seed).permutation(num_examples)
    num_val = num_examples // 2
    return np.sort(order[:num_val]), np.sort(order[num_val:])


def subsample_train(num_examples: int, train_size: int | None, seed: int) -> np.ndarray:
    """Positions of a fixed random training subset (its own seed), or all positions."""
    if train_size is None:
        return np.arange(num_examples)
    if not 0 < train_size <= num_examples:
        raise ValueError(f"data.train_size={train_size} must be between 1 and the training set size {num_examples}")
    return np.sort(np.random.default_rng(seed).choice(num_examples, size=train_size, replace=False))


def majority_class(labels: np.ndarray) -> int:
    """The most frequent label (the smaller label on ties)."""
    return int(np.bincount(labels).argmax())
