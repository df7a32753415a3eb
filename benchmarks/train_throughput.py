"""Training throughput: this project's Lightning loop against a plain Hugging Face `Trainer` on the same work.

Same model, data slice, batch size, maximum length, optimiser, schedule and number of steps, alternated in one
process for several repetitions. Two baselines: the Trainer as `run_glue.py` runs it by default (every example
padded to the maximum length, its `pad_to_max_length=True`), and the Trainer given dynamic padding as well (the
like-for-like loop). Tokenisation is outside the timing for all three. Prints examples per second, the ratios
(ours / Trainer), peak memory, and the capture overhead (first-token states of every layer on the test half,
plus the validation half's logits, for the best and the final weights) as a fraction of a full 5-epoch run.
Both loops train in the same precision (`--precision`; the HF Trainer's bf16/fp16 flags follow it) and, on a GPU,
with the same TF32 setting (the config's `tf32`). `--json PATH` also writes the medians and ratios.

    python benchmarks/train_throughput.py                      # CPU, offline MiniLM, RTE
    python benchmarks/train_throughput.py --trainer gpu --steps 200 --examples 3200
    python benchmarks/train_throughput.py --trainer gpu --precision bf16-mixed --no-capture --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GLUE_DIR", str(REPO.parent / "shared" / "data" / "glue"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments  # noqa: E402

from instability.capture import capture_outputs  # noqa: E402
from instability.train import build, make_trainer  # noqa: E402


def on_gpu(cfg) -> bool:
    """Whether the configured trainer runs on the GPU (then the HF Trainer does too)."""
    return torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"


class PeakMemory:
    """Peak GPU memory allocated (CUDA) or peak resident set size sampled every 20 ms (CPU), in GiB."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    @property
    def gib(self) -> float:
        return self.peak / 2**30


def compose_cfg(args: argparse.Namespace, out: Path):
    overrides = [
        f"model={args.model}", f"task={args.task}", f"trainer={args.trainer}", "logger=none",
        f"data.train_size={args.examples}", f"data.max_length={args.max_length}", f"data.batch_size={args.batch_size}",
        f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1", "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false", f"module.compile={args.compile}", f"paths.output_dir={out}",
    ]
    if args.precision:
        overrides.append(f"trainer.precision={args.precision}")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def timed(fit: Callable[[], object], cuda: bool) -> tuple[float, float]:
    """Wall seconds of `fit()` (the GPU synchronised at the end) and its peak memory in GiB."""
    with PeakMemory(cuda) as memory:
        start = time.perf_counter()
        fit()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, memory.gib


def time_ours(cfg, out: Path) -> tuple[float, float]:
    datamodule, module, _ = build(cfg)
    trainer = make_trainer(cfg, [], None, out)
    return timed(lambda: trainer.fit(module, datamodule=datamodule), on_gpu(cfg))


BASELINES = {"run_glue.py (padded to max length)": "max_length", "+ dynamic padding": "longest"}


def time_hf_trainer(cfg, out: Path, padding: str) -> tuple[float, float]:
    """The Trainer on the same seeded model and tokenised data; batches padded to `padding` (HF's names)."""
    datamodule, module, _ = build(cfg)
    cuda = on_gpu(cfg)
    precision = str(cfg.trainer.precision)
    arguments = TrainingArguments(
        output_dir=str(out / "hf"),
        per_device_train_batch_size=cfg.data.batch_size,
        max_steps=cfg.trainer.max_steps,
        learning_rate=cfg.module.lr,
        weight_decay=cfg.module.weight_decay,
        warmup_steps=cfg.module.warmup_ratio,  # a value below 1 is a fraction of the steps
        lr_scheduler_type="linear",
        max_grad_norm=cfg.trainer.gradient_clip_val,
        bf16=precision.startswith("bf16"),
        fp16=precision.startswith("16"),
        tf32=bool(cfg.get("tf32", False)) if cuda else None,
        use_cpu=not cuda,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=cfg.trainer.log_every_n_steps,
        report_to=[],
        disable_tqdm=True,
        dataloader_pin_memory=cuda,
        seed=int(cfg.seed),
    )
    trainer = Trainer(
        model=module.model,
        args=arguments,
        train_dataset=datamodule.encoded["train"],
        data_collator=DataCollatorWithPadding(datamodule.tokenizer, padding=padding, max_length=cfg.data.max_length),
    )
    return timed(trainer.train, cuda)


def time_capture(cfg) -> tuple[float, int]:
    """Seconds to capture both checkpoints' outputs (as OutputCapture does), and the training set's size."""
    full = cfg.copy()
    full.data.train_size = None
    datamodule, module, _ = build(full)
    device = torch.device("cuda" if on_gpu(cfg) else "cpu")
    model = module.model.to(device)

    def prepare(batch):
        return module.model_inputs({k: v.to(device, non_blocking=True) for k, v in batch.items()})

    start = time.perf_counter()
    for _ in ("final", "best"):
        capture_outputs(model, datamodule.test_dataloader(), prepare)
        capture_outputs(model, datamodule.val_dataloader(), prepare, with_hidden=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, len(datamodule.encoded["train"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--task", default="rte")
    parser.add_argument("--trainer", default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--examples", type=int, default=320, help="training examples in the slice")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", help="trainer.precision of both loops (default: the trainer config's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our training forward pass")
    parser.add_argument("--no-capture", action="store_true", help="skip the capture-overhead estimate")
    parser.add_argument("--json", type=Path, help="also write the medians and ratios to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cfg = compose_cfg(args, out)
        examples = args.steps * args.batch_size
        device = "cuda " + torch.cuda.get_device_name() if on_gpu(cfg) else "cpu"
        print(f"device: {device}, threads {torch.get_num_threads()}; {args.model} on {args.task}, {args.steps} steps "
              f"of {args.batch_size} (max length {args.max_length}), precision {cfg.trainer.precision}, "
              f"{args.repeats} alternating repetitions")
        time_ours(cfg, out)  # warm-up: tokeniser cache, kernels, allocator
        loops = {"ours": lambda: time_ours(cfg, out)}
        loops |= {f"HF Trainer, {name}": partial(time_hf_trainer, cfg, out, padding) for name, padding in BASELINES.items()}
        speed = {name: [] for name in loops}
        memory = dict.fromkeys(loops, 0.0)
        for repeat in range(args.repeats):
            for name, loop in loops.items():
                seconds, peak = loop()
                speed[name].append(examples / seconds)
                memory[name] = max(memory[name], peak)
            print(f"  repetition {repeat}: " + ", ".join(f"{name} {values[-1]:.1f}" for name, values in speed.items())
                  + " ex/s")
        kind = "GPU allocated" if on_gpu(cfg) else "process RSS"
        medians = {name: statistics.median(values) for name, values in speed.items()}
        for name, median in medians.items():
            print(f"{name:<50} {median:8.1f} examples/s (median), peak {kind} {memory[name]:.2f} GiB")
        for name in list(loops)[1:]:
            ratios = [a / b for a, b in zip(speed["ours"], speed[name])]
            print(f"ratio ours / {name}: {medians['ours'] / medians[name]:.3f} "
                  f"(medians; per repetition {', '.join(f'{r:.2f}' for r in ratios)})")
        if args.json:
            args.json.write_text(json.dumps({
                "device": device, "model": args.model, "task": args.task, "precision": str(cfg.trainer.precision),
                "steps": args.steps, "batch_size": args.batch_size, "repeats": args.repeats,
                "examples_per_s": medians, "peak_gib": memory,
                "ratios": {name: medians["ours"] / medians[name] for name in list(loops)[1:]},
            }, indent=2))
        if args.no_capture:
            return

        capture_s, train_size = time_capture(cfg)
        step_s = args.batch_size / medians["ours"]
        run_s = 5 * -(-train_size // args.batch_size) * step_s
        print(f"capture (best + final, test half with all layers' first-token states, validation half logits): "
              f"{capture_s:.2f} s; estimated 5-epoch run on all {train_size} training examples: {run_s:.0f} s; "
              f"capture overhead {100 * capture_s / (run_s + capture_s):.2f}% of the run")


if __name__ == "__main__":
    main()
