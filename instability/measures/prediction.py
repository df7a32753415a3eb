"""Prediction-level instability as torchmetrics ``Metric`` classes (SPEC section 2).

``update`` takes a batch of examples for all M models at once; states are cat states of the examples (tiny:
labels or output distributions), gathered over processes, so ``compute`` equals the functional form on all data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from instability.measures._checks import as_tensor, check_labels, check_probs
from instability.measures.functional.prediction import (
    KAPPA_CHANCE,
    fleiss_kappa_instability,
    pairwise_disagreement,
    pairwise_jsd,
    score_sd,
)


class _ExampleCatMetric(Metric):
    """Stores per-example rows ``[n_batch, M, ...]`` and checks that every batch has the same models."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def _append(self, rows: Tensor) -> None:
        if self.rows and self.rows[0].shape[1:] != rows.shape[1:]:
            raise ValueError(
                f"every batch must hold the same models: got [M, ...] = {tuple(rows.shape[1:])}, "
                f"earlier {tuple(self.rows[0].shape[1:])}"
            )
        self.rows.append(rows.detach())

    def _all_rows(self) -> Tensor:
        """The stored batches as ``[M, N, ...]``."""
        return dim_zero_cat(self.rows).movedim(0, 1)


class ScoreSD(Metric):
    """SD: population standard deviation over seeds of the task score. ``update`` takes scores ``[M]`` or one
    model's score at a time."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor | float) -> None:
        self.scores.append(as_tensor(scores, "scores").detach().to(torch.float64).reshape(-1))

    def compute(self) -> Tensor:
        return score_sd(dim_zero_cat(self.scores))


class PairwiseDisagreement(_ExampleCatMetric):
    """I_pwd from predicted labels; ``update(labels)`` with labels ``[M, n_batch]``."""

    def update(self, labels: Tensor) -> None:
        self._append(check_labels(labels).T)

    def compute(self) -> Tensor:
        return pairwise_disagreement(self._all_rows())


class FleissKappaInstability(_ExampleCatMetric):
    """I_kappa = 1 - Fleiss' kappa from predicted labels; ``update(labels)`` with labels ``[M, n_batch]``.
    ``chance="released"`` is the authors' notebook variant (see ``fleiss_kappa_instability``)."""

    def __init__(self, num_classes: int | None = None, chance: str = "textbook", **kwargs: Any) -> None:
        if chance not in KAPPA_CHANCE:
            raise ValueError(f"chance must be one of {KAPPA_CHANCE}, got {chance!r}")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.chance = chance

    def update(self, labels: Tensor) -> None:
        self._append(check_labels(labels, self.num_classes).T)

    def compute(self) -> Tensor:
        return fleiss_kappa_instability(self._all_rows(), self.num_classes, self.chance)


class PairwiseJSD(_ExampleCatMetric):
    """I_jsd from output distributions; ``update(probs)`` with probs ``[M, n_batch, C]`` (logits if
    ``from_logits``). Stored as float64 probabilities."""

    def __init__(self, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.from_logits = from_logits

    def update(self, probs: Tensor) -> None:
        self._append(check_probs(probs, self.from_logits).movedim(1, 0))

    def compute(self) -> Tensor:
        return pairwise_jsd(self._all_rows())
