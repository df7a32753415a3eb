"""torchmetrics classes: fed in batches they equal the functional form on all data; bad batches raise."""

import pytest
import torch

from instability.measures import (
    FleissKappaInstability,
    LinearCKADistance,
    PairwiseDisagreement,
    PairwiseJSD,
    ProcrustesDistance,
    ScoreSD,
    SVCCADistance,
    fleiss_kappa_instability,
    mean_over_pairs,
    pairwise_disagreement,
    pairwise_jsd,
    pairwise_representation_distances,
    score_sd,
)

BATCHES = [7, 12, 1, 20]  # uneven batch sizes over 40 examples


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def feed(metric, data, dim):
    for batch in data.split(BATCHES, dim=dim):
        metric.update(batch)
    return metric


def test_score_sd_from_a_vector_or_one_model_at_a_time():
    scores = torch.rand(40, generator=generator())
    assert torch.equal(feed(ScoreSD(), scores, 0).compute(), score_sd(scores))
    metric = ScoreSD()
    for score in scores.tolist():
        metric.update(score)
    assert torch.equal(metric.compute(), score_sd(scores))


@pytest.mark.parametrize(
    ("metric", "functional"),
    [
        (PairwiseDisagreement(), pairwise_disagreement),
        (FleissKappaInstability(), fleiss_kappa_instability),
        (FleissKappaInstability(num_classes=3, chance="released"),
         lambda labels: fleiss_kappa_instability(labels, 3, "released")),
    ],
)
def test_label_metrics_equal_functional(metric, functional):
    labels = torch.randint(0, 3, (5, 40), generator=generator(1))
    assert feed(metric, labels, 1).compute().item() == pytest.approx(functional(labels).item(), abs=1e-15)


@pytest.mark.parametrize("from_logits", [False, True])
def test_jsd_metric_equals_functional(from_logits):
    logits = 3 * torch.randn(5, 40, 3, generator=generator(2))
    data = logits if from_logits else torch.softmax(logits, -1)
    metric = feed(PairwiseJSD(from_logits=from_logits), data, 1)
    assert metric.compute().item() == pytest.approx(pairwise_jsd(data, from_logits).item(), abs=1e-15)


REPRESENTATION_METRICS = [
    (SVCCADistance, "svcca", {}),
    (SVCCADistance, "svcca", {"threshold": 0.9}),
    (ProcrustesDistance, "op", {}),
    (LinearCKADistance, "cka", {}),
    (LinearCKADistance, "cka", {"debiased": False}),
]


@pytest.mark.parametrize(("cls", "measure", "kwargs"), REPRESENTATION_METRICS)
def test_representation_metrics_equal_functional(cls, measure, kwargs):
    hidden = torch.randn(4, 3, 40, 12, generator=generator(3))  # [M, L, N, D], float32 like real hidden states
    metric = feed(cls(**kwargs), hidden, 2)
    expected = pairwise_representation_distances(hidden, measure, **kwargs)
    assert torch.allclose(metric.compute_pair_matrix(), expected, rtol=0, atol=1e-14)
    result = metric.compute()
    assert result.shape == (3,)
    assert torch.allclose(result, mean_over_pairs(expected), rtol=0, atol=1e-14)


def test_single_layer_updates_and_reset():
    hidden = torch.randn(3, 40, 10, generator=generator(4))
    metric = feed(ProcrustesDistance(), hidden, 1)
    expected = pairwise_representation_distances(hidden.unsqueeze(1), "op")
    assert metric.compute().item() == pytest.approx(mean_over_pairs(expected).item(), abs=1e-14)
    assert metric.compute_pair_matrix().shape == (1, 3, 3)
    metric.reset()
    feed(metric, 2 * hidden[:, :, :5], 1)
    expected = pairwise_representation_distances(hidden[:, None, :, :5], "op")
    assert metric.compute().item() == pytest.approx(mean_over_pairs(expected).item(), abs=1e-14)


def test_metrics_reject_batches_with_other_models():
    labels = torch.randint(0, 2, (4, 10), generator=generator(5))
    for metric in (PairwiseDisagreement(), FleissKappaInstability()):
        metric.update(labels)
        with pytest.raises(ValueError, match="same models"):
            metric.update(labels[:3])
    probs = torch.softmax(torch.randn(4, 10, 2, generator=generator(6)), -1)
    metric = PairwiseJSD()
    metric.update(probs)
    with pytest.raises(ValueError, match="same models"):
        metric.update(probs[:3])
    hidden = torch.randn(4, 2, 10, 6, generator=generator(7))
    metric = LinearCKADistance()
    metric.update(hidden)
    with pytest.raises(ValueError, match="same models"):
        metric.update(hidden[:, :1])


def test_metrics_validate_each_batch():
    with pytest.raises(ValueError, match="integer"):
        PairwiseDisagreement().update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="num_classes"):
        FleissKappaInstability(num_classes=2).update(torch.full((3, 5), 2))
    with pytest.raises(ValueError, match="chance"):
        FleissKappaInstability(chance="notebook")
    with pytest.raises(ValueError, match="sum to 1"):
        PairwiseJSD().update(torch.full((3, 5, 2), 0.3))
    with pytest.raises(ValueError, match="shape"):
        SVCCADistance().update(torch.zeros(3, 5))
    metric = ScoreSD()
    metric.update(0.7)
    with pytest.raises(ValueError, match="at least 2 models"):
        metric.compute()


def test_representation_metric_reports_degenerate_data_at_compute():
    hidden = torch.randn(3, 1, 10, 5, generator=generator(8))
    hidden[2] = 1.0
    metric = SVCCADistance()
    metric.update(hidden)
    with pytest.raises(ValueError, match="constant"):
        metric.compute()
