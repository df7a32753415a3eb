"""Representation distances (SPEC section 2) against plain numpy/scipy references, golden values, invariances."""

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.stats import ortho_group

from instability.measures import (
    REPRESENTATION_MEASURES,
    linear_cka_distance,
    mean_over_pairs,
    pairwise_representation_distances,
    procrustes_distance,
    svcca_distance,
)
from instability.measures.functional.representation import _kept_directions, _svcca_reduce

DISTANCES = {"svcca": svcca_distance, "op": procrustes_distance, "cka": linear_cka_distance}


# --- plain numpy references -------------------------------------------------------------------------------


def np_procrustes(x, y):
    """1 - ||X^T Y||_* via the optimal rotation R of scipy's orthogonal Procrustes: ||X^T Y||_* = tr(R^T X^T Y).
    The narrower view is padded with zero columns (scipy needs equal widths; the nuclear norm is unchanged)."""
    width = max(x.shape[1], y.shape[1])
    x, y = (np.pad(z - z.mean(0), ((0, 0), (0, width - z.shape[1]))) for z in (x, y))
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    rotation, nuclear = orthogonal_procrustes(x, y)  # argmin ||x R - y||_F over orthogonal R
    assert np.trace(rotation.T @ x.T @ y) == pytest.approx(nuclear, rel=1e-12)
    return 1 - np.trace(rotation.T @ x.T @ y)


def debiased_dot(xty, rows_x, rows_y, norm_x, norm_y, n):
    """Unbiased HSIC (times n(n-3)) in feature space, Kornblith et al. (2019), from row norms."""
    return xty - n / (n - 2.0) * rows_x.dot(rows_y) + norm_x * norm_y / ((n - 1) * (n - 2))


def np_cka(x, y, debiased):
    """Linear CKA in feature space (D x D cross-products), the form of Kornblith et al.'s demo."""
    x, y = x - x.mean(0), y - y.mean(0)
    dot, norm_x, norm_y = np.linalg.norm(x.T @ y) ** 2, np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if debiased:
        n = x.shape[0]
        rows_x, rows_y = (x**2).sum(1), (y**2).sum(1)
        sq_x, sq_y = rows_x.sum(), rows_y.sum()
        dot = debiased_dot(dot, rows_x, rows_y, sq_x, sq_y, n)
        norm_x = np.sqrt(debiased_dot(norm_x**2, rows_x, rows_x, sq_x, sq_x, n))
        norm_y = np.sqrt(debiased_dot(norm_y**2, rows_y, rows_y, sq_y, sq_y, n))
    return dot / (norm_x * norm_y)


def np_kept(s, threshold):
    """SVCCA's k: the most top directions whose cumulative share of sum(s) is <= threshold up to rounding (a share
    within 8 n eps above it counts as at it, so threshold 1 keeps all n), at least 1."""
    shares = np.cumsum(s) / s.sum()
    return max(1, int(np.sum(shares <= threshold + 8 * len(s) * np.finfo(s.dtype).eps)))


def np_svcca(x, y, threshold=0.99):
    """The paper's recipe: SVD-reduce the uncentred view, centre, orthonormalise (QR here), svdvals of Qx^T Qy."""
    bases = []
    for z in (x, y):
        _, s, vh = np.linalg.svd(z, full_matrices=False)
        k = np_kept(s, threshold)
        reduced = z @ vh[:k].T
        bases.append(np.linalg.qr(reduced - reduced.mean(0))[0])
    rho = np.linalg.svd(bases[0].T @ bases[1], compute_uv=False)
    return 1 - rho.sum() / min(bases[0].shape[1], bases[1].shape[1])


REFERENCES = {"svcca": np_svcca, "op": np_procrustes, "cka": lambda x, y: 1 - np_cka(x, y, debiased=True)}


def gaussian(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def anisotropic(seed, n, d):
    """Offset data with a decaying spectrum, like real hidden states (SVCCA keeps k << N)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.logspace(0, -3, d) + 5 * rng.standard_normal(d)


SHAPES = [(50, 20), (30, 64), (139, 1024)]  # N > D, N < D, the paper's RTE shape


# --- golden values and references -------------------------------------------------------------------------


def test_kornblith_golden_values():
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = x + np.random.randn(100, 10)
    assert 1 - linear_cka_distance(x, y, debiased=False).item() == pytest.approx(0.55761, abs=5e-6)
    assert 1 - linear_cka_distance(x, y).item() == pytest.approx(0.51346, abs=5e-6)


@pytest.mark.parametrize("measure", REPRESENTATION_MEASURES)
@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_matches_numpy_reference(measure, n, d):
    x, y = gaussian(n, n, d), gaussian(d, n, d) + 0.5 * gaussian(n, n, d)
    assert DISTANCES[measure](x, y).item() == pytest.approx(REFERENCES[measure](x, y), abs=1e-12)


def test_svcca_with_unequal_k_close_to_n():
    """k_x != k_y, both close to N: the angles come from the complement of the larger basis; an exactly
    orthogonal direction (sine 1) must not cost sqrt(eps) accuracy."""
    x, y = gaussian(2, 60, 100), gaussian(3, 60, 100)
    kept = [np_kept(s, 0.99) for s in map(np.linalg.svdvals, (x, y))]
    assert kept[0] != kept[1] and min(kept) > 50
    assert svcca_distance(x, y).item() == pytest.approx(np_svcca(x, y), abs=1e-13)
    assert svcca_distance(y, x).item() == pytest.approx(np_svcca(x, y), abs=1e-13)


@pytest.mark.parametrize("measure", REPRESENTATION_MEASURES)
def test_matches_numpy_reference_on_anisotropic_data_of_different_widths(measure):
    x, y = anisotropic(0, 80, 30), anisotropic(1, 80, 45)
    assert DISTANCES[measure](x, y).item() == pytest.approx(REFERENCES[measure](x, y), abs=1e-12)


def test_biased_cka_matches_numpy_reference():
    x, y = gaussian(0, 40, 8), gaussian(1, 40, 12)
    assert linear_cka_distance(x, y, debiased=False).item() == pytest.approx(1 - np_cka(x, y, False), abs=1e-12)


def test_svcca_threshold_is_forwarded():
    x, y = anisotropic(2, 60, 20), anisotropic(3, 60, 20)
    for threshold in (0.5, 0.9, 1.0):
        assert svcca_distance(x, y, threshold=threshold).item() == pytest.approx(np_svcca(x, y, threshold), abs=1e-12)
    for z in (x, y):  # threshold 1 keeps all D = 20 directions, although cumsum / sum may end at 1 + eps
        assert int(_svcca_reduce(torch.as_tensor(z)[None], 1.0, "z")[1]) == 20


def test_svcca_kept_k_tolerates_rounding_only():
    """A share above the threshold by rounding error (the 1 + eps that ended cumsum / sum on one machine) is at
    the threshold; one above it by more than 8 n eps is not."""
    shares = torch.tensor([0.5, 0.9, 1.0 + 2.0**-52], dtype=torch.float64)
    assert int(_kept_directions(shares, 1.0)) == 3
    assert int(_kept_directions(shares, 0.9 - 2.0**-52)) == 2
    assert int(_kept_directions(torch.tensor([0.5, 0.9 + 1e-12, 1.0], dtype=torch.float64), 0.9)) == 1
    assert int(_kept_directions(shares, 0.1)) == 1  # at least one direction
    coarse = torch.tensor([0.5, 0.9, 1.0 + 2.0**-22])  # float32: rounding error; float64: a real excess
    assert int(_kept_directions(coarse, 1.0)) == 3
    assert int(_kept_directions(coarse.double(), 1.0)) == 2
    assert int(_kept_directions(torch.tensor([0.5, 1.0 + 2.0**-16]), 1.0)) == 1  # float32, 16 eps = 2**-19


def test_svcca_k_is_the_exact_svd_k_for_tiny_singular_values():
    """For N <= D, s comes from the Gram's eigenvalues, which blur singular values below sqrt(eps) s_max; the
    k must still be the one of the exact singular values (spectrum 1 .. 1e-12, thresholds between its shares)."""
    rng = np.random.default_rng(14)
    left, right = np.linalg.qr(rng.standard_normal((30, 30)))[0], np.linalg.qr(rng.standard_normal((64, 30)))[0]
    x = torch.as_tensor(left @ np.diag(np.logspace(0, -12, 30)) @ right.T)
    s = torch.linalg.svdvals(x)
    shares = s.cumsum(0) / s.sum()
    between = ((shares[:-1] + shares[1:]) / 2).tolist()
    assert [int(_svcca_reduce(x[None], threshold, "x")[1]) for threshold in between] == list(range(1, 30))


def test_sanity_figures_for_independent_gaussians():
    """SPEC: two independent 139 x 1024 Gaussians give SVCCA ~0.013, OP ~0.035, CKA distance ~1.0."""
    x, y = gaussian(100, 139, 1024), gaussian(101, 139, 1024)
    assert svcca_distance(x, y).item() == pytest.approx(0.013, abs=0.004)
    assert procrustes_distance(x, y).item() == pytest.approx(0.035, abs=0.004)
    assert linear_cka_distance(x, y).item() == pytest.approx(1.0, abs=0.03)


# --- invariances ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "d"), SHAPES[:2])
@pytest.mark.parametrize("measure", REPRESENTATION_MEASURES)
def test_zero_for_rotated_and_scaled_copy(measure, n, d):
    x = gaussian(n + d, n, d)
    rotation = ortho_group.rvs(d, random_state=0)
    assert DISTANCES[measure](x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert DISTANCES[measure](x, 3.5 * x @ rotation).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("n", "d"), SHAPES[:2])
@pytest.mark.parametrize("measure", ["op", "cka"])
def test_op_and_cka_ignore_translation(measure, n, d):
    x = gaussian(n + d, n, d)
    moved = 0.2 * x @ ortho_group.rvs(d, random_state=1) + gaussian(3, d)
    assert DISTANCES[measure](x, moved).item() == pytest.approx(0.0, abs=1e-12)


def test_svcca_is_only_nearly_translation_invariant():
    x = gaussian(4, 50, 20)
    distance = svcca_distance(x, x + gaussian(5, 20)).item()
    assert 0.0 < distance < 0.05


@pytest.mark.parametrize("measure", REPRESENTATION_MEASURES)
def test_symmetric(measure):
    x, y = gaussian(6, 40, 10), gaussian(7, 40, 25)
    assert DISTANCES[measure](x, y).item() == pytest.approx(DISTANCES[measure](y, x).item(), abs=1e-13)


def test_float32_input_is_measured_in_float64():
    x, y = torch.randn(30, 8), torch.randn(30, 8)
    for measure, fn in DISTANCES.items():
        assert fn(x, y).dtype == torch.float64, measure
        assert fn(x, y, dtype=torch.float32).dtype == torch.float32, measure


# --- batched pair matrices --------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", REPRESENTATION_MEASURES)
@pytest.mark.parametrize(("n", "d", "maker"), [(30, 12, gaussian), (20, 50, gaussian), (60, 16, anisotropic)])
def test_batched_pair_matrix_equals_single_pairs(measure, n, d, maker):
    models, layers = 4, 2
    hidden = torch.as_tensor(np.stack([np.stack([maker(10 * m + l, n, d) for l in range(layers)])
                                       for m in range(models)]))
    matrix = pairwise_representation_distances(hidden, measure)
    assert matrix.shape == (layers, models, models)
    assert torch.equal(matrix, matrix.mT)
    assert torch.all(matrix.diagonal(dim1=-2, dim2=-1) == 0)
    for layer in range(layers):
        for i in range(models):
            for j in range(i + 1, models):
                single = DISTANCES[measure](hidden[i, layer], hidden[j, layer])
                assert matrix[layer, i, j].item() == pytest.approx(single.item(), abs=1e-12)
    assert mean_over_pairs(matrix).shape == (layers,)


def test_batched_forwards_keyword_arguments():
    hidden = torch.as_tensor(gaussian(8, 3, 1, 40, 6))
    biased = pairwise_representation_distances(hidden, "cka", debiased=False)[0, 0, 1]
    assert biased.item() == pytest.approx(linear_cka_distance(hidden[0, 0], hidden[1, 0], debiased=False).item(),
                                          abs=1e-12)
    svcca = pairwise_representation_distances(hidden, "svcca", threshold=0.5)[0, 1, 2]
    assert svcca.item() == pytest.approx(svcca_distance(hidden[1, 0], hidden[2, 0], threshold=0.5).item(), abs=1e-12)
    with pytest.raises(TypeError):
        pairwise_representation_distances(hidden, "op", debiased=False)


# --- degenerate input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("measure", REPRESENTATION_MEASURES)
def test_pair_errors(measure):
    fn = DISTANCES[measure]
    x = gaussian(9, 20, 5)
    with pytest.raises(ValueError, match="constant"):
        fn(x, np.full((20, 5), 3.0))
    with pytest.raises(ValueError, match="constant"):
        fn(np.zeros((20, 5)), x)
    with pytest.raises(ValueError, match="NaN"):
        fn(x, np.where(x > 1, np.inf, x))
    with pytest.raises(ValueError, match="same examples"):
        fn(x, x[:10])
    with pytest.raises(ValueError, match="shape"):
        fn(x[None], x[None])


def test_debiased_cka_needs_four_examples():
    x, y = gaussian(10, 3, 4), gaussian(11, 3, 4)
    with pytest.raises(ValueError, match="at least 4 examples"):
        linear_cka_distance(x, y)
    assert np.isfinite(linear_cka_distance(x, y, debiased=False).item())


def test_svcca_rejects_a_reduced_view_that_loses_rank_when_centred():
    """A large constant column whose direction is exactly the ones vector: it survives the SVD reduction,
    centring removes it, and the reduced view has fewer than k dimensions."""
    z = gaussian(12, 30, 4)
    x = np.hstack([np.full((30, 1), 100.0), z - z.mean(0)])
    with pytest.raises(ValueError, match="rank deficient"):
        svcca_distance(x, gaussian(13, 30, 5))
    with pytest.raises(ValueError, match="threshold"):
        svcca_distance(z, z, threshold=0.0)


@pytest.mark.parametrize("measure", REPRESENTATION_MEASURES)
def test_numpy_and_torch_linear_algebra_agree(measure, monkeypatch):
    """On CPU the decompositions run through numpy (faster than torch's MKL on AMD); torch's path (GPUs) must give
    the same pair matrices. SVCCA's complement route (k close to N) and its direct route both run."""
    from instability.measures import _linalg

    generator = torch.Generator().manual_seed(3)
    low_rank = torch.randn(4, 2, 40, 6, generator=generator) @ torch.randn(6, 60, generator=generator)
    for hidden in (torch.randn(4, 2, 40, 60, generator=generator, dtype=torch.float64), low_rank):
        fast = pairwise_representation_distances(hidden, measure)
        monkeypatch.setattr(_linalg, "USE_NUMPY", False)
        reference = pairwise_representation_distances(hidden, measure)
        monkeypatch.setattr(_linalg, "USE_NUMPY", True)
        torch.testing.assert_close(fast, reference, rtol=0, atol=1e-10)


def test_batched_errors():
    hidden = torch.randn(3, 2, 10, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="measure"):
        pairwise_representation_distances(hidden, "pwcca")
    with pytest.raises(ValueError, match="shape"):
        pairwise_representation_distances(hidden[:, 0], "op")
    with pytest.raises(ValueError, match="at least 2 models"):
        pairwise_representation_distances(hidden[:1], "op")
    constant = hidden.clone()
    constant[1, 1] = 1.0
    for measure in REPRESENTATION_MEASURES:
        with pytest.raises(ValueError, match=r"layer 1 \(model 1\) is constant"):
            pairwise_representation_distances(constant, measure)
    broken = hidden.clone()
    broken[2, 0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pairwise_representation_distances(broken, "cka")
