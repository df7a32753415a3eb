"""Prediction-level measures and the pair reduction (SPEC sections 2 and 3) against independent references."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from statsmodels.stats.inter_rater import fleiss_kappa

from instability.measures import (
    fleiss_kappa_instability,
    mean_over_pairs,
    pairwise_disagreement,
    pairwise_disagreement_matrix,
    pairwise_jsd,
    pairwise_jsd_matrix,
    score_sd,
)


def random_labels(rng, models, examples, classes):
    return torch.as_tensor(rng.integers(0, classes, size=(models, examples)))


def random_probs(rng, models, examples, classes, zeros=True):
    probs = rng.dirichlet(np.full(classes, 0.5), size=(models, examples))
    if zeros:
        probs[rng.random((models, examples, classes)) < 0.2] = 0.0
        probs[..., 0] += 1e-3  # never an all-zero row
        probs /= probs.sum(-1, keepdims=True)
    return torch.as_tensor(probs)


# --- SD ---------------------------------------------------------------------------------------------------


def test_score_sd_is_population_sd():
    scores = np.array([0.71, 0.68, 0.74, 0.52])
    assert score_sd(torch.as_tensor(scores)).item() == pytest.approx(np.std(scores, ddof=0), abs=1e-15)
    assert score_sd(scores).dtype == torch.float64


# --- I_pwd ------------------------------------------------------------------------------------------------


def test_disagreement_matrix_matches_a_loop():
    labels = random_labels(np.random.default_rng(0), 6, 40, 3)
    matrix = pairwise_disagreement_matrix(labels)
    for i in range(6):
        for j in range(6):
            assert matrix[i, j].item() == pytest.approx((labels[i] != labels[j]).double().mean().item(), abs=1e-15)
    expected = np.mean([(labels[i] != labels[j]).double().mean().item() for i in range(6) for j in range(i + 1, 6)])
    assert pairwise_disagreement(labels).item() == pytest.approx(expected, abs=1e-15)


# --- I_kappa ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("models", "examples", "classes", "seed"), [(2, 5, 2, 0), (5, 139, 2, 1), (20, 522, 2, 2),
                                                                       (7, 60, 3, 3), (10, 33, 5, 4)])
def test_kappa_equals_statsmodels(models, examples, classes, seed):
    labels = random_labels(np.random.default_rng(seed), models, examples, classes)
    table = np.stack([(labels == c).sum(0).numpy() for c in range(classes)], axis=1)  # [N, C] rater counts
    expected = 1.0 - fleiss_kappa(table, method="fleiss")
    assert fleiss_kappa_instability(labels).item() == pytest.approx(expected, abs=1e-12)
    assert fleiss_kappa_instability(labels, num_classes=classes + 2).item() == pytest.approx(expected, abs=1e-12)


def test_kappa_agreement_term_is_one_minus_pwd():
    """Pbar = 1 - I_pwd, so with chance agreement P_e, 1 - kappa = I_pwd / (1 - P_e)."""
    labels = random_labels(np.random.default_rng(5), 8, 100, 2)
    p_one = labels.double().mean()
    chance = p_one**2 + (1 - p_one) ** 2
    expected = pairwise_disagreement(labels) / (1 - chance)
    assert fleiss_kappa_instability(labels).item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize(("models", "examples"), [(20, 139), (10, 522), (3, 7)])
def test_released_kappa_is_scaled_pwd(models, examples):
    labels = random_labels(np.random.default_rng(models), models, examples, 2)
    released = fleiss_kappa_instability(labels, chance="released")
    expected = pairwise_disagreement(labels) * examples / (examples - 1)
    assert released.item() == pytest.approx(expected.item(), abs=1e-12)
    assert released.item() != pytest.approx(fleiss_kappa_instability(labels).item(), abs=1e-6)


def test_kappa_on_a_resample_is_kappa_of_the_resampled_raters():
    labels = random_labels(np.random.default_rng(6), 6, 50, 2)
    index = torch.tensor([0, 0, 3, 5, 5, 5])
    table = np.stack([(labels[index] == c).sum(0).numpy() for c in range(2)], axis=1)
    assert fleiss_kappa_instability(labels[index]).item() == pytest.approx(1 - fleiss_kappa(table), abs=1e-12)


def test_kappa_rejects_unknown_chance_and_undefined_kappa():
    labels = random_labels(np.random.default_rng(7), 4, 10, 2)
    with pytest.raises(ValueError, match="chance"):
        fleiss_kappa_instability(labels, chance="notebook")
    with pytest.raises(ValueError, match="undefined"):
        fleiss_kappa_instability(torch.zeros(4, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        fleiss_kappa_instability(labels, num_classes=1)


# --- I_jsd ------------------------------------------------------------------------------------------------


def test_jsd_matrix_equals_scipy_squared_with_zeros():
    probs = random_probs(np.random.default_rng(8), 4, 30, 3)
    assert (probs == 0).any()
    matrix = pairwise_jsd_matrix(probs)
    for i in range(4):
        for j in range(4):
            expected = np.mean([jensenshannon(probs[i, x], probs[j, x]) ** 2 for x in range(30)])
            assert matrix[i, j].item() == pytest.approx(expected, rel=1e-10, abs=1e-14)
    pairs = [matrix[i, j].item() for i in range(4) for j in range(i + 1, 4)]
    assert pairwise_jsd(probs).item() == pytest.approx(np.mean(pairs), abs=1e-14)


def test_jsd_bounds_and_identical_inputs():
    one_hot = torch.eye(2, dtype=torch.float64).unsqueeze(1)  # model 0 says class 0, model 1 class 1
    assert pairwise_jsd(one_hot).item() == pytest.approx(math.log(2), abs=1e-15)
    probs = random_probs(np.random.default_rng(9), 5, 20, 4)
    assert pairwise_jsd_matrix(probs).max().item() <= math.log(2)
    assert pairwise_jsd(probs[[1, 1]]).item() == 0.0


def test_jsd_from_logits_equals_softmax_probs():
    logits = torch.randn(5, 25, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(pairwise_jsd(logits, from_logits=True), pairwise_jsd(torch.softmax(logits.double(), -1)),
                          rtol=0, atol=1e-15)


# --- mean over pairs --------------------------------------------------------------------------------------


def symmetric_matrix(models=5, seed=10):
    values = torch.as_tensor(np.random.default_rng(seed).random((models, models)))
    return (values + values.T).fill_diagonal_(0.0)


def test_mean_over_pairs_all_and_groups():
    matrix = symmetric_matrix()
    assert mean_over_pairs(matrix).item() == pytest.approx(matrix[np.triu_indices(5, 1)].mean().item(), abs=1e-15)
    group = torch.tensor([0, 2, 4])
    expected = (matrix[0, 2] + matrix[0, 4] + matrix[2, 4]) / 3
    assert mean_over_pairs(matrix, group).item() == pytest.approx(expected.item(), abs=1e-15)


def test_mean_over_pairs_resample_with_duplicates():
    matrix = symmetric_matrix()
    index = torch.tensor([1, 1, 3, 3, 4])  # pairs a<b: (1,1) (1,3)x2 (1,4) (1,3)x2 (1,4) (3,3) (3,4)x2
    distinct = [matrix[1, 3]] * 4 + [matrix[1, 4]] * 2 + [matrix[3, 4]] * 2
    assert mean_over_pairs(matrix, index).item() == pytest.approx(sum(distinct).item() / 8, abs=1e-15)
    assert mean_over_pairs(matrix, index, keep_self_pairs=True).item() == pytest.approx(sum(distinct).item() / 10,
                                                                                         abs=1e-15)


def test_mean_over_pairs_stack_of_layers():
    stack = torch.stack([symmetric_matrix(seed=s) for s in range(3)])
    index = torch.tensor([4, 0, 0, 2])
    result = mean_over_pairs(stack, index)
    assert result.shape == (3,)
    for layer in range(3):
        assert result[layer].item() == pytest.approx(mean_over_pairs(stack[layer], index).item(), abs=1e-15)


def test_bootstrap_paths_for_pair_measures():
    """The notebook's resample measure (self-pairs kept as 0) is the measure on the resampled models."""
    rng = np.random.default_rng(11)
    labels, probs = random_labels(rng, 6, 40, 2), random_probs(rng, 6, 40, 2, zeros=False)
    index = torch.tensor([2, 2, 0, 5, 5, 1])
    pair_measures = ((pairwise_disagreement_matrix, pairwise_disagreement), (pairwise_jsd_matrix, pairwise_jsd))
    for matrix_fn, measure in pair_measures:
        data = labels if measure is pairwise_disagreement else probs
        kept = mean_over_pairs(matrix_fn(data), index, keep_self_pairs=True)
        assert kept.item() == pytest.approx(measure(data[index]).item(), abs=1e-14)
        distinct = torch.tensor([2, 0, 5, 1])
        assert mean_over_pairs(matrix_fn(data), distinct).item() == pytest.approx(measure(data[distinct]).item(),
                                                                                  abs=1e-14)


def test_mean_over_pairs_errors():
    matrix = symmetric_matrix()
    with pytest.raises(ValueError, match="distinct"):
        mean_over_pairs(matrix, torch.tensor([3, 3, 3]))
    with pytest.raises(ValueError, match="at least 2"):
        mean_over_pairs(matrix, torch.tensor([3]), keep_self_pairs=True)
    with pytest.raises(ValueError, match="outside"):
        mean_over_pairs(matrix, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="integer"):
        mean_over_pairs(matrix, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[\.\.\., M, M\]"):
        mean_over_pairs(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        mean_over_pairs(matrix.fill_diagonal_(float("nan")))


# --- degenerate input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [pairwise_disagreement, pairwise_disagreement_matrix, fleiss_kappa_instability])
def test_label_measures_reject_bad_labels(fn):
    with pytest.raises(ValueError, match="at least 2 models"):
        fn(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        fn(torch.zeros(3, 10))
    with pytest.raises(ValueError, match="non-negative"):
        fn(-torch.ones(3, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        fn(torch.zeros(3, 10, 2, dtype=torch.long))


@pytest.mark.parametrize("fn", [pairwise_jsd, pairwise_jsd_matrix])
def test_jsd_rejects_bad_probs(fn):
    probs = random_probs(np.random.default_rng(12), 3, 10, 2, zeros=False)
    with pytest.raises(ValueError, match="sum to 1"):
        fn(probs * 0.9)
    with pytest.raises(ValueError, match="negative"):
        fn(probs - 0.5)
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.full((3, 10, 2), float("nan")))
    with pytest.raises(ValueError, match="at least 2 models"):
        fn(probs[:1])
    with pytest.raises(ValueError, match="shape"):
        fn(probs[0])


def test_score_sd_rejects_degenerate_input():
    with pytest.raises(ValueError, match="at least 2 models"):
        score_sd(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="NaN"):
        score_sd(torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="shape"):
        score_sd(torch.zeros(2, 2))
