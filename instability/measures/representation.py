"""Representation-level instability as torchmetrics ``Metric`` classes (SPEC section 2).

The distances need all examples at once, so the metrics keep a cat state of the hidden states (in the input's
dtype; cast per layer at compute time). ``update`` takes ``[M, L, n_batch, D]`` or ``[M, n_batch, D]`` (one layer);
``compute`` returns the per-layer mean over model pairs ``[L]`` (torchmetrics returns a 0-d tensor when L = 1) and
``compute_pair_matrix`` the full ``[L, M, M]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from instability.measures._checks import as_tensor, check_ndim
from instability.measures.functional.pairs import mean_over_pairs
from instability.measures.functional.representation import pairwise_representation_distances


class _RepresentationMetric(Metric):
    """Accumulates hidden states of M models and computes one representation measure per layer."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    measure: str

    def __init__(self, dtype: torch.dtype = torch.float64, measure_kwargs: dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.measure_dtype = dtype
        self.measure_kwargs = measure_kwargs or {}
        self.add_state("hidden", default=[], dist_reduce_fx="cat")

    def update(self, hidden: Tensor) -> None:
        hidden = as_tensor(hidden, "hidden")
        check_ndim(hidden, (3, 4), "hidden", "[M models, L layers, n_batch examples, D] or [M, n_batch, D]")
        if hidden.ndim == 3:
            hidden = hidden.unsqueeze(1)
        rows = hidden.movedim(2, 0)  # [n_batch, M, L, D]: examples first for the cat state
        if self.hidden and self.hidden[0].shape[1:] != rows.shape[1:]:
            raise ValueError(
                f"every batch must hold the same models, layers and features: got [M, L, D] = "
                f"{tuple(rows.shape[1:])}, earlier {tuple(self.hidden[0].shape[1:])}"
            )
        self.hidden.append(rows.detach())

    def _pair_matrix(self) -> Tensor:
        hidden = dim_zero_cat(self.hidden).movedim(0, 2)  # [M, L, N, D]
        return pairwise_representation_distances(hidden, self.measure, dtype=self.measure_dtype, **self.measure_kwargs)

    def compute(self) -> Tensor:
        return mean_over_pairs(self._pair_matrix())

    def compute_pair_matrix(self) -> Tensor:
        """The ``[L, M, M]`` pair matrices on all (gathered) examples."""
        sync = {"dist_sync_fn": self.dist_sync_fn, "should_sync": self._to_sync, "should_unsync": self._should_unsync}
        with self.sync_context(**sync):
            return self._pair_matrix()


class SVCCADistance(_RepresentationMetric):
    """Per-layer mean over model pairs of the paper's SVCCA distance (``threshold`` of the singular-value sum)."""

    measure = "svcca"

    def __init__(self, threshold: float = 0.99, dtype: torch.dtype = torch.float64, **kwargs: Any) -> None:
        super().__init__(dtype, {"threshold": threshold}, **kwargs)


class ProcrustesDistance(_RepresentationMetric):
    """Per-layer mean over model pairs of the orthogonal Procrustes distance 1 - ||X^T Y||_*."""

    measure = "op"

    def __init__(self, dtype: torch.dtype = torch.float64, **kwargs: Any) -> None:
        super().__init__(dtype, None, **kwargs)


class LinearCKADistance(_RepresentationMetric):
    """Per-layer mean over model pairs of 1 - linear CKA (debiased by default)."""

    measure = "cka"

    def __init__(self, debiased: bool = True, dtype: torch.dtype = torch.float64, **kwargs: Any) -> None:
        super().__init__(dtype, {"debiased": debiased}, **kwargs)
