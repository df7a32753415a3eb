"""What one analysis found, per setting and across settings: plain numbers, no tensors, ready for the reports.

An analysis that did not run is None; the reports decide what to write from these results alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instability.analysis.consistency import Benchmark
from instability.analysis.loading import Skipped
from instability.analysis.setting_measures import MeasureOptions
from instability.analysis.validity import Bootstrap, FailedRuns


@dataclass
class SettingResult:
    """The measures and validity analyses of one setting."""

    name: str
    setting_id: str
    setting: dict[str, Any]
    checkpoint: str
    metric: str
    seeds: list[int]
    runs: list[str]
    scores: np.ndarray  # [M]
    failed: list[bool]  # the measured checkpoint's failure flags
    diverged_seeds: list[int]  # failed runs without outputs, left out of every measure
    majority_baseline: float
    num_examples: int
    num_layers: int
    hidden_size: int
    values: dict[str, np.ndarray]  # per measure: 0-d, or [L] for representation measures
    last_layer: dict[str, np.ndarray]  # per representation measure: the [M, M] pair matrix of the last layer
    notes: list[str] = field(default_factory=list)
    trend: list[dict] | None = None
    agreement: list[dict] | None = None
    failed_runs: FailedRuns | None = None
    failed_note: str | None = None  # why the failed-run comparison ran but could not compare (None: it did or was off)
    subsampling: list[dict] | None = None
    bootstrap: Bootstrap | None = None
    figures: dict[str, str] = field(default_factory=dict)  # kind -> path relative to the output folder


@dataclass
class SdVsAgreement:
    """SD vs agreement across settings: one row per group, one per (group, setting, measure) point."""

    results: list[dict]
    points: list[dict]
    group_by: list[str]
    same_lr: bool
    sd_seeds_below: int | None


@dataclass
class SweepResult:
    """Everything an analysis run produced."""

    roots: list[Path]
    out_dir: Path
    settings: list[SettingResult]
    skipped: list[Skipped]
    config: dict[str, Any]  # as given, for the manifest and the W&B run
    options: MeasureOptions
    seed: int
    benchmarks: list[Benchmark] | None = None
    benchmark_group_by: list[str] = field(default_factory=list)
    ranks: list[dict] = field(default_factory=list)
    sd_vs_agreement: SdVsAgreement | None = None
    notes: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)  # cross-setting figures: name -> relative path
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, summed over settings
