"""benchmarks/gpu_check.py: end to end on the CPU at quick sizes (every row, the GPU-only ones skipped), and its
failure handling."""

import importlib.util
import subprocess
import sys

import torch
from helpers.config import REPO

SPEC = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_check)


def parse(table: str) -> dict[str, tuple[str, str]]:
    """{check: (status, result)} of the printed table."""
    lines = table.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("check"))
    at = lines[header].index("status")
    rows = {}
    for line in lines[header + 2:]:
        status, _seconds, *result = line[at:].split(maxsplit=2)
        rows[line[:at].strip()] = (status, " ".join(result))
    return rows


def test_cpu_run_prints_every_row():
    command = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--model", "tiny-bert"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = parse(result.stdout)
    assert {check: status for check, (status, _) in rows.items()} == {
        "fit fp32": "PASS", "determinism fp32": "PASS", "fit bf16": "SKIP",
        "measures svcca": "SKIP", "measures op": "SKIP", "measures cka": "SKIP",
        "throughput bf16": "SKIP", "throughput fp32": "INFO", "total time": "PASS",
    }, result.stdout
    assert rows["fit fp32"][1].startswith("record valid") and "identical logits" in rows["determinism fp32"][1]
    assert "ex/s" in rows["throughput fp32"][1] and "CPU path ran" in rows["measures cka"][1]


class Logits:
    def __init__(self, logits: torch.Tensor) -> None:
        self._logits = logits

    def logits(self, checkpoint: str) -> torch.Tensor:
        return self._logits if checkpoint == "best" else self._logits + 1


def test_a_failing_check_is_a_fail_row_and_logits_must_match_exactly():
    def broken():
        raise RuntimeError("no record")

    (row,) = gpu_check.guarded("fit fp32", broken)
    assert (row.check, row.status) == ("fit fp32", "FAIL") and "no record" in row.result
    logits = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    assert gpu_check.compare_logits(Logits(logits), Logits(logits.clone())).status == "PASS"
    nudged = logits.clone()
    nudged[3, 1] = torch.nextafter(nudged[3, 1], torch.tensor(float("inf")))
    assert gpu_check.compare_logits(Logits(logits), Logits(nudged)).status == "FAIL"
    table = gpu_check.table([row, gpu_check.Row("total time", "PASS", "target < 480 s", 1.0)], "header")
    assert parse(table) == {"fit fp32": ("FAIL", row.result), "total time": ("PASS", "target < 480 s")}
