"""Task metrics as torchmetrics, named as in the logs (`val/accuracy`, `test/mcc`, ...)."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryF1Score, BinaryMatthewsCorrCoef
from torchmetrics.functional.classification import binary_accuracy, binary_confusion_matrix, binary_f1_score


def matthews_from_confmat(confmat: torch.Tensor) -> torch.Tensor:
    """MCC from a 2x2 confusion matrix [[tn, fp], [fn, tp]]; 0 when a row or column is empty, as sklearn.

    torchmetrics 1.9 returns a non-zero "limit" value for a classifier that predicts one class only,
    which would let a collapsed CoLA run look better than chance.
    """
    (tn, fp), (fn, tp) = confmat.double()
    denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denominator == 0:
        return torch.zeros((), dtype=torch.float64, device=confmat.device)
    return (tp * tn - fp * fn) / denominator.sqrt()


class MatthewsCorrCoef(BinaryMatthewsCorrCoef):
    """Binary MCC with sklearn's convention for degenerate predictions."""

    def compute(self) -> torch.Tensor:
        return matthews_from_confmat(self.confmat)


def binary_mcc(preds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Functional twin of `MatthewsCorrCoef`."""
    return matthews_from_confmat(binary_confusion_matrix(preds, labels))


METRICS = {"accuracy": BinaryAccuracy, "f1": BinaryF1Score, "mcc": MatthewsCorrCoef}
FUNCTIONAL = {"accuracy": binary_accuracy, "f1": binary_f1_score, "mcc": binary_mcc}


def metric_collection(names: tuple[str, ...], prefix: str) -> MetricCollection:
    """The task's metrics for one stage; `prefix` like `val/`."""
    return MetricCollection({name: METRICS[name]() for name in names}, prefix=prefix)


def score(names: tuple[str, ...], preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Each metric of predicted vs gold labels, as plain floats (an all-one-class classifier has MCC 0)."""
    return {name: float(FUNCTIONAL[name](preds, labels)) for name in names}
