"""Synthetic run records with planted structure, written with the project's record writer (analysis tests).

A run's predictions are a shared base labelling with the run's own set of flipped examples; its hidden
states are shared base states plus run-specific noise whose scale is set per layer. Disjoint flip sets of
sizes k_i give I_pwd = 2 * mean(k) / N exactly; zero noise and no flips give identical runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from instability.records import write_record

LAYERS, EXAMPLES, DIM = 4, 40, 16


def setting(**overrides: Any) -> dict[str, Any]:
    """A training-setting dict as train.py writes it."""
    base = {"task": "rte", "model": "synthetic", "imm": {"name": "none"}, "lr": 2e-5, "train_size": None,
            "max_epochs": 1, "batch_size": 16, "split_seed": 42, "measure_checkpoint": "best"}
    return {**base, **overrides}


def base_labels(examples: int = EXAMPLES) -> torch.Tensor:
    """Gold labels and base predictions: alternating classes, so every class occurs."""
    return torch.arange(examples) % 2


def flipped(predictions: torch.Tensor, start: int, count: int) -> torch.Tensor:
    out = predictions.clone()
    out[start : start + count] = 1 - out[start : start + count]
    return out


def base_hidden(layers: int = LAYERS, examples: int = EXAMPLES, dim: int = DIM, seed: int = 1234) -> torch.Tensor:
    return torch.randn(layers, examples, dim, generator=torch.Generator().manual_seed(seed))


def noisy(hidden: torch.Tensor, scales: Sequence[float], seed: int) -> torch.Tensor:
    """`hidden` [L, N, D] plus Gaussian noise of scale `scales[l]` at layer l (a run's own noise, by `seed`)."""
    noise = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(10_000 + seed))
    return hidden + torch.tensor(scales, dtype=hidden.dtype).view(-1, 1, 1) * noise


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predictions == labels).double().mean())


def write_run(
    folder: str | Path,
    seed: int,
    predictions: torch.Tensor,
    hidden: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    example_ids: torch.Tensor | None = None,
    setting_dict: dict[str, Any] | None = None,
    failed: bool = False,
    status: str = "finished",
    score: float | None = None,
    final: tuple[torch.Tensor, torch.Tensor] | None = None,
    logits: torch.Tensor | None = None,
) -> Path:
    """Write one run's record into `folder/record/`; logits are +-1 around the predicted class unless given.
    `final` gives the final checkpoint's (predictions, hidden) when they differ from the best one's."""
    labels = base_labels(predictions.numel()) if labels is None else labels
    example_ids = torch.arange(100, 100 + predictions.numel()) if example_ids is None else example_ids
    setting_dict = setting_dict or setting()
    outputs = {"best": (predictions, hidden), "final": final or (predictions, hidden)}
    metrics, tensors = {}, {}
    for checkpoint, (preds, states) in outputs.items():
        value = accuracy(preds, labels) if score is None else score
        metrics[checkpoint] = {"val": {"accuracy": value}, "test": {"accuracy": value}}
        tensors[f"{checkpoint}/logits"] = logits.clone() if logits is not None and checkpoint == "best" else \
            torch.nn.functional.one_hot(preds, 2).float() * 2 - 1
        tensors[f"{checkpoint}/hidden"] = states.float().clone()
        tensors[f"{checkpoint}/val_logits"] = torch.zeros(6, 2)
    tensors.update(example_ids=example_ids.clone(), labels=labels.clone(), val_example_ids=torch.arange(6),
                   val_labels=torch.arange(6) % 2)
    meta = {
        "status": status, "seed": seed, "split_seed": setting_dict["split_seed"], "task": setting_dict["task"],
        "metric": "accuracy", "setting": setting_dict, "measure_checkpoint": setting_dict["measure_checkpoint"],
        "metrics": metrics if status == "finished" else {}, "failed": failed if status == "finished" else None,
        "majority_baseline": 0.5, "config": {"seed": seed}, "timings": {}, "wandb": None,
    }
    return write_record(folder, meta, tensors if status == "finished" else {})


def planted_sweep(
    root: str | Path,
    runs: int = 6,
    flips: Sequence[int] | None = None,
    scales: Sequence[Sequence[float]] | None = None,
    failed: Sequence[bool] | None = None,
    scores: Sequence[float] | None = None,
    setting_dict: dict[str, Any] | None = None,
    first_job: int = 0,
    layers: int = LAYERS,
    examples: int = EXAMPLES,
    dim: int = DIM,
) -> list[Path]:
    """`runs` runs of one setting in job folders `root/<first_job + i>`: run i flips `flips[i]` examples
    (disjoint blocks) and has per-layer noise `scales[i]`. Defaults: 2 flips each, noise growing with depth."""
    flips = [2] * runs if flips is None else flips
    scales = [[0.1 * (layer + 1) for layer in range(layers)]] * runs if scales is None else scales
    assert sum(flips) <= examples, "flip blocks must be disjoint"
    base, states = base_labels(examples), base_hidden(layers, examples, dim)
    paths, start = [], 0
    for i in range(runs):
        predictions = flipped(base, start, flips[i])
        start += flips[i]
        paths.append(write_run(Path(root) / str(first_job + i), i, predictions, noisy(states, scales[i], i),
                               setting_dict=setting_dict, failed=bool(failed[i]) if failed else False,
                               score=None if scores is None else scores[i]))
    return paths


QUICK = ("bootstrap.replicates=40", "failed_runs.permutations=40", "subsampling.draws=2", "figures=false")


Folders = str | Path | Sequence[str | Path]


def analysis_config(sweep_dir: Folders, out_dir: str | Path, *overrides: str, quick: bool = True):
    """conf/analyze.yaml composed with `overrides` (by default light: few replicates, no figures)."""
    from hydra import compose, initialize_config_dir

    folders = [sweep_dir] if isinstance(sweep_dir, (str, Path)) else list(sweep_dir)
    sweep = "[" + ",".join(f"'{folder}'" for folder in folders) + "]"
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return compose("analyze", overrides=[f"sweep_dir={sweep}", f"out_dir='{out_dir}'", *(QUICK if quick else ()),
                                             *overrides])


def run_analysis(sweep_dir: Folders, out_dir: str | Path, *overrides: str, quick: bool = True):
    """Run the analysis in-process; returns the result and what it printed."""
    import io

    from rich.console import Console

    from instability.analysis.pipeline import run

    buffer = io.StringIO()
    result = run(analysis_config(sweep_dir, out_dir, *overrides, quick=quick), Console(file=buffer, width=200))
    return result, buffer.getvalue()
