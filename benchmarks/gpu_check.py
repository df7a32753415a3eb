"""GPU acceptance check (issue #12): one table, in under 8 minutes on one CUDA GPU.

    fit fp32, fit bf16   a short MiniLM fit on an MRPC slice, each `python train.py ...` in a subprocess with Hydra
                         overrides; its record must read back valid (`instability.records.read_record`) and say
                         the precision it trained in
    determinism fp32     the same fp32 run a second time (in a second process, alongside the first): identical test
                         logits of the best and the final checkpoint, with deterministic algorithms
                         (`trainer.deterministic=true`, CUBLAS_WORKSPACE_CONFIG=:4096:8)
    measures svcca/op/cka  the representation measures on the GPU against the CPU at the paper's largest shape
                         (20 models x 522 examples x 1024 dims, `--layers` layers): max |difference| <= 1e-8, and
                         the speed-up over the CPU
    throughput bf16/fp32   this project's training loop against the Hugging Face Trainer on the same GPU and
                         precision (benchmarks/train_throughput.py, like-for-like dynamic padding; also the
                         run_glue.py default of padding to the maximum length); bf16's target is >= 1.2x
    total time           the whole check, target under 8 minutes

Rows that need a GPU are skipped with `--device cpu` (their code paths still run, at `--quick` sizes in the
test). Progress goes to stderr, the table to stdout; the exit status is 1 when a row failed.

    GLUE_DIR=/path/to/glue python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --device cpu --quick --model tiny-bert      # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GLUE_DIR", str(REPO.parent / "shared" / "data" / "glue"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode, for every subprocess

import torch  # noqa: E402

from instability.measures.functional import (  # noqa: E402
    REPRESENTATION_MEASURES,
    pairwise_representation_distances,
)
from instability.records import RunRecord, read_record  # noqa: E402

TOLERANCE = 1e-8        # GPU against CPU, float64 measures
THROUGHPUT_TARGET = 1.2  # ours / HF Trainer (dynamic padding), bf16
TIME_LIMIT_S = 480
LIKE_FOR_LIKE = "HF Trainer, + dynamic padding"
RUN_GLUE = "HF Trainer, run_glue.py (padded to max length)"


@dataclass
class Row:
    check: str
    status: str  # PASS, FAIL, SKIP or INFO
    result: str
    seconds: float = 0.0


@dataclass(frozen=True)
class Sizes:
    train_size: int
    models: int
    examples: int
    dims: int
    steps: int
    throughput_examples: int
    repeats: int


FULL = Sizes(train_size=512, models=20, examples=522, dims=1024, steps=150, throughput_examples=2400, repeats=3)
QUICK = Sizes(train_size=32, models=4, examples=40, dims=16, steps=2, throughput_examples=32, repeats=1)


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def run(command: list[str], timeout: float) -> float:
    """Run a subprocess in the repository; its wall seconds. A failure raises with the end of its output."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode:
        tail = (result.stdout + result.stderr).strip().splitlines()[-6:]
        raise RuntimeError(f"exit {result.returncode}: " + " | ".join(tail))
    return time.perf_counter() - start


# --- (a), (b): training through train.py ----------------------------------------------------------------------


def train(args: argparse.Namespace, sizes: Sizes, job_dir: Path, precision: str) -> tuple[RunRecord, float]:
    """One short fit as a user runs it; the record read back (validated) and the wall seconds."""
    trainer = "trainer=gpu" if args.device == "cuda" else "trainer=cpu"
    command = [sys.executable, "train.py", f"model={args.model}", f"task={args.task}",
               f"data.train_size={sizes.train_size}", "trainer.max_epochs=1", "logger=none", trainer,
               f"trainer.precision={precision}", "trainer.deterministic=true", "trainer.enable_progress_bar=false",
               f"seed={args.seed}", f"hydra.run.dir={job_dir}"]
    seconds = run(command, timeout=300)
    record = read_record(job_dir)
    recorded = record.meta["config"]["trainer"]["precision"]
    if not record.finished or str(recorded) != precision:
        raise RuntimeError(f"record status {record.status}, precision {recorded} (asked for {precision})")
    return record, seconds


def fit_result(record: RunRecord) -> str:
    metric = record.meta["metric"]
    return (f"record valid; test {metric} best {record.score('best'):.3f}, final {record.score('final'):.3f} "
            f"({record.logits('final').shape[0]} test examples)")


def compare_logits(first: RunRecord, second: RunRecord) -> Row:
    diffs = {ckpt: (first.logits(ckpt) - second.logits(ckpt)).abs().max().item() for ckpt in ("best", "final")}
    same = all(torch.equal(first.logits(ckpt), second.logits(ckpt)) for ckpt in diffs)
    detail = ", ".join(f"{ckpt} max |diff| {d:.1e}" for ckpt, d in diffs.items())
    return Row("", "PASS" if same else "FAIL", ("identical logits: " if same else "logits differ: ") + detail)


# --- (c): representation measures, GPU against CPU ------------------------------------------------------------


def representations(sizes: Sizes, layers: int, seed: int) -> torch.Tensor:
    """Seeded float32 hidden states [M, L, N, D]: a shared low-rank signal plus model-specific noise of growing
    size, so that the pair distances spread out as real ones do."""
    generator = torch.Generator().manual_seed(seed)
    m, n, d = sizes.models, sizes.examples, sizes.dims
    signal = torch.randn(layers, n, 32, generator=generator) @ torch.randn(layers, 32, d, generator=generator)
    scale = torch.linspace(0.5, 1.5, m).view(m, 1, 1, 1)
    return signal + scale * torch.randn(m, layers, n, d, generator=generator)


def timed(function: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def measure_rows(args: argparse.Namespace, sizes: Sizes) -> list[Row]:
    hidden = representations(sizes, args.layers, args.seed)
    shape = f"{sizes.models}x{sizes.examples}x{sizes.dims}, {args.layers} layer(s)"
    device = torch.device(args.device)
    on_device = hidden.to(device)
    if device.type == "cuda":
        for measure in REPRESENTATION_MEASURES:  # warm-up: cuSOLVER/cuBLAS handles and workspaces
            pairwise_representation_distances(on_device[:3, :1], measure)
    rows = []
    for measure in REPRESENTATION_MEASURES:
        reference, cpu_s = timed(partial(pairwise_representation_distances, hidden, measure), torch.device("cpu"))
        if device.type != "cuda":
            rows.append(Row(f"measures {measure}", "SKIP", f"GPU only (CPU path ran: {shape})", cpu_s))
            continue
        result, gpu_s = timed(partial(pairwise_representation_distances, on_device, measure), device)
        diff = (result.cpu() - reference).abs().max().item()
        status = "PASS" if diff <= TOLERANCE else "FAIL"
        rows.append(Row(f"measures {measure}", status, f"{shape}: max |GPU - CPU| {diff:.1e} (<= {TOLERANCE:g}); "
                        f"CPU {cpu_s:.2f} s, GPU {gpu_s:.2f} s: {cpu_s / gpu_s:.1f}x", cpu_s + gpu_s))
    return rows


# --- (d): throughput against the Hugging Face Trainer ---------------------------------------------------------


def throughput_row(args: argparse.Namespace, sizes: Sizes, precision: str, out: Path, target: bool) -> Row:
    name = f"throughput {'bf16' if precision.startswith('bf16') else 'fp32'}"
    if args.device != "cuda" and precision.startswith("bf16"):
        return Row(name, "SKIP", "GPU only")
    report = out / f"throughput-{precision}.json"
    command = [sys.executable, "benchmarks/train_throughput.py", "--model", args.model, "--task", args.task,
               "--trainer", "gpu" if args.device == "cuda" else "cpu", "--precision", precision,
               "--steps", str(sizes.steps), "--examples", str(sizes.throughput_examples),
               "--repeats", str(sizes.repeats), "--no-capture", "--json", str(report)]
    seconds = run(command, timeout=400)
    result = json.loads(report.read_text())
    speed, ratios = result["examples_per_s"], result["ratios"]
    detail = (f"ours {speed['ours']:.0f} ex/s; HF Trainer {speed[LIKE_FOR_LIKE]:.0f} (dynamic padding: "
              f"{ratios[LIKE_FOR_LIKE]:.2f}x), {speed[RUN_GLUE]:.0f} (run_glue.py padding: {ratios[RUN_GLUE]:.2f}x)")
    if not target:
        return Row(name, "INFO", detail, seconds)
    if args.device != "cuda":
        return Row(name, "SKIP", f"GPU only (CPU path ran: {detail})", seconds)
    passed = ratios[LIKE_FOR_LIKE] >= THROUGHPUT_TARGET
    return Row(name, "PASS" if passed else "FAIL", f"{detail}; target >= {THROUGHPUT_TARGET}x", seconds)


# --- the table -------------------------------------------------------------------------------------------------


def guarded(name: str, check: Callable[[], list[Row]]) -> list[Row]:
    """The check's rows, or one FAIL row naming the error: the table always has every row."""
    log(f"{name} ...")
    start = time.perf_counter()
    try:
        return check()
    except Exception as error:  # noqa: BLE001 - report any failure in the table
        return [Row(name, "FAIL", f"{type(error).__name__}: {error}", time.perf_counter() - start)]


def table(rows: list[Row], header: str) -> str:
    width = max(len(row.check) for row in rows)
    lines = [header, f"{'check':<{width}}  status  {'seconds':>7}  result", "-" * (width + 40)]
    lines += [f"{row.check:<{width}}  {row.status:<6}  {row.seconds:7.1f}  {row.result}" for row in rows]
    return "\n".join(lines)


def checks(args: argparse.Namespace, sizes: Sizes, out: Path) -> list[Row]:
    def fit(label: str, run: tuple[RunRecord, float]) -> list[Row]:
        record, seconds = run
        return [Row(label, "PASS", fit_result(record), seconds)]

    def determinism(first: RunRecord, again: RunRecord, seconds: float) -> list[Row]:
        row = compare_logits(first, again)
        where = "" if args.device == "cuda" else " (on the CPU; the check is for the GPU)"
        return [Row("determinism fp32", row.status, row.result + where, seconds)]

    def bf16() -> list[Row]:
        if args.device != "cuda":
            return [Row("fit bf16", "SKIP", "GPU only")]
        return fit("fit bf16", train(args, sizes, out / "bf16", "bf16-mixed"))

    rows: list[Row] = []
    with ThreadPoolExecutor(max_workers=2) as pool:  # the same fp32 run twice, in two processes at once
        log("fit fp32 and its repetition ...")
        first, again = (pool.submit(train, args, sizes, out / name, "32-true") for name in ("fp32", "fp32-again"))
        rows += guarded("fit fp32", lambda: fit("fit fp32", first.result()))
        rows += guarded("determinism fp32", lambda: determinism(first.result()[0], *again.result()))
    rows += guarded("fit bf16", bf16)
    rows += guarded("measures", lambda: measure_rows(args, sizes))
    rows += guarded("throughput bf16", lambda: [throughput_row(args, sizes, "bf16-mixed", out, target=True)])
    rows += guarded("throughput fp32", lambda: [throughput_row(args, sizes, "32-true", out, target=False)])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every row's code path")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--task", default="mrpc")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=1, help="layers of the measure comparison")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; `--device cpu --quick` runs the CPU smoke test")
    sizes = QUICK if args.quick else FULL

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        rows = checks(args, sizes, Path(tmp))
    total = time.perf_counter() - start
    rows.append(Row("total time", "PASS" if total < TIME_LIMIT_S else "FAIL", f"target < {TIME_LIMIT_S} s", total))
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(table(rows, f"gpu_check on {device} (torch {torch.__version__}), {args.model} on {args.task}"
                      f"{', quick sizes' if args.quick else ''}"))
    return 1 if any(row.status == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
