"""The analysis composed from conf/analyze.yaml and run in-process, light by default (analysis tests)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[2]
QUICK = ("bootstrap.replicates=40", "failed_runs.permutations=40", "subsampling.draws=2", "figures=false")
FAST = ("layer_trend=false", "failed_runs.enabled=false", "subsampling.enabled=false", "bootstrap.enabled=false",
        "benchmark.enabled=false")  # the measures only

Folders = str | Path | Sequence[str | Path]


def analysis_config(sweep_dir: Folders, out_dir: str | Path, *overrides: str, quick: bool = True) -> DictConfig:
    """conf/analyze.yaml composed with `overrides` (by default light: few replicates, no figures)."""
    folders = [sweep_dir] if isinstance(sweep_dir, (str, Path)) else list(sweep_dir)
    sweep = "[" + ",".join(f"'{folder}'" for folder in folders) + "]"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("analyze", overrides=[f"sweep_dir={sweep}", f"out_dir='{out_dir}'", *(QUICK if quick else ()),
                                             *overrides])


def run_analysis(sweep_dir: Folders, out_dir: str | Path, *overrides: str, quick: bool = True):
    """Run the analysis in-process; returns the result and what it printed."""
    from rich.console import Console

    from instability.analysis.pipeline import run

    buffer = io.StringIO()
    result = run(analysis_config(sweep_dir, out_dir, *overrides, quick=quick), Console(file=buffer, width=200))
    return result, buffer.getvalue()
