"""Task metrics as torchmetrics, named as in the logs (`val/accuracy`, `test/mcc`, ...)."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryF1Score, BinaryMatthewsCorrCoef
from torchmetrics.functional.classification import binary_accuracy, binary_f1_score, binary_matthews_corrcoef

METRICS = {"accuracy": BinaryAccuracy, "f1": BinaryF1Score, "mcc": BinaryMatthewsCorrCoef}
FUNCTIONAL = {"accuracy": binary_accuracy, "f1": binary_f1_score, "mcc": binary_matthews_corrcoef}


def metric_collection(names: tuple[str, ...], prefix: str) -> MetricCollection:
    """The task's metrics for one stage; `prefix` like `val/`."""
    return MetricCollection({name: METRICS[name]() for name in names}, prefix=prefix)


def score(names: tuple[str, ...], preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Each metric of predicted vs gold labels, as plain floats (an all-one-class classifier has MCC 0)."""
    return {name: float(FUNCTIONAL[name](preds, labels)) for name in names}
