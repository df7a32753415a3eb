"""Find run records, read them only through the record reader, group them into settings by their `setting_id`
(never by folder names), and load one setting's outputs for the measures.

Unusable runs are never dropped silently: each becomes a `Skipped` entry naming the run and the problem. Diverged
runs (no outputs) are also kept per setting: they count as failed runs, though no distance can include them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from instability.records import CHECKPOINTS, RecordError, RunRecord, find_records, is_finite_number, read_record
from instability.setting import display_names

FLOAT_BYTES = 4  # outputs are stored and loaded as float32


class AnalysisError(RuntimeError):
    """The analysis cannot go on; the message says why and names the folder, setting, run or option."""


@dataclass(frozen=True)
class Skipped:
    """A run, or a whole setting, left out of the analysis."""

    run: str
    reason: str
    setting: str = ""
    seed: int | None = None


@dataclass
class SettingRuns:
    """The usable runs of one training setting in seed order, and its diverged runs (failed, without outputs)."""

    key: str  # the setting_id
    name: str  # display name among the analysed settings
    setting: dict[str, Any]
    checkpoint: str
    records: list[RunRecord]
    diverged: list[RunRecord] = field(default_factory=list)


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
    failed: list[bool]  # per run: the measured checkpoint at or below the majority baseline
    diverged_seeds: list[int]  # runs of the setting that diverged: failed, no outputs
    majority_baseline: float
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
    include_stopped: bool = False,
    advance: Callable[[int], None] = lambda steps: None,
) -> tuple[list[SettingRuns], list[Skipped]]:
    """Read every record and group the readable ones into settings by `setting_id`; name the settings with
    `display_names` (the keys that differ among them).

    `checkpoint` overrides each record's `measure_checkpoint`; runs that stopped before their planned steps are
    skipped unless `include_stopped`; a later record with a seed already seen in its setting is skipped.
    `advance(1)` reports each record read. `AnalysisError` when no record is usable.
    """
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise AnalysisError(f"checkpoint must be one of {CHECKPOINTS} or null, not {checkpoint!r}")
    groups: dict[str, list[RunRecord]] = {}
    skipped: list[Skipped] = []
    for path in paths:
        try:
            record = read_record(path)
            groups.setdefault(record.setting_id, []).append(record)
        except RecordError as error:
            skipped.append(Skipped(str(path.parent), str(error)))
        advance(1)
    keys = list(groups)
    names = dict(zip(keys, display_names([groups[key][0].setting for key in keys])))
    settings = []
    for key in sorted(keys, key=names.get):
        runs = SettingRuns(key, names[key], groups[key][0].setting, checkpoint or groups[key][0].measure_checkpoint,
                           [])
        seen: dict[int, RunRecord] = {}
        for record in sorted(groups[key], key=lambda r: (r.seed, str(r.path))):
            if record.seed in seen:
                problem = f"seed {record.seed} appears twice in its setting (also {seen[record.seed].name}); " \
                          "the first is kept"
            else:
                seen[record.seed] = record
                problem = _problem(record, runs.checkpoint, include_stopped)
                if record.status == "diverged":
                    runs.diverged.append(record)
            if problem is None:
                runs.records.append(record)
            else:
                skipped.append(Skipped(record.name, problem, runs.name, record.seed))
        settings.append(runs)
    if not any(runs.records for runs in settings):
        reasons = "; ".join(f"{s.run}: {s.reason}" for s in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        raise AnalysisError(f"no finished, usable run record among {len(paths)} found: {reasons}{more}")
    return settings, skipped


def _problem(record: RunRecord, checkpoint: str, include_stopped: bool) -> str | None:
    """Why `record` cannot be measured at `checkpoint`, or None."""
    if record.status == "diverged":
        return "run diverged (no outputs to measure; counted as a failed run)"
    if record.status == "stopped" and not include_stopped:
        steps = record.meta.get("steps")
        return ("run stopped before its planned steps" + (f" ({steps})" if steps else "")
                + "; include_stopped=true includes it")
    try:
        value = record.score(checkpoint, "test")
    except RecordError as error:
        return str(error)
    if not is_finite_number(value):
        return f"test {record.meta['metric']} of the {checkpoint} checkpoint is {value}"
    return None


def hidden_bytes(record: RunRecord, checkpoint: str) -> int:
    """Bytes of one run's hidden states [L, N, D] as its record states them (nothing is read)."""
    layers, examples, dim = record.shapes[f"{checkpoint}/hidden"]
    return layers * examples * dim * FLOAT_BYTES


def check_memory(settings: Sequence[SettingRuns], max_gib: float | None) -> None:
    """`AnalysisError`, naming the setting and its largest run, when loading one setting's hidden states (one
    setting is in memory at a time) would exceed `max_gib` GiB by the shapes the records state."""
    if max_gib is None:
        return
    for runs in settings:
        if not runs.records:
            continue
        sizes = [hidden_bytes(record, runs.checkpoint) for record in runs.records]
        if sum(sizes) > max_gib * 2**30:
            largest = runs.records[sizes.index(max(sizes))]
            shape = list(largest.shapes[f"{runs.checkpoint}/hidden"])
            raise AnalysisError(
                f"setting {runs.name}: its {len(sizes)} runs' hidden states need {sum(sizes) / 2**30:.2f} GiB, over "
                f"memory.max_gib={max_gib:g} (largest: run {largest.name}, hidden states {shape} = "
                f"{max(sizes) / 2**30:.2f} GiB); raise memory.max_gib, or check that record's shapes")


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
        failed=[record.failed(runs.checkpoint) for record in records],
        diverged_seeds=[record.seed for record in runs.diverged],
        majority_baseline=records[0].majority_baseline,
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
