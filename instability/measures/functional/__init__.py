"""Functional instability measures (SPEC section 2): plain functions of predictions or hidden states."""

from instability.measures.functional.pairs import mean_over_pairs
from instability.measures.functional.prediction import (
    fleiss_kappa_instability,
    pairwise_disagreement,
    pairwise_disagreement_matrix,
    pairwise_jsd,
    pairwise_jsd_matrix,
    score_sd,
)
from instability.measures.functional.representation import (
    REPRESENTATION_MEASURES,
    linear_cka_distance,
    pairwise_representation_distances,
    procrustes_distance,
    svcca_distance,
)

__all__ = [
    "REPRESENTATION_MEASURES",
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
