"""End to end: train.py on a small slice of RTE (3 seeds, tiny BERT), then analyze.py, both as subprocesses,
and the outputs checked for content; plus analyze.py's command-line errors and its offline W&B run."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

from helpers.analysis import run_analysis
from helpers.records import planted_sweep

from instability.analysis.setting_measures import ALL, REPRESENTATION

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled"}
SETTING = "rte-tiny-bert-none-lr2e-05-n48-ep1"
RANGES = {"mean": (0, 1), "SD": (0, 0.5), "I_pwd": (0, 1), "I_kappa": (0, 1.5), "I_jsd": (0, math.log(2)),
          "SVCCA": (0, 1), "OP": (0, 1), "CKA": (0, 1.2)}  # 3 raters: kappa >= -1/2; debiased CKA can dip below 0


def analyze(*overrides, timeout=600):
    return subprocess.run([sys.executable, "analyze.py", *overrides], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_train_then_analyze_a_tiny_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    trained = subprocess.run(
        [sys.executable, "train.py", "-m", "seed=range(3)", "model=tiny-bert", "data.train_size=48",
         "trainer.max_epochs=1", "logger=none", f"hydra.sweep.dir={sweep}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    done = analyze(f"sweep_dir={sweep}", "bootstrap.replicates=100", "failed_runs.permutations=100",
                   "subsampling.draws=2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = sweep / "analysis"

    with open(out / "measures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["setting"] for row in rows} == {SETTING} and {row["runs"] for row in rows} == {"3"}
    layers = {label: sorted(int(row["layer"]) for row in rows if row["measure"] == label) for label in REPRESENTATION}
    assert all(found == [1, 2] for found in layers.values()), layers  # tiny-bert has 2 layers
    assert {row["measure"] for row in rows} == set(ALL)
    for row in rows:
        value, (low, high) = float(row["value"]), RANGES[row["measure"]]
        assert math.isfinite(value) and low - 1e-9 <= value <= high + 1e-9, row
        assert float(row["ci_low"]) <= float(row["ci_high"]), row

    with open(out / "scores.csv", newline="") as handle:
        assert sorted(int(row["seed"]) for row in csv.DictReader(handle)) == [0, 1, 2]
    with open(out / "skipped.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == []
    summary = (out / "summary.md").read_text()
    (table_row,) = [line for line in summary.splitlines() if line.startswith(f"| {SETTING} |")]
    i_pwd = next(float(row["value"]) for row in rows if row["measure"] == "I_pwd")
    assert f"{i_pwd:.4f}" in table_row and "| 3 | 0 | best | accuracy |" in table_row
    assert "textbook" in summary and "near-degenerate" in summary
    for figure in ("layers", "scores", "distance_matrix"):
        assert (out / "figures" / SETTING / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    assert "Instability per setting" in done.stdout and SETTING in done.stdout


def test_command_line_errors_are_clear(tmp_path):
    (tmp_path / "empty").mkdir()
    done = analyze(f"sweep_dir={tmp_path / 'empty'}", timeout=300)
    assert done.returncode == 1
    assert "analyze: error: no run records under" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_offline_wandb_run_is_written(tmp_path):
    planted_sweep(tmp_path / "sweep", runs=3)
    run_analysis(tmp_path / "sweep", tmp_path / "out", "wandb.mode=offline", "subsampling.enabled=false")
    (run_dir,) = (tmp_path / "out" / "wandb").glob("offline-run-*")
    assert list(run_dir.glob("run-*.wandb"))
