"""GLUE's task metrics for C classes, as torchmetrics named as in the logs (`val/accuracy`, `test/mcc`, ...).

Every metric is computed from the C x C confusion matrix (rows gold, columns predicted), so a class that never
occurs changes nothing: accuracy; Matthews correlation in Gorodkin's C-class form (sklearn's), 0 when predictions
or gold labels are all one class; F1 of the positive class (label 1), for binary tasks only.
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.functional.classification import multiclass_confusion_matrix

BINARY_ONLY = ("f1",)


def accuracy_from_confmat(confmat: torch.Tensor) -> torch.Tensor:
    """The fraction of examples on the diagonal."""
    confmat = confmat.double()
    return confmat.trace() / confmat.sum()


def f1_from_confmat(confmat: torch.Tensor) -> torch.Tensor:
    """F1 of the positive class of a 2 x 2 confusion matrix [[tn, fp], [fn, tp]]; 0 when it has no true positive,
    false positive or false negative (as torchmetrics' binary F1)."""
    if confmat.shape != (2, 2):
        raise ValueError(f"f1 is the positive class's F1 of a binary task; this one has {confmat.shape[0]} classes")
    (_, fp), (fn, tp) = confmat.double()
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator > 0 else torch.zeros((), dtype=torch.float64, device=confmat.device)


def matthews_from_confmat(confmat: torch.Tensor) -> torch.Tensor:
    """Matthews correlation (Gorodkin's R_K, sklearn's formula) from a C x C confusion matrix; 0 when a marginal is
    concentrated on one class, as sklearn.

    torchmetrics 1.9 returns a non-zero "limit" value for a classifier that predicts one class only,
    which would let a collapsed CoLA run look better than chance.
    """
    confmat = confmat.double()
    gold, predicted = confmat.sum(1), confmat.sum(0)
    n, correct = confmat.sum(), confmat.trace()
    covariance = correct * n - gold @ predicted
    denominator = (n * n - predicted @ predicted) * (n * n - gold @ gold)
    if denominator == 0:
        return torch.zeros((), dtype=torch.float64, device=confmat.device)
    return covariance / denominator.sqrt()


FROM_CONFMAT = {"accuracy": accuracy_from_confmat, "f1": f1_from_confmat, "mcc": matthews_from_confmat}


def check_metrics(names: tuple[str, ...] | list[str], num_classes: int) -> None:
    """Known metric names, and binary-only ones only for binary tasks."""
    unknown = [name for name in names if name not in FROM_CONFMAT]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(FROM_CONFMAT)}")
    binary = [name for name in names if name in BINARY_ONLY]
    if binary and num_classes != 2:
        raise ValueError(f"metric(s) {binary} are defined for binary tasks only, not for {num_classes} classes")


class TaskMetric(MulticlassConfusionMatrix):
    """One metric of `FROM_CONFMAT`, accumulated as a confusion matrix."""

    def __init__(self, name: str, num_classes: int = 2) -> None:
        super().__init__(num_classes=num_classes)
        self.metric_name = name

    def compute(self) -> torch.Tensor:
        return FROM_CONFMAT[self.metric_name](self.confmat)


def metric_collection(names: tuple[str, ...], prefix: str, num_classes: int = 2) -> MetricCollection:
    """The task's metrics for one stage; `prefix` like `val/`."""
    check_metrics(names, num_classes)
    return MetricCollection({name: TaskMetric(name, num_classes) for name in names}, prefix=prefix)


def score(
    names: tuple[str, ...], preds: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
) -> dict[str, float]:
    """Each metric of predicted vs gold labels, as plain floats. Without `num_classes` the classes are those that
    occur (at least 2), which gives the same values: classes that never occur change no metric."""
    preds, labels = torch.as_tensor(preds).long(), torch.as_tensor(labels).long()
    if num_classes is None:
        num_classes = max([2, *(int(t.max()) + 1 for t in (preds, labels) if t.numel())])
    check_metrics(names, num_classes)
    confmat = multiclass_confusion_matrix(preds, labels, num_classes)
    return {name: float(FROM_CONFMAT[name](confmat)) for name in names}
