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

from instability.records import Halves, Outputs, build_record, write_record
from instability.setting import ALIASES

LAYERS, EXAMPLES, DIM = 4, 40, 16


def setting(**overrides: Any) -> dict[str, Any]:
    """A flat training setting as training writes it; overrides by dotted key or alias (`lr=1e-3`, `imm="llrd"`)."""
    base = {"task.name": "rte", "model.name": "synthetic", "imm.name": "none",
            "imm._target_": "instability.imm.Mitigation",
            "module.lr": 2e-5, "data.train_size": None, "trainer.max_epochs": 1, "data.batch_size": 16,
            "data.split_seed": 42, "measure_checkpoint": "best", "trainer.precision": "32-true"}
    return dict(sorted({**base, **{ALIASES.get(k, k): v for k, v in overrides.items()}}.items()))


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
    failed: bool | dict[str, bool] | None = False,
    status: str = "finished",
    score: float | None = None,
    final: tuple[torch.Tensor, torch.Tensor] | None = None,
    logits: torch.Tensor | None = None,
) -> Path:
    """Write one run's record into `folder/record/` with the project's record builder; logits are +-1 around the
    predicted class unless given. `final` gives the final checkpoint's (predictions, hidden) when they differ from
    the best one's; `score` plants the task metric and `failed` the failure flag of both checkpoints (a bool) or of
    each (`{"best": False, "final": True}`); `failed=None` keeps the flags build_record derives from the scores."""
    labels = base_labels(predictions.numel()) if labels is None else labels
    example_ids = torch.arange(100, 100 + predictions.numel()) if example_ids is None else example_ids
    halves = Halves(example_ids, labels, torch.arange(6), torch.arange(6) % 2)
    outputs = {}
    for checkpoint, (preds, states) in {"best": (predictions, hidden), "final": final or (predictions, hidden)}.items():
        own = logits.clone() if logits is not None and checkpoint == "best" else \
            torch.nn.functional.one_hot(preds, 2).float() * 2 - 1
        outputs[checkpoint] = Outputs(own, states.float(), torch.zeros(6, 2))
    meta, tensors = build_record(seed=seed, setting=setting_dict or setting(), metrics=("accuracy",), halves=halves,
                                 outputs=outputs if status != "diverged" else None, status=status,
                                 config={"seed": seed})
    if status != "diverged":
        for checkpoint in meta["metrics"]:
            if score is not None:
                meta["metrics"][checkpoint]["test"]["accuracy"] = score
            if failed is not None:
                meta["failed"][checkpoint] = failed[checkpoint] if isinstance(failed, dict) else failed
    return write_record(folder, meta, tensors)


def planted_sweep(
    root: str | Path,
    runs: int = 6,
    flips: Sequence[int] | None = None,
    scales: Sequence[Sequence[float]] | None = None,
    failed: Sequence[bool | dict[str, bool]] | None = None,
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
                               setting_dict=setting_dict, failed=failed[i] if failed else False,
                               score=None if scores is None else scores[i]))
    return paths
