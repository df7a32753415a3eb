"""Reduction of a pair matrix to one number per measure (SPEC section 2: "averaged ... over pairs")."""

from __future__ import annotations

import torch
from torch import Tensor

from instability.measures._checks import as_tensor, check_finite


def _check_index(index: Tensor, num_models: int) -> Tensor:
    if index.ndim != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"index must be a 1-D integer tensor of positions, got {index.dtype} {tuple(index.shape)}")
    if index.numel() and bool(((index < 0) | (index >= num_models)).any()):
        raise ValueError(f"index holds positions outside [0, {num_models})")
    return index


def mean_over_pairs(pair_matrix: Tensor, index: Tensor | None = None, keep_self_pairs: bool = False) -> Tensor:
    """Mean of ``pair_matrix[..., index[a], index[b]]`` over positions a < b.

    ``index`` picks models: a subset, a group (e.g. the successful runs) or a bootstrap resample of the seeds,
    which may repeat a seed. A repeated seed makes pairs of a model with itself; they are dropped by default
    (SPEC section 3) and, with ``keep_self_pairs=True``, counted as distance 0 as the authors' notebook does.
    ``index=None`` means all models. Works on ``[M, M]`` and on stacks ``[..., M, M]`` (e.g. ``[L, M, M]``).
    """
    pair_matrix = as_tensor(pair_matrix, "pair_matrix")
    if pair_matrix.ndim < 2 or pair_matrix.shape[-1] != pair_matrix.shape[-2]:
        raise ValueError(f"pair_matrix must be [..., M, M], got shape {tuple(pair_matrix.shape)}")
    check_finite(pair_matrix, "pair_matrix")
    num_models = pair_matrix.shape[-1]
    if index is None:
        index = torch.arange(num_models, device=pair_matrix.device)
    index = _check_index(as_tensor(index, "index").to(pair_matrix.device), num_models)
    first, second = torch.triu_indices(index.numel(), index.numel(), 1, device=pair_matrix.device)
    rows, cols = index[first], index[second]
    values = pair_matrix[..., rows, cols].to(torch.promote_types(pair_matrix.dtype, torch.float32))
    distinct = rows != cols
    if keep_self_pairs:
        if values.shape[-1] == 0:
            raise ValueError("mean_over_pairs needs at least 2 model positions")
        return values.masked_fill(~distinct, 0.0).mean(-1)
    if not bool(distinct.any()):
        raise ValueError("mean_over_pairs needs at least one pair of distinct models")
    return values[..., distinct].mean(-1)
