"""GLUE RTE, MRPC, CoLA and SST-2: read the official TSV layout or the hub copy, and split dev in two halves.

The dev set is split once, with a split seed that does not depend on the training seed, into a
validation half (model selection) and a test half (every instability measure is computed on it).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GLUE_DIR_ENV = "GLUE_DIR"
HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class TaskSpec:
    """How one GLUE task is stored and scored."""

    name: str
    folder: str
    text_columns: tuple[str, ...]  # TSV columns (by header name, or by position for header-less files)
    label_column: str | int
    label_map: dict[str, int]
    has_header: bool
    hub_text_fields: tuple[str, ...]
    metrics: tuple[str, ...]  # on a 0-1 scale; the first is the task metric (model selection, SD, failed runs)
    expected_rows: dict[str, int]  # the official GLUE data rows per split (checked on load, see load_split)

    @property
    def metric(self) -> str:
        """The task metric: accuracy (RTE, SST-2), F1 of the positive class (MRPC), Matthews correlation (CoLA)."""
        return self.metrics[0]


TASKS: dict[str, TaskSpec] = {
    "rte": TaskSpec(
        name="rte",
        folder="RTE",
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        label_map={"entailment": 0, "not_entailment": 1},
        has_header=True,
        hub_text_fields=("sentence1", "sentence2"),
        metrics=("accuracy",),
        expected_rows={"train": 2490, "dev": 277},
    ),
    "mrpc": TaskSpec(
        name="mrpc",
        folder="MRPC",
        text_columns=("#1 String", "#2 String"),
        label_column="Quality",
        label_map={"0": 0, "1": 1},
        has_header=True,
        hub_text_fields=("sentence1", "sentence2"),
        metrics=("f1", "accuracy"),
        expected_rows={"train": 3668, "dev": 408},
    ),
    "cola": TaskSpec(
        name="cola",
        folder="CoLA",
        text_columns=(3,),  # source, label, original mark, sentence: no header
        label_column=1,
        label_map={"0": 0, "1": 1},
        has_header=False,
        hub_text_fields=("sentence",),
        metrics=("mcc",),
        expected_rows={"train": 8551, "dev": 1043},
    ),
    "sst2": TaskSpec(
        name="sst2",
        folder="SST-2",
        text_columns=("sentence",),  # kept as in the file (and the hub): train/dev sentences end with a space
        label_column="label",
        label_map={"0": 0, "1": 1},
        has_header=True,
        hub_text_fields=("sentence",),
        metrics=("accuracy",),
        expected_rows={"train": 67349, "dev": 872},
    ),
}


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


def get_task(name: str) -> TaskSpec:
    """The spec of a task, or an error that lists the known tasks."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


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
            "{train,dev}.tsv; point data.glue_dir (or the GLUE_DIR environment variable) at the folder that holds it."
        )
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows.pop(0) if task.has_header and rows else None
    if not rows:
        raise ValueError(f"{path}: no data rows (an empty or header-only file); expected the GLUE {task.name} data")
    text_idx = [_column_index(header, c, path) for c in task.text_columns]
    label_idx = _column_index(header, task.label_column, path)
    width = max(text_idx + [label_idx]) + 1
    texts: tuple[list[str], ...] = tuple([] for _ in text_idx)
    labels = []
    for line_no, row in enumerate(rows, start=2 if task.has_header else 1):
        if len(row) < width:
            raise ValueError(f"{path}, line {line_no}: expected at least {width} tab-separated fields, got {len(row)}")
        if row[label_idx] not in task.label_map:
            raise ValueError(f"{path}, line {line_no}: unknown label {row[label_idx]!r}; known {sorted(task.label_map)}")
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
            "It must hold RTE/, MRPC/, CoLA/ (and SST-2/) with train.tsv and dev.tsv in the official GLUE layout."
        )
    return path


def load_split(task: TaskSpec, split: str, glue_dir: Path | None, check_rows: bool = True) -> Split:
    """Train or dev split of a task, from the local folder if one is set, else from the hub.

    With `check_rows` the number of rows must be the official GLUE count: a file cut at a line boundary
    parses cleanly and would otherwise shrink the data (and change the dev halves) without a word.
    """
    if glue_dir is not None:
        source = glue_dir / task.folder / f"{split}.tsv"
        data = read_tsv_split(task, source)
    else:
        source = f"the hub's {HUB_DATASET} {task.name} {split}"
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

    hub_split = "validation" if split == "dev" else split
    try:
        data = datasets.load_dataset(HUB_DATASET, task.name, split=hub_split)
    except Exception as error:  # offline, no cache, or hub down: all end the same way for the user
        raise RuntimeError(
            f"could not load GLUE {task.name} ({hub_split}) from the Hugging Face hub ({HUB_DATASET}): {error}. "
            f"Without internet, point at a local GLUE folder in the official TSV layout: "
            f"data.glue_dir=/path/to/glue or export {GLUE_DIR_ENV}=/path/to/glue"
        ) from error
    texts = tuple(list(data[field]) for field in task.hub_text_fields)
    return Split(texts=texts, labels=np.asarray(data["label"], dtype=np.int64), ids=np.asarray(data["idx"], dtype=np.int64))


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
