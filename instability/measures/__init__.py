"""Instability measures (SPEC section 2): functional forms and torchmetrics ``Metric`` classes."""

from instability.measures.functional import (
    REPRESENTATION_MEASURES,
    fleiss_kappa_instability,
    linear_cka_distance,
    mean_over_pairs,
    pairwise_disagreement,
    pairwise_disagreement_matrix,
    pairwise_jsd,
    pairwise_jsd_matrix,
    pairwise_representation_distances,
    procrustes_distance,
    score_sd,
    svcca_distance,
)
from instability.measures.prediction import FleissKappaInstability, PairwiseDisagreement, PairwiseJSD, ScoreSD
from instability.measures.representation import LinearCKADistance, ProcrustesDistance, SVCCADistance

__all__ = [
    "REPRESENTATION_MEASURES",
    "FleissKappaInstability",
    "LinearCKADistance",
    "PairwiseDisagreement",
    "PairwiseJSD",
    "ProcrustesDistance",
    "SVCCADistance",
    "ScoreSD",
    "fleiss_kappa_instability",
    "linear_cka_distance",
    "mean_over_pairs",
    "pairwise_disagreement",
    "pairwise_disagreement_matrix",
    "pairwise_jsd",
    "pairwise_jsd_matrix",
    "pairwise_representation_distances",
    "procrustes_distance",
    "score_sd",
    "svcca_distance",
]
