"""Input validation shared by the measures: degenerate input raises ``ValueError`` saying what is wrong.

The measures never return a silent NaN (SPEC section 2); every check here runs on the input's own device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

PROB_SUM_ATOL = 1e-5  # float32 softmax outputs sum to 1 within ~1e-7; anything further off is not a distribution


def as_tensor(value: Any, name: str) -> Tensor:
    """A torch tensor view of ``value`` (numpy arrays and nested lists are accepted)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, list, tuple, int, float, np.number)):
        return torch.as_tensor(np.asarray(value))
    raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(value).__name__}")


def check_ndim(x: Tensor, ndims: tuple[int, ...], name: str, layout: str) -> None:
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(x.shape)}")


def check_finite(x: Tensor, name: str) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def check_num_models(num_models: int, name: str) -> None:
    if num_models < 2:
        raise ValueError(f"{name} needs at least 2 models (seeds), got {num_models}")


def check_num_examples(num_examples: int, minimum: int, name: str) -> None:
    if num_examples < minimum:
        raise ValueError(f"{name} needs at least {minimum} examples, got {num_examples}")


def check_labels(labels: Any, num_classes: int | None = None) -> Tensor:
    """Predicted labels ``[M, N]``: integers in ``[0, num_classes)``, at least 2 models and 1 example."""
    labels = as_tensor(labels, "labels")
    check_ndim(labels, (2,), "labels", "[M models, N examples]")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (predicted class ids), got dtype {labels.dtype}")
    check_num_models(labels.shape[0], "labels")
    check_num_examples(labels.shape[1], 1, "labels")
    if bool((labels < 0).any()):
        raise ValueError("labels must be non-negative class ids")
    if num_classes is not None and bool((labels >= num_classes).any()):
        raise ValueError(f"labels must be < num_classes={num_classes}, got max {int(labels.max())}")
    return labels


def check_probs(probs: Any, from_logits: bool) -> Tensor:
    """Output distributions ``[M, N, C]`` as float64 probabilities (softmax first when ``from_logits``)."""
    probs = as_tensor(probs, "probs")
    check_ndim(probs, (3,), "probs", "[M models, N examples, C classes]")
    if not probs.is_floating_point():
        raise ValueError(f"probs must be floating point, got dtype {probs.dtype}")
    check_num_models(probs.shape[0], "probs")
    check_num_examples(probs.shape[1], 1, "probs")
    check_finite(probs, "probs")
    probs = probs.to(torch.float64)
    if from_logits:
        return torch.softmax(probs, dim=-1)
    if bool((probs < 0).any()):
        raise ValueError("probs has negative entries; pass from_logits=True for logits")
    if not bool(torch.allclose(probs.sum(-1), probs.new_ones(()), rtol=0.0, atol=PROB_SUM_ATOL)):
        raise ValueError("probs do not sum to 1 over the class axis; pass from_logits=True for logits")
    return probs


def check_representation(x: Any, name: str, dtype: torch.dtype) -> Tensor:
    """One representation ``[N, D]`` or a batch ``[B, N, D]``, cast to ``dtype``, finite."""
    x = as_tensor(x, name)
    if not x.is_floating_point():
        x = x.to(dtype)
    check_ndim(x, (2, 3), name, "[N examples, D features]")
    check_num_examples(x.shape[-2], 2, name)
    if x.shape[-1] < 1:
        raise ValueError(f"{name} has no features")
    x = x.to(dtype)
    check_finite(x, name)
    return x


def check_same_examples(x: Tensor, y: Tensor) -> None:
    if x.shape[-2] != y.shape[-2]:
        raise ValueError(f"x and y must hold the same examples: got {x.shape[-2]} and {y.shape[-2]} rows")


def check_not_constant(centred: Tensor, raw: Tensor, name: str) -> None:
    """Raise if a representation's centred copy is zero (relative to its size): it has no variance.
    For a batch ``[B, N, D]`` the message names the constant models."""
    scale = torch.linalg.matrix_norm(raw) * raw.shape[-2] * torch.finfo(raw.dtype).eps
    constant = torch.linalg.matrix_norm(centred) <= scale
    if bool(constant.any()):
        models = f" (model {constant.nonzero().flatten().tolist()})" if constant.ndim else ""
        raise ValueError(f"{name}{models} is constant over examples (zero variance); the distance is undefined")
