"""Batched representation measures vs. a per-pair loop of the textbook formulas (SPEC section 2).

Shape: the paper's largest, 20 models x 24 layers x 522 examples (CoLA test half) x 1024 dims, seeded random
float32 data (like real hidden states). The batched functions run on all 24 layers. The loop computes every
pair separately, all of its layers at once, recomputing everything per pair as the authors' scripts do; it is
timed on a subset of layers (``--loop-layers``, the top ones) and its time is scaled to 24 layers. Both must agree
to 1e-8 (max abs difference over the looped layers and all pairs). Speed-ups are given in wall-clock time and in
this process's CPU time; on shared cores the CPU-time ratio is the one other processes do not distort.

Run: ``python benchmarks/measures.py`` (about 6 minutes on 2 idle CPU cores, longer when they are shared).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from functools import partial

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: on shared cores spinning costs 10x
import torch
from torch import Tensor

from instability.measures import REPRESENTATION_MEASURES, pairwise_representation_distances

MODELS, LAYERS, EXAMPLES, DIMS = 20, 24, 522, 1024
SEED = 0
TOLERANCE = 1e-8


# --- the per-pair loop: each formula written out as in the paper / the authors' scripts ---------------------


def loop_op(x: Tensor, y: Tensor) -> Tensor:
    """1 - ||X^T Y||_* on column-centred, unit-Frobenius X, Y ([L, N, D] each); the D x D product per pair."""
    x = x - x.mean(1, keepdim=True)
    y = y - y.mean(1, keepdim=True)
    x = x / torch.linalg.matrix_norm(x, keepdim=True)
    y = y / torch.linalg.matrix_norm(y, keepdim=True)
    return 1 - torch.linalg.matrix_norm(x.mT @ y, ord="nuc")


def u_centre(gram: Tensor) -> Tensor:
    n = gram.shape[-1]
    eye = torch.eye(n, dtype=torch.bool)
    gram = gram.masked_fill(eye, 0)
    means = gram.sum(-1) / (n - 2)
    means = means - means.sum(-1, keepdim=True) / (2 * (n - 1))
    return (gram - means.unsqueeze(-1) - means.unsqueeze(-2)).masked_fill(eye, 0)


def loop_cka(x: Tensor, y: Tensor) -> Tensor:
    """1 - debiased linear CKA from U-centred Grams of both models, recomputed per pair."""
    k, l = u_centre(x @ x.mT), u_centre(y @ y.mT)
    return 1 - (k * l).sum((-2, -1)) / (torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l))


def svd_reduce(x: Tensor, threshold: float = 0.99) -> Tensor:
    """SVD of the uncentred view; keep the top k directions (cumulative singular-value share <= threshold)."""
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = max(1, int((s.cumsum(0) / s.sum() <= threshold).sum()))
    return x @ vh[:k].T


def loop_svcca(x: Tensor, y: Tensor) -> Tensor:
    """1 - sum(rho) / min(k_x, k_y): reduce, centre, thin SVD for orthonormal bases, svdvals of Q_x^T Q_y."""
    distances = []
    for xl, yl in zip(x, y):
        rx, ry = svd_reduce(xl), svd_reduce(yl)
        qx = torch.linalg.svd(rx - rx.mean(0), full_matrices=False)[0]
        qy = torch.linalg.svd(ry - ry.mean(0), full_matrices=False)[0]
        rho = torch.linalg.svdvals(qx.T @ qy)
        distances.append(1 - rho.sum() / min(rx.shape[1], ry.shape[1]))
    return torch.stack(distances)


LOOP = {"svcca": loop_svcca, "op": loop_op, "cka": loop_cka}


def loop_pair_matrix(hidden: Tensor, measure: str) -> Tensor:
    """[L, M, M] by computing every pair i < j on its own (float64)."""
    models = hidden.shape[0]
    out = torch.zeros(hidden.shape[1], models, models, dtype=torch.float64)
    for i in range(models):
        x = hidden[i].double()
        for j in range(i + 1, models):
            out[:, i, j] = out[:, j, i] = LOOP[measure](x, hidden[j].double())
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timed(fn: Callable[[], Tensor]) -> tuple[Tensor, float, float]:
    """Result, wall-clock seconds and CPU seconds of this process (all threads; robust to other processes)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-layers", type=int, default=1, help="top layers the per-pair loop runs on")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(SEED)
    hidden = torch.randn(MODELS, LAYERS, EXAMPLES, DIMS, generator=generator)
    print(f"hidden [M, L, N, D] = {list(hidden.shape)} float32 ({hidden.numel() * 4 / 2**30:.2f} GiB), seed {SEED}")
    wait_policy = os.environ["OMP_WAIT_POLICY"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={wait_policy}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    layers = slice(LAYERS - args.loop_layers, LAYERS)
    scale = LAYERS / args.loop_layers
    print(f"batched: all {LAYERS} layers; loop: top {args.loop_layers} layer(s), {MODELS * (MODELS - 1) // 2} pairs, "
          f"times scaled by {scale:g}; each measure's two runs back to back\n")

    rows, worst = {}, {}
    for measure in REPRESENTATION_MEASURES:
        batched, batched_wall, batched_cpu = timed(partial(pairwise_representation_distances, hidden, measure))
        looped, loop_wall, loop_cpu = timed(partial(loop_pair_matrix, hidden[:, layers], measure))
        rows[measure] = (batched_wall, loop_wall * scale, batched_cpu, loop_cpu * scale)
        worst[measure] = float((looped - batched[layers]).abs().max())
        print(f"{measure:5s} batched {batched_wall:6.1f} s wall {batched_cpu:6.1f} s CPU | loop (scaled) "
              f"{loop_wall * scale:7.1f} s wall {loop_cpu * scale:7.1f} s CPU | max |diff| {worst[measure]:.1e}",
              flush=True)
    rows["total"] = tuple(sum(row[col] for row in rows.values()) for col in range(4))

    print(f"\n{'measure':8s} {'batched s':>10s} {'loop s':>10s} {'speed-up':>9s}   {'batched CPU s':>13s} "
          f"{'loop CPU s':>11s} {'speed-up':>9s}")
    for name, (b_wall, l_wall, b_cpu, l_cpu) in rows.items():
        print(f"{name:8s} {b_wall:10.1f} {l_wall:10.1f} {l_wall / b_wall:8.1f}x   {b_cpu:13.1f} {l_cpu:11.1f} "
              f"{l_cpu / b_cpu:8.1f}x")
    print(f"\npeak RSS {peak_rss_gb():.2f} GiB (whole run, the {hidden.numel() * 4 / 2**30:.2f} GiB input included); "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    agree = all(value <= TOLERANCE for value in worst.values())
    print(f"agreement to {TOLERANCE:g} (max |diff| over the looped layer(s), all pairs): {'yes' if agree else 'NO'}")
    if not agree:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
