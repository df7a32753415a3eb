"""Representation-level instability (SPEC section 2): SVCCA, orthogonal Procrustes (OP) and linear CKA distances.

Each measure is split into a per-model step (run once per model and layer) and a cheap per-pair step, so the
pair matrix over M models costs M decompositions plus M(M-1)/2 small ones instead of M(M-1)/2 full pipelines:

- OP: ||X^T Y||_* = ||F_x^T F_y||_* for any F with F F^T = X X^T; F is N x min(N, D) (thin QR of X^T).
- CKA: unit-norm (U-)centred Gram matrices per model; all pair inner products in one matmul.
- SVCCA: per model the SVD reduction (from eigh of the N x N Gram when N <= D, k checked against the exact
  singular values) and an orthonormal basis of the centred reduced view (and of its complement); the canonical
  correlations of a pair are the singular values of Q_x^T Q_y, or come from the sines of the principal angles,
  svdvals(Q_x^T Q_y_perp), when the complement is the narrower side (random data: k close to N).

The per-model step runs one model at a time and pairs go in blocks of a few (model i against j, j+1, ... > i):
large batched temporaries would be fresh memory pages on every allocation, a tenth of the run in page faults.
A single pair runs the same code on a stack of its two models. Everything runs in ``dtype`` (float64 by
default) on the input's device; matmuls and decompositions go through `instability.measures._linalg` (numpy's
LAPACK on CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from instability.measures import _linalg as linalg
from instability.measures._checks import (
    as_tensor,
    check_ndim,
    check_not_constant,
    check_num_examples,
    check_num_models,
    check_representation,
    check_same_examples,
)

REPRESENTATION_MEASURES = ("svcca", "op", "cka")


def _centre(x: Tensor, name: str) -> Tensor:
    """Columns centred over examples; a constant representation raises."""
    centred = x - x.mean(-2, keepdim=True)
    check_not_constant(centred, x, name)
    return centred


PAIR_BLOCK = 4  # pairs per batched call: 4 matrices of 522 x 522 stay below glibc's mmap threshold (32 MiB)


def _pair_matrix(num_models: int, block: Callable[[int, slice], Tensor], like: Tensor) -> Tensor:
    """Symmetric [M, M] matrix with zero diagonal; ``block(i, js)`` gives the distances of model i to models js
    (a slice of at most PAIR_BLOCK models after i)."""
    matrix = like.new_zeros(num_models, num_models)
    for i in range(num_models - 1):
        for start in range(i + 1, num_models, PAIR_BLOCK):
            js = slice(start, min(start + PAIR_BLOCK, num_models))
            matrix[i, js] = block(i, js)
    return matrix + matrix.T


def _stack_padded(a: Tensor, b: Tensor) -> Tensor:
    """Stack two per-model features, zero-padding the last axis to a common width (for x, y of different D)."""
    width = max(a.shape[-1], b.shape[-1])
    pad = [torch.nn.functional.pad(t, (0, width - t.shape[-1])) for t in (a, b)]
    return torch.stack(pad)


# --- orthogonal Procrustes ---------------------------------------------------------------------------------


def _op_factors(x: Tensor, name: str) -> Tensor:
    """Per model F with F F^T = X X^T for X centred and scaled to unit Frobenius norm (N x min(N, D))."""
    centred = _centre(x, name)
    normed = centred / torch.linalg.matrix_norm(centred, keepdim=True)
    if x.shape[-2] < x.shape[-1]:
        return linalg.qr_r(normed.mT).mT  # X^T = Q R  =>  X X^T = R^T R
    return normed


def _op_matrix(factors: Tensor) -> Tensor:
    """d = 1 - ||X^T Y||_* (SPEC: OP) for every pair, from the per-model factors [M, N, m]."""
    return _pair_matrix(
        factors.shape[0], lambda i, js: 1.0 - linalg.svdvals(linalg.matmul(factors[i].mT, factors[js])).sum(-1), factors
    )


# --- linear CKA --------------------------------------------------------------------------------------------


def _u_centre(gram: Tensor) -> Tensor:
    """Szekely & Rizzo U-centring: zero the diagonal, remove row/column means, zero the diagonal again."""
    n = gram.shape[-1]
    gram = gram.clone()
    gram.diagonal(dim1=-2, dim2=-1).zero_()
    means = gram.sum(-1) / (n - 2)
    means = means - means.sum(-1, keepdim=True) / (2 * (n - 1))
    gram = gram - means.unsqueeze(-1) - means.unsqueeze(-2)
    gram.diagonal(dim1=-2, dim2=-1).zero_()
    return gram


def _cka_grams(x: Tensor, debiased: bool, name: str) -> Tensor:
    """Flattened, unit-norm centred Gram per model: U-centred (debiased CKA) or double-centred (biased).

    Both centrings are translation invariant, so the Gram of the column-centred X is used (better conditioned).
    """
    if debiased:
        check_num_examples(x.shape[-2], 4, f"debiased CKA ({name})")
    centred = _centre(x, name)
    gram = linalg.matmul(centred, centred.mT)
    if debiased:
        gram = _u_centre(gram)
    norm = torch.linalg.matrix_norm(gram, keepdim=True)
    scale = x.shape[-2] * torch.finfo(x.dtype).eps * torch.linalg.matrix_norm(centred, keepdim=True) ** 2
    if bool((norm <= scale).any()):
        raise ValueError(f"{name}: the centred Gram matrix is zero, CKA is undefined")
    return (gram / norm).flatten(-2)


def _cka_matrix(grams: Tensor) -> Tensor:
    """d = 1 - CKA = 1 - <K~, L~> / (||K~|| ||L~||) (SPEC: CKA) for every pair: one matmul of unit-norm Grams."""
    matrix = 1.0 - grams @ grams.T
    return ((matrix + matrix.T) / 2).fill_diagonal_(0.0)


# --- SVCCA -------------------------------------------------------------------------------------------------


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")


def _shares(s: Tensor) -> Tensor:
    """Cumulative share of the singular-value sum held by the top 1, 2, ... directions."""
    return s.cumsum(-1) / s.sum(-1, keepdim=True)


def _share_cutoff(shares: Tensor, threshold: float) -> float:
    """The threshold plus the rounding bound of a cumulative share (cumsum and sum of n values: 8 n eps)."""
    return threshold + 8 * shares.shape[-1] * torch.finfo(shares.dtype).eps


def _kept_directions(shares: Tensor, threshold: float) -> Tensor:
    """k: the top directions whose cumulative share is <= threshold, at least 1 (SPEC: SVCCA).

    A share above the threshold by less than its rounding error counts as at it, so the rule never sits on a
    tie: threshold 1 keeps every direction, although the last share (cumsum / sum) may round to 1 + eps."""
    return (shares <= _share_cutoff(shares, threshold)).sum(-1).clamp_min(1)


def _share_margin(x: Tensor, eigenvalues: Tensor) -> Tensor:
    """Bound on the error of the cumulative shares when s = sqrt(eigenvalues of fl(X X^T)).

    Forming and diagonalising the Gram perturbs each s^2 by at most tau = 4 eps (D ||X||_F^2 + N s_max^2), so
    each s by min(sqrt(tau), tau / s); a share is a ratio of such sums."""
    n, d = x.shape[-2:]
    tau = 4 * torch.finfo(x.dtype).eps * (d * x.square().sum((-2, -1)) + n * eigenvalues[..., 0])
    s = eigenvalues.sqrt()
    error = torch.minimum(tau.sqrt().unsqueeze(-1), tau.unsqueeze(-1) / s).sum(-1)
    return 2 * error / s.sum(-1)


def _svcca_reduce(x: Tensor, threshold: float, name: str) -> tuple[Tensor, Tensor]:
    """Left singular vectors of the *uncentred* X and k (SPEC: SVCCA); the reduced view X V_k = U_k S_k.

    For N <= D, U and s come from eigh of the N x N Gram (3x cheaper than an SVD of X). Its small singular values
    are only accurate to about sqrt(eps) s_max, so a model whose cumulative share lies within that error of the
    threshold gets k from the exact singular values (svdvals) instead: k is always the SVD's k."""
    _check_threshold(threshold)
    _centre(x, name)
    if x.shape[-2] > x.shape[-1]:
        u, s, _ = torch.linalg.svd(x, full_matrices=False)
        return u, _kept_directions(_shares(s), threshold)
    eigenvalues, u = linalg.eigh(linalg.matmul(x, x.mT))
    eigenvalues, u = eigenvalues.flip(-1).clamp_min(0.0), u.flip(-1)
    shares = _shares(eigenvalues.sqrt())
    k = _kept_directions(shares, threshold)
    unsure = ((shares - _share_cutoff(shares, threshold)).abs() <= _share_margin(x, eigenvalues).unsqueeze(-1)).any(-1)
    if bool(unsure.any()):
        k[unsure] = _kept_directions(_shares(linalg.svdvals(x[unsure])), threshold)
    return u, k


def _svcca_bases(u: Tensor, k: Tensor, complete: bool, name: str) -> Tensor:
    """QR of [1/sqrt(N), U_kmax]: columns 1..k span the centred reduced view, columns k+1.. (``complete``) its
    complement inside the centred space. Centring removes the ones direction, so span(centred U_k S_k) is
    span(1, U_k) minus the ones direction; the view must keep rank k (else SVCCA is undefined)."""
    n, kmax = u.shape[-2], int(k.max())
    if kmax >= n:
        raise ValueError(f"{name}: SVCCA keeps all {n} directions; centred they are rank deficient, SVCCA is undefined")
    ones = u.new_full((*u.shape[:-2], n, 1), n**-0.5)
    q, r = linalg.qr(torch.cat([ones, u[..., :kmax]], -1), complete)
    kept = torch.arange(kmax, device=u.device) < k.unsqueeze(-1)
    lost_rank = (r.diagonal(dim1=-2, dim2=-1)[..., 1:].abs() <= max(n, kmax + 1) * torch.finfo(u.dtype).eps) & kept
    if bool(lost_rank.any()):
        models = lost_rank.any(-1).nonzero().flatten().tolist()
        raise ValueError(f"{name} (model {models}): the centred SVD-reduced view is rank deficient, SVCCA is undefined")
    return q


def _svcca_matrix(u: Tensor, k: Tensor, name: str) -> Tensor:
    """d = 1 - sum(rho) / min(k_x, k_y) for every pair, rho the canonical correlations of the reduced views.

    Direct: rho = svdvals(Q_x^T Q_y). Complement (when N - 1 - k is the narrower side): s = svdvals(Q_small^T
    Q_large_perp) are the sines of the principal angles from the smaller basis to the larger one, so
    d = sum(1 - sqrt(1 - s^2)) / k_small, written s^2 / (1 + sqrt(1 - s^2)) for accuracy. Taking the smaller
    basis avoids sines that are exactly 1 (their cosine would cost sqrt(eps)).
    """
    n, kmax = u.shape[-2], int(k.max())
    complement = n - 1 - int(k.min()) < kmax
    q = _svcca_bases(u, k, complement, name)
    basis = q[..., 1 : 1 + kmax] * (torch.arange(kmax, device=q.device) < k.unsqueeze(-1)).unsqueeze(-2)
    k_float = k.to(q.dtype)

    def direct(i: int, js: slice) -> Tensor:
        rho = linalg.svdvals(linalg.matmul(basis[i].mT, basis[js]))
        return 1.0 - rho.sum(-1) / torch.minimum(k_float[i], k_float[js])

    if not complement:
        return _pair_matrix(u.shape[0], direct, q)
    start = 1 + int(k.min())
    perp = q[..., start:] * (torch.arange(start, n, device=q.device) > k.unsqueeze(-1)).unsqueeze(-2)

    def from_complement(i: int, js: slice) -> Tensor:
        # each pair's smaller basis against the complement of the larger one (only that product is formed)
        cross = torch.stack([linalg.matmul(basis[a].mT, perp[b]) for a, b in
                             ((i, j) if k[i] <= k[j] else (j, i) for j in range(js.start, js.stop))])
        sines = linalg.svdvals(cross).clamp(max=1.0)
        lost = (sines**2 / (1.0 + torch.sqrt(1.0 - sines**2))).sum(-1)
        return lost / torch.minimum(k_float[i], k_float[js])

    return _pair_matrix(u.shape[0], from_complement, q)


# --- one pair ----------------------------------------------------------------------------------------------


def _pair_inputs(x: Tensor, y: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    x, y = check_representation(x, "x", dtype), check_representation(y, "y", dtype)
    check_ndim(x, (2,), "x", "[N examples, D features]")
    check_ndim(y, (2,), "y", "[N examples, D features]")
    check_same_examples(x, y)
    return x, y


def svcca_distance(x: Tensor, y: Tensor, threshold: float = 0.99, dtype: torch.dtype = torch.float64) -> Tensor:
    """SVCCA distance as the paper computes it (SPEC section 2): SVD-reduce each uncentred view to its top k
    directions, k the most whose cumulative share of the singular-value sum is <= ``threshold`` (up to rounding,
    so 1 keeps all; at least 1), then d = 1 - mean of the top min(k_x, k_y) canonical correlations. Near 0 for
    independent data when N is not much larger than D."""
    x, y = _pair_inputs(x, y, dtype)
    (ux, kx), (uy, ky) = _svcca_reduce(x, threshold, "x"), _svcca_reduce(y, threshold, "y")
    return _svcca_matrix(_stack_padded(ux, uy), torch.stack([kx, ky]), "x, y (models 0, 1)")[0, 1]


def procrustes_distance(x: Tensor, y: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthogonal Procrustes distance d = 1 - ||X^T Y||_* with X, Y column-centred and unit Frobenius norm
    (SPEC section 2; half of Ding et al.'s 2 - 2||X^T Y||_*)."""
    x, y = _pair_inputs(x, y, dtype)
    return _op_matrix(_stack_padded(_op_factors(x, "x"), _op_factors(y, "y")))[0, 1]


def linear_cka_distance(x: Tensor, y: Tensor, debiased: bool = True, dtype: torch.dtype = torch.float64) -> Tensor:
    """1 - linear CKA (SPEC section 2): debiased (unbiased HSIC, U-centred Grams; needs N >= 4; can exceed 1)
    by default, else the biased ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred X, Y."""
    x, y = _pair_inputs(x, y, dtype)
    return _cka_matrix(torch.stack([_cka_grams(x, debiased, "x"), _cka_grams(y, debiased, "y")]))[0, 1]


# --- all pairs of M models ---------------------------------------------------------------------------------


def _layer_matrix(
    x: Tensor, measure: str, name: str, dtype: torch.dtype, threshold: float = 0.99, debiased: bool = True
) -> Tensor:
    """Pair matrix [M, M] of one layer's representations [M, N, D]; each model is cast to ``dtype`` and reduced
    to its per-model features on its own."""

    def per_model(step: Callable[[Tensor, str], Tensor]) -> list[Tensor]:
        names = [f"{name} (model {m})" for m in range(x.shape[0])]
        return [step(check_representation(x[m], names[m], dtype), names[m]) for m in range(x.shape[0])]

    if measure == "svcca":
        u, k = zip(*per_model(lambda model, label: _svcca_reduce(model, threshold, label)))
        return _svcca_matrix(torch.stack(u), torch.stack(k), name)
    if measure == "op":
        return _op_matrix(torch.stack(per_model(_op_factors)))
    return _cka_matrix(torch.stack(per_model(lambda model, label: _cka_grams(model, debiased, label))))


_MEASURE_KWARGS = {"svcca": {"threshold"}, "op": set(), "cka": {"debiased"}}


def pairwise_representation_distances(
    hidden: Tensor, measure: str, dtype: torch.dtype = torch.float64, **kwargs: float | bool
) -> Tensor:
    """Pair matrices [L, M, M] (symmetric, zero diagonal) of one measure for hidden states [M, L, N, D].

    ``measure`` is one of REPRESENTATION_MEASURES; ``kwargs`` go to it (``threshold`` for SVCCA, ``debiased`` for
    CKA). Each model's layer is cast to ``dtype`` on its own, so a float32 input is never copied whole.
    """
    if measure not in _MEASURE_KWARGS:
        raise ValueError(f"measure must be one of {REPRESENTATION_MEASURES}, got {measure!r}")
    unknown = set(kwargs) - _MEASURE_KWARGS[measure]
    if unknown:
        raise TypeError(f"measure {measure!r} takes no argument(s) {sorted(unknown)}")
    hidden = as_tensor(hidden, "hidden")
    check_ndim(hidden, (4,), "hidden", "[M models, L layers, N examples, D features]")
    check_num_models(hidden.shape[0], "pairwise_representation_distances")
    return torch.stack([_layer_matrix(hidden[:, layer], measure, f"hidden layer {layer}", dtype, **kwargs)
                        for layer in range(hidden.shape[1])])
