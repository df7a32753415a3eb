"""Time `analyze.py` on the paper's largest setting and report its peak memory.

Synthesises one setting of 20 run records (24 layers, 522 test examples, 1024 dims: CoLA's test half with a
large model) in a temporary folder, runs `python analyze.py` on it in a subprocess, and prints the time of each
phase (from the analysis manifest), the wall time and the subprocess's peak RSS.

    python benchmarks/analyze_speed.py                     # the measures part only (validity analyses off)
    python benchmarks/analyze_speed.py --validity          # also layer trend, failed runs, sub-sampling, bootstrap
    python benchmarks/analyze_speed.py --validity checkpoint=final   # odd seeds failed there: failed-run analysis
    python benchmarks/analyze_speed.py --runs 6 --layers 4 --examples 139 --dim 64   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from instability.records import Halves, Outputs, build_record, write_record

REPO = Path(__file__).resolve().parents[1]

MEASURES_ONLY = ("layer_trend=false", "failed_runs.enabled=false", "subsampling.enabled=false",
                 "bootstrap.enabled=false", "benchmark.enabled=false")


SETTING = {"task.name": "cola", "model.name": "synthetic-large", "imm.name": "none", "module.lr": 2e-5,
           "data.train_size": None, "trainer.max_epochs": 5, "data.batch_size": 16, "data.split_seed": 42,
           "measure_checkpoint": "best", "trainer.precision": "32-true"}


def synthesise(root: Path, runs: int, layers: int, examples: int, dim: int) -> None:
    """`runs` records of one setting, written with the project's record builder: shared low-rank states plus run
    noise growing with depth (twice as large in odd seeds), predictions flipped on a run-specific block of
    examples; odd seeds predict the majority class at the final checkpoint, so they failed there."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(layers, examples, 32, generator=generator) @ torch.randn(layers, 32, dim, generator=generator)
    labels = torch.arange(examples) % 2
    halves = Halves(torch.arange(examples), labels, torch.arange(8), torch.arange(8) % 2)
    scale = torch.linspace(0.05, 1.0, layers).view(-1, 1, 1)
    for seed in range(runs):
        hidden = basis + scale * torch.randn(layers, examples, dim, generator=generator) * (2.0 if seed % 2 else 1.0)
        predictions = labels.clone()
        block = slice(seed * 5 % examples, seed * 5 % examples + 20)
        predictions[block] = 1 - predictions[block]
        logits = torch.nn.functional.one_hot(predictions, 2) + 0.1 * torch.randn(examples, 2, generator=generator)
        final = torch.nn.functional.one_hot(torch.zeros_like(labels), 2).float() if seed % 2 else logits
        outputs = {"best": Outputs(logits, hidden, torch.zeros(8, 2)),
                   "final": Outputs(final, hidden, torch.zeros(8, 2))}
        meta, tensors = build_record(seed=seed, setting=SETTING, metrics=("mcc",), halves=halves, outputs=outputs)
        write_record(root / str(seed), meta, tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--examples", type=int, default=522)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--validity", action="store_true", help="also run the validity analyses (config defaults)")
    parser.add_argument("overrides", nargs="*", help="extra analyze.py overrides, e.g. subsampling.draws=2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="analyze-speed-") as folder:
        sweep, out = Path(folder) / "sweep", Path(folder) / "analysis"
        start = time.perf_counter()
        synthesise(sweep, args.runs, args.layers, args.examples, args.dim)
        print(f"synthesised {args.runs} records [{args.layers} x {args.examples} x {args.dim}] "
              f"in {time.perf_counter() - start:.1f} s")
        command = [sys.executable, str(REPO / "analyze.py"), f"sweep_dir={sweep}", f"out_dir={out}",
                   *(() if args.validity else MEASURES_ONLY), *args.overrides]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True,
                              text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"analyze.py failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        timings = json.loads((out / "analysis.json").read_text())["timings_s"]
    print(f"analyze.py wall time {wall:.1f} s (including interpreter start and imports); peak RSS {peak_gib:.2f} GiB")
    for phase, seconds in timings.items():
        print(f"  {phase:<12} {seconds:8.1f} s")
    print(f"  measures part (load + measures): {timings.get('load', 0) + timings.get('measures', 0):.1f} s")


if __name__ == "__main__":
    main()
