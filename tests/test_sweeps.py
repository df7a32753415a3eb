"""Sweeps: stable folders, resuming after a SIGKILL, launchers, the paper's grid, write faults."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.config import REPO, compose_train
from hydra import compose, initialize_config_dir

from instability.records import find_records, read_record
from instability.sweeper import grid_jobs
from instability.train import run

SWEEP = ["train.py", "-m", "task=rte", "model=tiny-bert", "logger=none", "data.train_size=32", "trainer.max_epochs=1",
         "trainer.enable_progress_bar=false"]


def sweep(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, *SWEEP, f"hydra.sweep.dir={tmp_path}", *extra]


def job_dir(root: Path, seed: int) -> Path:
    return root / "rte" / "tiny-bert" / "none" / "lr2e-05-n32-ep1-best" / f"seed{seed}"


def test_paper_grid_composes_to_480_jobs():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=paper"], return_hydra_config=True)
        sweeper = cfg.hydra.sweeper
        jobs = grid_jobs(sweeper.params, sweeper.grids, [])
        assert len(jobs) == 480 and len({tuple(job) for job in jobs}) == 480
        settings = {}
        for job in jobs:
            key = tuple(o for o in job if not o.startswith("seed="))
            settings[key] = settings.get(key, 0) + 1
        assert sorted(settings.values()) == [10] * 24 + [20] * 12  # per model-task: 4 IMMs x 10, standard and failed x 20
        failed = next(job for job in jobs if "measure_checkpoint=final" in job and "model=roberta-large" in job)
        job_cfg = compose("train", overrides=["experiment=paper", *failed])
        assert job_cfg.module.lr == pytest.approx(3e-5) and job_cfg.measure_checkpoint == "final"
        bert = compose("train", overrides=["experiment=paper", "model=bert-large", "module.lr=${model.failed_lr}"])
        assert bert.module.lr == pytest.approx(5e-5) and bert.trainer.precision == "bf16-mixed"
        mixout = compose("train", overrides=["experiment=paper", *next(job for job in jobs if "imm=mixout" in job)])
        assert mixout.imm._target_.endswith("Mixout") and mixout.imm.p == 0.1


def test_failed_runs_experiment_uses_the_family_lr_and_final_checkpoint():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=failed_runs", "model=roberta-base"], return_hydra_config=True)
    assert cfg.module.lr == pytest.approx(3e-5) and cfg.measure_checkpoint == "final"
    assert cfg.hydra.sweeper.params.seed == "range(20)" and cfg.hydra.sweep.dir == "multirun/failed_runs"


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


def test_rerun_with_another_configuration_is_refused(tmp_path):
    run(compose_train(tmp_path))
    with pytest.raises(RuntimeError, match=r"different configuration \(differs in: module\.lr\)"):
        run(compose_train(tmp_path, "module.lr=1e-4"))


def test_rerun_with_data_elsewhere_or_display_options_resumes(tmp_path):
    """Where GLUE lies (the same folder spelt another way) and the progress bar are not part of the setting."""
    from helpers.config import GLUE_DIR

    first = run(compose_train(tmp_path))
    record = read_record(tmp_path)
    other_spelling = f"data.glue_dir={GLUE_DIR}/../{GLUE_DIR.name}"
    assert run(compose_train(tmp_path, other_spelling, "trainer.enable_progress_bar=true")) == first
    assert read_record(tmp_path).meta == record.meta  # skipped: the record is untouched


def test_full_disk_gives_a_clear_error_and_keeps_the_earlier_record(tmp_path, monkeypatch):
    import instability.records as records

    run(compose_train(tmp_path))
    before = (tmp_path / "record" / "record.json").read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records, "save_file", full)
    monkeypatch.setattr("instability.train.finished_record", lambda job_dir, cfg: None)  # force a rerun
    with pytest.raises(OSError, match=f"{tmp_path}.*No space left"):
        run(compose_train(tmp_path))
    assert (tmp_path / "record" / "record.json").read_text() == before and read_record(tmp_path).finished
    assert not list(tmp_path.glob(".record-*")), "the partial write was cleaned up"


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(tmp_path):
    command = [sys.executable, "train.py", "model=tiny-bert", "logger=none", "data.train_size=64", "trainer.max_epochs=1",
               "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
               "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    record = read_record(tmp_path)
    assert record.finished and record.hidden("best").shape == (2, 139, 32)


def test_grid_union_sweeper_runs_each_grid(tmp_path):
    command = [sys.executable, "train.py", "experiment=cpu_study", "seed=0", "model=tiny-bert", "logger=none",
               "data.train_size=32", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
               f"hydra.sweep.dir={tmp_path}"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    records = [read_record(p) for p in find_records([tmp_path])]
    settings = sorted((r.setting["imm"]["name"], r.setting["lr"], r.meta["measure_checkpoint"]) for r in records)
    assert settings == [("llrd", 3e-4, "best"), ("mixout", 3e-4, "best"), ("none", 3e-4, "best"),
                        ("none", 1e-3, "final"), ("reinit", 3e-4, "best"), ("wd_pre", 3e-4, "best")]
    assert next(r for r in records if r.setting["imm"]["name"] == "reinit").setting["imm"]["num_layers"] == 2


def test_analysis_runs_when_a_multirun_ends(tmp_path):
    subprocess.run(sweep(tmp_path, "seed=range(2)", "hydra/callbacks=analyze",
                         "hydra.callbacks.analyze_sweep.overrides=['bootstrap.replicates=20','failed_runs.permutations=20']"),
                   cwd=REPO, check=True, capture_output=True)
    summary = (tmp_path / "analysis" / "summary.md").read_text()
    assert "rte-tiny-bert-none-lr2e-05-n32" in summary and (tmp_path / "analysis" / "measures.csv").is_file()
