"""Sweeps: stable folders, resuming after a SIGKILL, launchers, the paper's grid, write faults."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.config import REPO, compose_train

from instability.records import find_records, read_record
from instability.setting import setting_dir, setting_of
from instability.train import run

SWEEP = ["train.py", "-m", "task=rte", "model=tiny-bert", "logger=none", "data.train_size=32", "trainer.max_epochs=1",
         "trainer.enable_progress_bar=false"]


def sweep(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, *SWEEP, f"hydra.sweep.dir={tmp_path}", *extra]


def job_dir(root: Path, seed: int, *overrides: str) -> Path:
    """Where the sweep puts a job: named by its whole setting (instability/setting.py)."""
    return root / setting_dir(setting_of(compose_train(root, *overrides))) / f"seed{seed}"


def test_killed_sweep_resumes_skipping_finished_jobs(tmp_path):
    process = subprocess.Popen(sweep(tmp_path, "seed=range(3)"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not ((job_dir(tmp_path, 0) / "record").exists() and job_dir(tmp_path, 1).exists()):
        assert process.poll() is None and time.time() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [read_record(p).seed for p in find_records([tmp_path])] == [0], "the killed job left no valid record"
    first = read_record(job_dir(tmp_path, 0)).meta["created"]
    result = subprocess.run(sweep(tmp_path, "seed=range(3)"), cwd=REPO, capture_output=True, text=True, check=True)
    assert "skipping" in result.stdout + result.stderr
    records = {read_record(p).seed: read_record(p) for p in find_records([tmp_path])}
    assert sorted(records) == [0, 1, 2]
    assert records[0].meta["created"] == first, "the finished job was not retrained"


def test_joblib_launcher_gives_the_same_records(tmp_path):
    basic, parallel = tmp_path / "basic", tmp_path / "joblib"
    subprocess.run(sweep(basic, "seed=range(2)"), cwd=REPO, check=True, capture_output=True)
    subprocess.run(sweep(parallel, "seed=range(2)", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
                   cwd=REPO, check=True, capture_output=True)
    for seed in (0, 1):
        a, b = read_record(job_dir(basic, seed)), read_record(job_dir(parallel, seed))
        torch.testing.assert_close(a.logits("best"), b.logits("best"), rtol=1e-4, atol=1e-5)
        assert torch.equal(a.logits("best").argmax(-1), b.logits("best").argmax(-1))


def test_submitit_local_launcher_runs_a_job(tmp_path):
    subprocess.run(sweep(tmp_path, "seed=5", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"),
                   cwd=REPO, check=True, capture_output=True)
    assert read_record(job_dir(tmp_path, 5)).finished


def test_a_folder_holding_another_run_is_refused_and_left_as_it_is(tmp_path):
    run(compose_train(tmp_path))
    before = (tmp_path / "record" / "record.json").read_text()
    with pytest.raises(RuntimeError, match=r"holds the record of another run \(differs in: module\.lr\)"):
        run(compose_train(tmp_path, "module.lr=1e-4"))
    assert (tmp_path / "record" / "record.json").read_text() == before


def test_rerun_with_data_elsewhere_or_display_options_resumes(tmp_path):
    """Where GLUE lies (the same folder spelt another way) and the progress bar are not part of the setting."""
    from helpers.config import GLUE_DIR

    first = run(compose_train(tmp_path))
    record = read_record(tmp_path)
    other_spelling = f"data.glue_dir={GLUE_DIR}/../{GLUE_DIR.name}"
    assert run(compose_train(tmp_path, other_spelling, "trainer.enable_progress_bar=true")) == first
    assert read_record(tmp_path).meta == record.meta  # skipped: the record is untouched


DDP = ["model=tiny-bert", "logger=none", "data.train_size=64", "trainer.max_epochs=1", "trainer=ddp",
       "trainer.accelerator=cpu", "trainer.devices=2", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes_keeps_the_global_batch(tmp_path):
    """Two gloo processes share each batch of 16 (8 each): 64 examples take 4 steps, as on one device."""
    command = [sys.executable, "train.py", *DDP, f"hydra.run.dir={tmp_path}"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    record = read_record(tmp_path)
    assert record.finished and record.hidden("best").shape == (2, 139, 32)
    assert record.meta["runtime"]["world_size"] == 2 and record.meta["runtime"]["per_device_batch_size"] == 8
    assert record.meta["steps"] == {"done": 4, "planned": 4, "best": 4}


def test_ddp_inside_a_local_multirun_is_refused(tmp_path):
    result = subprocess.run(sweep(tmp_path, "seed=0", *DDP), cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "cannot run inside a local multirun" in result.stderr
    assert not find_records([tmp_path])


@pytest.mark.slow
def test_a_batch_that_does_not_divide_over_the_processes_is_refused(tmp_path):
    command = [sys.executable, "train.py", *DDP, "data.batch_size=15", f"hydra.run.dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "data.batch_size=15" in result.stderr


def test_sigterm_exits_non_zero_without_a_record_and_a_rerun_resumes(tmp_path):
    """A scheduler's time limit (SIGTERM) mid-training: exit status 143, no record, later seeds not started as if
    all were well; the same command then trains every seed."""
    command = sweep(tmp_path, "seed=0,1", "data.train_size=480")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while "Loading `train_dataloader`" not in _log(tmp_path):  # fit has begun: Lightning's SIGTERM handler is on
        assert process.poll() is None and time.time() < deadline, "the sweep ended before it could be stopped"
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert find_records([tmp_path]) == [] and "no record written" in _log(tmp_path)
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    assert sorted(read_record(p).seed for p in find_records([tmp_path])) == [0, 1]


def _log(root: Path) -> str:
    return "".join(path.read_text() for path in root.rglob("train.log"))


def test_analysis_runs_when_a_multirun_ends(tmp_path):
    subprocess.run(sweep(tmp_path, "seed=range(2)", "hydra/callbacks=analyze",
                         "hydra.callbacks.analyze_sweep.overrides=['bootstrap.replicates=20','failed_runs.permutations=20']"),
                   cwd=REPO, check=True, capture_output=True)
    summary = (tmp_path / "analysis" / "summary.md").read_text()
    assert "rte-tiny-bert-none-lr2e-05-n32" in summary and (tmp_path / "analysis" / "measures.csv").is_file()


@pytest.mark.parametrize("launcher", [[], pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                                         marks=pytest.mark.slow)], ids=["basic", "joblib"])
def test_a_sweep_over_any_key_gives_every_job_its_own_folder_and_record(tmp_path, launcher):
    """Keys outside the readable label (dropout, Re-init depth) still make settings of their own: no job replaces
    another's record, and a rerun skips them all."""
    sweeps = {"dropout": ["seed=0", "module.dropout=0.0,0.1"], "reinit": ["seed=0", "imm=reinit", "imm.num_layers=1,2"]}
    for name, overrides in sweeps.items():
        subprocess.run(sweep(tmp_path / name, *overrides, *launcher), cwd=REPO, check=True, capture_output=True)
    expected = {job_dir(tmp_path / "dropout", 0, f"module.dropout={p}") for p in ("0.0", "0.1")}
    expected |= {job_dir(tmp_path / "reinit", 0, "imm=reinit", f"imm.num_layers={k}") for k in (1, 2)}
    records = [read_record(p) for p in find_records([tmp_path])]
    assert {r.path.parent for r in records} == expected and len({r.setting_id for r in records}) == 4
    assert sorted(r.setting["module.dropout"] for r in records if "dropout" in r.name) == [0.0, 0.1]
    assert sorted(r.setting["imm.num_layers"] for r in records if "reinit" in r.name) == [1, 2]
    created = {r.path: r.meta["created"] for r in records}
    rerun = subprocess.run(sweep(tmp_path / "dropout", *sweeps["dropout"], *launcher), cwd=REPO, check=True,
                           capture_output=True, text=True)
    assert (rerun.stdout + rerun.stderr).count("skipping") == 2
    assert all(read_record(path).meta["created"] == stamp for path, stamp in created.items())
