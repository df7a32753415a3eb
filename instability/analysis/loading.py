"""Find run records, read them only through the record reader, group them into settings by their `setting`
dict (never by folder names), and load one setting's outputs for the measures.

Unusable runs are never dropped silently: each becomes a `Skipped` entry naming the run and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from instability.records import CHECKPOINTS, RecordError, RunRecord, find_records, is_finite_number, read_record, setting_name


class AnalysisError(RuntimeError):
    """The analysis cannot go on; the message says why and names the folder, setting or run."""


@dataclass(frozen=True)
class Skipped:
    """A run, or a whole setting, left out of the analysis."""

    run: str
    reason: str
    setting: str = ""
    seed: int | None = None


@dataclass
class SettingRuns:
    """The readable finished runs of one training setting, in seed order."""

    key: str
    name: str
    setting: dict[str, Any]
    checkpoint: str
    records: list[RunRecord]


@dataclass
class SettingData:
    """What the measures need from one setting's usable runs (M runs, N test examples, L layers, D dims)."""

    key: str
    name: str
    setting: dict[str, Any]
    checkpoint: str
    metric: str
    seeds: list[int]
    runs: list[str]
    scores: torch.Tensor  # [M] float64, the task metric of the measured checkpoint on the test half
    failed: list[bool | None]
    majority_baseline: float | None
    gold: torch.Tensor  # [N] test-half labels
    logits: torch.Tensor  # [M, N, C] float32
    hidden: torch.Tensor  # [M, L, N, D] float32, first-token states of every layer

    @property
    def predictions(self) -> torch.Tensor:
        """Predicted labels [M, N]."""
        return self.logits.argmax(-1)

    @property
    def num_classes(self) -> int:
        return self.logits.shape[-1]


def setting_key(setting: dict[str, Any]) -> str:
    """A canonical text form of a setting dict: runs with equal keys belong to one setting."""
    return json.dumps(setting, sort_keys=True, separators=(",", ":"), default=str)


def record_paths(roots: Sequence[str | os.PathLike]) -> list[Path]:
    """The record folders under `roots` (any depth); `AnalysisError` when a folder is missing or holds none."""
    try:
        paths = find_records(roots)
    except FileNotFoundError as error:
        raise AnalysisError(str(error)) from None
    if not paths:
        where = ", ".join(str(root) for root in roots)
        raise AnalysisError(f"no run records under {where}: is this a sweep folder (job folders with record/)?")
    return paths


def group_settings(
    paths: Sequence[Path],
    checkpoint: str | None = None,
    advance: Callable[[int], None] = lambda steps: None,
) -> tuple[list[SettingRuns], list[Skipped]]:
    """Read every record and group the finished, usable ones into settings by their `setting` dict.

    `checkpoint` overrides each record's `measure_checkpoint`; `advance(1)` reports each record read.
    A later record with a seed already seen in its setting is skipped. `AnalysisError` when no record is usable.
    """
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise AnalysisError(f"checkpoint must be one of {CHECKPOINTS} or null, not {checkpoint!r}")
    groups: dict[str, list[RunRecord]] = {}
    skipped: list[Skipped] = []
    for path in paths:
        record, problem = _usable(path, checkpoint)
        advance(1)
        if problem is not None:
            skipped.append(problem)
        else:
            groups.setdefault(setting_key(record.setting), []).append(record)
    if not groups:
        reasons = "; ".join(f"{s.run}: {s.reason}" for s in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        raise AnalysisError(f"no finished, usable run record among {len(paths)} found: {reasons}{more}")
    names = _unique_names({key: records[0].setting for key, records in groups.items()})
    settings = []
    for key in sorted(groups, key=names.get):
        records = sorted(groups[key], key=lambda r: (r.seed, str(r.path)))
        kept: dict[int, RunRecord] = {}
        for record in records:
            if record.seed in kept:
                skipped.append(Skipped(record.name, f"seed {record.seed} appears twice in setting {names[key]} "
                                       f"(also {kept[record.seed].name}); the first is kept", names[key], record.seed))
            else:
                kept[record.seed] = record
        settings.append(SettingRuns(key, names[key], records[0].setting, _checkpoint(records[0], checkpoint),
                                    list(kept.values())))
    return settings, skipped


def _checkpoint(record: RunRecord, override: str | None) -> str:
    return override or record.meta.get("measure_checkpoint") or record.setting.get("measure_checkpoint", "best")


def _usable(path: Path, checkpoint: str | None) -> tuple[RunRecord | None, Skipped | None]:
    """The record at `path`, or why it cannot be used (unreadable, diverged, no score)."""
    try:
        record = read_record(path)
    except RecordError as error:
        return None, Skipped(str(path.parent), str(error))
    if not record.finished:
        return None, Skipped(record.name, f"run {record.status} (no outputs to measure)", setting_name(record.setting),
                             record.seed)
    chosen = _checkpoint(record, checkpoint)
    if chosen not in CHECKPOINTS:
        return None, Skipped(record.name, f"unknown measure_checkpoint {chosen!r}", setting_name(record.setting),
                             record.seed)
    try:
        value = record.score(chosen, "test")
    except RecordError as error:
        return None, Skipped(record.name, str(error), setting_name(record.setting), record.seed)
    if not is_finite_number(value):
        return None, Skipped(record.name, f"test {record.meta['metric']} of the {chosen} checkpoint is {value}",
                             setting_name(record.setting), record.seed)
    return record, None


def _unique_names(settings: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Readable setting names; settings that share one get a short hash of their key appended."""
    names = {key: setting_name(setting) for key, setting in settings.items()}
    counts = Counter(names.values())
    return {key: name if counts[name] == 1 else f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"
            for key, name in names.items()}


def load_setting(
    runs: SettingRuns,
    min_runs: int = 2,
    advance: Callable[[int], None] = lambda steps: None,
) -> tuple[SettingData | None, list[Skipped]]:
    """Load one setting's test-half outputs; hidden states go one record at a time into one [M, L, N, D] tensor.

    Runs whose outputs hold NaN/inf, or whose test half (example ids, labels) or output shapes differ from
    the setting's majority, are skipped. Returns None for the data when fewer than `min_runs` runs are left.
    `advance(k)` reports k more runs handled.
    """
    skipped: list[Skipped] = []

    def skip(record: RunRecord, reason: str) -> None:
        skipped.append(Skipped(record.name, reason, runs.name, record.seed))

    loaded = []
    for record in runs.records:
        try:
            loaded.append((record, record.example_ids, record.labels, record.logits(runs.checkpoint)))
        except RecordError as error:
            skip(record, str(error))
    loaded = _same_test_half(loaded, runs, skip)
    advance(len(runs.records) - len(loaded))
    if len(loaded) < min_runs:
        advance(len(loaded))
        return None, skipped + [_too_few(runs, len(loaded), min_runs)]
    hidden = torch.empty((len(loaded), *loaded[0][0].shapes[f"{runs.checkpoint}/hidden"]), dtype=torch.float32)
    kept = []
    for record, ids, labels, logits in loaded:
        try:
            hidden[len(kept)] = record.hidden(runs.checkpoint)
            kept.append((record, ids, labels, logits))
        except RecordError as error:
            skip(record, str(error))
        advance(1)
    if len(kept) < min_runs:
        return None, skipped + [_too_few(runs, len(kept), min_runs)]
    records = [record for record, *_ in kept]
    data = SettingData(
        key=runs.key,
        name=runs.name,
        setting=runs.setting,
        checkpoint=runs.checkpoint,
        metric=records[0].meta["metric"],
        seeds=[record.seed for record in records],
        runs=[record.name for record in records],
        scores=torch.tensor([record.score(runs.checkpoint, "test") for record in records], dtype=torch.float64),
        failed=[record.failed for record in records],
        majority_baseline=records[0].meta.get("majority_baseline"),
        gold=kept[0][2],
        logits=torch.stack([logits.float() for *_, logits in kept]),
        hidden=hidden[: len(kept)],
    )
    return data, skipped


def _same_test_half(loaded: list[tuple], runs: SettingRuns, skip: Callable[[RunRecord, str], None]) -> list[tuple]:
    """Keep the runs that share the most common test half and output shapes; skip the others, saying what differs."""
    signatures = [
        (tuple(ids.tolist()), tuple(labels.tolist()), logits.shape[-1], record.shapes[f"{runs.checkpoint}/hidden"])
        for record, ids, labels, logits in loaded
    ]
    if not signatures:
        return loaded
    reference, majority = Counter(signatures).most_common(1)[0]
    kept = []
    for entry, signature in zip(loaded, signatures):
        if signature == reference:
            kept.append(entry)
            continue
        what = [label for label, mine, theirs in zip(
            ("example ids", "test labels", "number of classes", "hidden-state shape [L, N, D]"), signature, reference)
            if mine != theirs]
        skip(entry[0], f"test half differs from the other {majority} run(s) of setting {runs.name}: "
                       f"{', '.join(what)} differ")
    return kept


def _too_few(runs: SettingRuns, usable: int, min_runs: int) -> Skipped:
    return Skipped(runs.name, f"setting has {usable} usable run(s), the analysis needs at least {min_runs}", runs.name)


def roots_of(sweep_dir: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The sweep folders from a config value: one folder or a list of them."""
    if isinstance(sweep_dir, (str, os.PathLike)):
        return [Path(sweep_dir)]
    roots = [Path(str(root)) for root in sweep_dir]
    if not roots:
        raise AnalysisError("sweep_dir is an empty list: give at least one sweep folder")
    return roots
