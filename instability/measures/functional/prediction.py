"""Prediction-level instability (SPEC section 2): SD, I_pwd, I_kappa, I_jsd.

Pair measures come as a pair matrix (``*_matrix``) and as its mean over all pairs. Bootstrap or group code
reduces the matrix itself: ``mean_over_pairs(pairwise_disagreement_matrix(labels), index)``. Kappa is not a
pair mean; on a resample of seeds it is the kappa of the resampled raters, ``fleiss_kappa_instability(labels[index])``
(a duplicated seed is a duplicated rater).
"""

from __future__ import annotations

import torch
from torch import Tensor

from instability.measures._checks import as_tensor, check_finite, check_labels, check_num_models, check_probs
from instability.measures.functional.pairs import mean_over_pairs

KAPPA_CHANCE = ("textbook", "released")


def score_sd(scores: Tensor) -> Tensor:
    """Population standard deviation (ddof = 0) of the task metric over seeds, ``scores`` is ``[M]``."""
    scores = as_tensor(scores, "scores")
    if scores.ndim != 1:
        raise ValueError(f"scores must be [M] (one score per model), got shape {tuple(scores.shape)}")
    check_num_models(scores.numel(), "score_sd")
    scores = scores.to(torch.float64)
    check_finite(scores, "scores")
    return scores.std(correction=0)


def pairwise_disagreement_matrix(labels: Tensor) -> Tensor:
    """``[M, M]`` fraction of examples on which models i and j predict different labels (zero diagonal)."""
    labels = check_labels(labels)
    differ = labels.unsqueeze(1) != labels.unsqueeze(0)
    return differ.sum(-1, dtype=torch.float64) / labels.shape[1]


def pairwise_disagreement(labels: Tensor) -> Tensor:
    """I_pwd: mean over model pairs of the fraction of examples whose labels differ. ``labels`` is ``[M, N]``."""
    return mean_over_pairs(pairwise_disagreement_matrix(labels))


def fleiss_kappa_instability(labels: Tensor, num_classes: int | None = None, chance: str = "textbook") -> Tensor:
    """I_kappa = 1 - Fleiss' kappa with the M models as raters and the N examples as subjects.

    ``chance="textbook"`` is SPEC's P_e = sum_c p_c^2 (equal to statsmodels' ``fleiss_kappa``);
    ``chance="released"`` reproduces the authors' notebook, whose P_e = 1/N makes it I_pwd * N / (N - 1).
    1 - kappa = (1 - Pbar) / (1 - P_e), with Pbar the mean per-example agreement (= 1 - I_pwd).
    """
    if chance not in KAPPA_CHANCE:
        raise ValueError(f"chance must be one of {KAPPA_CHANCE}, got {chance!r}")
    labels = check_labels(labels, num_classes)
    num_models, num_examples = labels.shape
    counts = torch.nn.functional.one_hot(labels.long(), num_classes or -1).sum(0).to(torch.float64)  # [N, C]
    agreement = ((counts**2).sum(-1) - num_models) / (num_models * (num_models - 1))
    if chance == "textbook":
        chance_agreement = ((counts.sum(0) / (num_examples * num_models)) ** 2).sum()
    else:
        chance_agreement = counts.new_tensor(1.0 / num_examples)
    if bool(chance_agreement >= 1.0):
        raise ValueError("Fleiss' kappa is undefined: chance agreement P_e is 1 (one class everywhere, or N = 1)")
    return (1.0 - agreement.mean()) / (1.0 - chance_agreement)


def _entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats over the last axis, 0 log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(-1)


def pairwise_jsd_matrix(probs: Tensor, from_logits: bool = False) -> Tensor:
    """``[M, M]`` Jensen-Shannon divergence (nats, at most ln 2) between two models' outputs, mean over examples.

    JSD(p, q) = H((p + q) / 2) - (H(p) + H(q)) / 2 in float64; per-model entropies are computed once.
    ``probs`` is ``[M, N, C]``; logits with ``from_logits=True``.
    """
    probs = check_probs(probs, from_logits)
    num_models = probs.shape[0]
    entropy = _entropy(probs)  # [M, N]
    matrix = probs.new_zeros(num_models, num_models)
    for i in range(num_models - 1):
        mixture = (probs[i] + probs[i + 1 :]) / 2
        jsd = _entropy(mixture) - (entropy[i] + entropy[i + 1 :]) / 2
        matrix[i, i + 1 :] = jsd.clamp_min(0.0).mean(-1)
    return matrix + matrix.T


def pairwise_jsd(probs: Tensor, from_logits: bool = False) -> Tensor:
    """I_jsd: JSD between two models' outputs, averaged over examples, then over model pairs."""
    return mean_over_pairs(pairwise_jsd_matrix(probs, from_logits))
