"""The dense linear algebra of the representation measures, on CPU through numpy's LAPACK/BLAS.

torch's CPU wheel links MKL, which runs its slow generic code paths on AMD processors: on this project's AMD EPYC
machine numpy's OpenBLAS is 1.3x faster for the SVDs, eigendecompositions and QRs the measures need and 2x for
their float64 matmuls, with the same accuracy. numpy releases the GIL in both, so worker threads run in
parallel. Other devices (CUDA) stay with torch. ``USE_NUMPY = False`` routes everything through torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

USE_NUMPY = True


def _numpy(x: Tensor) -> bool:
    return USE_NUMPY and x.device.type == "cpu"


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b, batched with broadcasting."""
    if _numpy(a):
        return torch.from_numpy(np.matmul(a.detach().numpy(), b.detach().numpy()))
    return a @ b


def svdvals(a: Tensor) -> Tensor:
    """Singular values of each matrix of a batch, in descending order."""
    if _numpy(a):
        return torch.from_numpy(np.linalg.svd(a.detach().numpy(), compute_uv=False))
    return torch.linalg.svdvals(a)


def eigh(a: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors of each symmetric matrix of a batch."""
    if _numpy(a):
        values, vectors = np.linalg.eigh(a.detach().numpy())
        return torch.from_numpy(values), torch.from_numpy(vectors)
    return tuple(torch.linalg.eigh(a))


def qr_r(a: Tensor) -> Tensor:
    """R of the reduced QR factorisation of each matrix of a batch."""
    if _numpy(a):
        return torch.from_numpy(np.linalg.qr(a.detach().numpy(), mode="r"))
    return torch.linalg.qr(a, mode="r").R


def qr(a: Tensor, complete: bool) -> tuple[Tensor, Tensor]:
    """Q and R of the complete or reduced QR factorisation of each matrix of a batch."""
    mode = "complete" if complete else "reduced"
    if _numpy(a):
        q, r = np.linalg.qr(a.detach().numpy(), mode=mode)
        return torch.from_numpy(q), torch.from_numpy(r)
    return tuple(torch.linalg.qr(a, mode=mode))
