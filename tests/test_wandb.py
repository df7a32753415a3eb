"""W&B on a tiny offline sweep (2 settings x 2 seeds, then its analysis), read back from the runs' own
transaction logs: groups, tags, run ids, summaries, record artifacts and their use by the analysis, per-layer
series; the sync command; no network traffic offline; the report definition."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import wandb
from helpers.config import REPO
from helpers.records import base_hidden, base_labels, setting, write_run

from instability import tracking
from instability.records import find_records, read_record
from instability.setting import setting_name

TRAIN = ["task=rte", "model=tiny-bert", "logger=wandb", "data.train_size=16", "trainer.max_epochs=1",
         "trainer.enable_progress_bar=false", "seed=0,1", "module.lr=2e-5,3e-5"]
ANALYSIS = ["hydra/callbacks=analyze", ("hydra.callbacks.analyze_sweep.overrides=['bootstrap.enabled=false',"
                                       "'subsampling.enabled=false','failed_runs.enabled=false','benchmark.enabled=false']")]
NETWORK_CALLS = "connect,sendto,sendmsg,sendmmsg"


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_DATA_DIR": str(tmp / "wandb-data"),
            "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
            "OMP_NUM_THREADS": "1"}


def _train(sweep: Path, tmp: Path, *extra: str, strace_to: Path | None = None) -> str:
    command = [sys.executable, "train.py", "-m", *TRAIN, f"hydra.sweep.dir={sweep}", *extra]
    if strace_to is not None:
        command = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", f"trace={NETWORK_CALLS}", "-o", str(strace_to), *command]
    done = subprocess.run(command, check=False, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


# ---------------------------------------------------------------------------------------- offline run reader


def _records(path: Path) -> list:
    """The protobuf records of a `.wandb` transaction log (LevelDB log format: 32 KiB blocks of chunks with a
    7-byte header, after a 7-byte file header `:W&B` + magic + version)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunks, pos = [], [], 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


@dataclass
class OfflineRun:
    folder: Path
    id: str
    group: str
    job_type: str
    tags: list[str]
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # defined metric (or glob) -> its step metric
    logged: dict = field(default_factory=dict)  # artifact name -> digest
    used: dict = field(default_factory=dict)


def read_run(folder: Path) -> OfflineRun:
    """An offline run read back from its transaction log: later summary updates win, as in W&B."""
    (log,) = folder.glob("*.wandb")
    records = _records(log)
    head = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    run = OfflineRun(folder, head.run_id, head.run_group, head.job_type, list(head.tags))
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                run.summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
        elif kind == "metric":
            run.metrics[record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "artifact":
            target = run.used if record.artifact.use_after_commit else run.logged
            target[record.artifact.name] = record.artifact.digest
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    return [read_run(path) for path in sorted(root.rglob("offline-run-*")) if not path.is_symlink()]


# ------------------------------------------------------------------------------------------- the tiny sweep


def _strace_works() -> bool:
    """strace is installed and may trace here (containers may forbid ptrace)."""
    if shutil.which("strace") is None:
        return False
    probe = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", f"trace={NETWORK_CALLS}", "-o", os.devnull, "true"]
    return subprocess.run(probe, check=False, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A tiny offline sweep with its analysis (traced for network calls where strace works)."""
    tmp = tmp_path_factory.mktemp("wandb")
    trace = tmp / "network.trace" if _strace_works() else None
    output = _train(tmp / "sweep", tmp, *ANALYSIS, strace_to=trace)
    return tmp / "sweep", output, trace


def _split(runs: list[OfflineRun]) -> tuple[list[OfflineRun], list[OfflineRun], list[OfflineRun]]:
    return ([r for r in runs if r.job_type == "finetune"], [r for r in runs if r.job_type == "analyze"],
            [r for r in runs if r.job_type == "analyze-sweep"])


def test_finetuning_runs_have_group_tags_id_summary_and_record_artifact(sweep):
    root, _, _ = sweep
    finetune, _, _ = _split(offline_runs(root))
    assert len(finetune) == 4
    for run in finetune:
        record = read_record(run.folder.parents[1])  # <job folder>/wandb/offline-run-...
        assert run.group == record.setting_name == record.meta["wandb"]["group"]
        assert run.id == record.meta["wandb"]["run_id"] == tracking.run_id(record.setting, record.seed, "default")
        lr = record.setting["module.lr"]
        assert sorted(run.tags) == sorted(["task:rte", "model:tiny-bert", "method:none", f"lr:{lr:g}",
                                           "precision:32-true"])
        scores = record.meta["metrics"]
        assert run.summary["best/test/accuracy"] == scores["best"]["test"]["accuracy"]
        assert run.summary["final/val/accuracy"] == scores["final"]["val"]["accuracy"]
        assert run.summary["status"] == "finished" and run.summary["best/failed"] == record.failed("best")
        assert not any("best/test/accuracy" in row for row in run.history), "scores belong in the summary"
        assert run.metrics["*"] == "trainer/global_step"
        assert list(run.logged) == [f"record-{run.id}"]
    assert len({run.group for run in finetune}) == 2 and len({run.id for run in finetune}) == 4


def test_analysis_runs_sit_in_their_settings_groups_and_use_their_records(sweep):
    root, _, _ = sweep
    finetune, per_setting, whole = _split(offline_runs(root))
    assert len(whole) == 1 and len(per_setting) == 2
    assert {run.group for run in per_setting} == {run.group for run in finetune}
    for analysis in per_setting:
        mine = [run for run in finetune if run.group == analysis.group]
        logged = {name: digest for run in mine for name, digest in run.logged.items()}
        assert analysis.used == logged, "the analysis uses the very versions training logged"
        layers = [row for row in analysis.history if "layer" in row]
        assert [row["layer"] for row in layers] == list(range(1, len(layers) + 1)) and len(layers) >= 2
        assert all({"layers/CKA", "layers/OP", "layers/SVCCA"} <= set(row) for row in layers)
        assert analysis.metrics["layers/*"] == "layer"
        assert "tables/measures" in {key.split("/nrows")[0] for key in analysis.summary}


def test_multirun_ends_with_a_rollup_and_no_spurious_warning(sweep):
    _, output, _ = sweep
    assert "4 jobs: 4 finished, 0 skipped, 0 diverged, 0 stopped, 0 failed" in output
    assert "anonymous" not in output and "Tip:" not in output
    assert len(re.findall(r"GPU available", output)) == 4  # once per job


def test_offline_runs_make_no_network_traffic(sweep):
    _, _, trace = sweep
    if trace is None:
        pytest.skip("strace is not installed or may not trace here")
    lines = trace.read_text().splitlines()
    assert any("AF_UNIX" in line for line in lines), "the trace saw the W&B service's local socket"
    outside = [line for line in lines if re.search(r"sa_family=AF_INET6?\b", line)
               and not re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"', line)]
    assert not outside, "\n".join(outside[:5])


def test_sync_finds_every_offline_run_of_a_sweep(sweep):
    root, _, _ = sweep
    command = [sys.executable, "-m", "instability.tracking", "sync", str(root), "--dry-run"]
    done = subprocess.run(command, check=False, cwd=REPO, env=_env(root.parent), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert re.findall(r"Would sync (\d+) run", done.stdout + done.stderr) == ["4", "3"]  # fine-tuning, then analyses


def test_a_rerun_job_keeps_its_run_id_and_sync_takes_its_latest_attempt(sweep, tmp_path):
    root, _, _ = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(root, copy, symlinks=True)
    crashed = min(find_records([copy])).parent
    shutil.rmtree(crashed / "record")  # as if the job had crashed before writing it
    output = _train(copy, tmp_path)
    assert "4 jobs: 1 finished, 3 skipped, 0 diverged, 0 stopped, 0 failed" in output
    attempts = [read_run(path) for path in sorted((crashed / "wandb").glob("offline-run-*")) if not path.is_symlink()]
    assert len(attempts) == 2 and attempts[0].id == attempts[1].id
    finetune, analysis, superseded = tracking.offline_runs([copy])
    assert superseded == [attempts[0].folder] and attempts[1].folder in finetune
    assert len(finetune) == 4 and len(analysis) == 3


# ----------------------------------------------------------------------------------- in process, no network


@pytest.fixture
def no_network(monkeypatch):
    """Any connection or name lookup beyond this machine fails the test."""
    connect = socket.socket.connect

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network connection to {address}")
        return connect(self, address)

    def guarded_lookup(host, *args, **kwargs):
        raise AssertionError(f"name lookup of {host}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    monkeypatch.setattr(socket, "gethostbyname", guarded_lookup)


def test_offline_training_run_switches_off_wandb_network_features(train_cfg, monkeypatch, tmp_path, no_network):
    from instability.train import run

    for key, value in _env(tmp_path).items():
        if key.startswith("WANDB"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_ERROR_REPORTING", raising=False)
    cfg = train_cfg("logger=wandb", "data.train_size=16")
    run(cfg)
    wandb.teardown()  # the W&B service writes the rest of the transaction log as it stops
    assert os.environ["WANDB_ERROR_REPORTING"] == "false"  # the W&B service's only network use offline
    (folder,) = (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*")
    assert read_run(folder).summary["status"] == "finished"


def _synthetic_sweep(root: Path) -> None:
    for lr in (2e-5, 3e-5):
        for seed in range(2):
            write_run(root / f"lr{lr:g}" / f"seed{seed}", seed, base_labels(), base_hidden(), setting_dict=setting(lr=lr))


def test_report_definition_has_a_section_per_setting(tmp_path, no_network):
    import wandb_workspaces.reports.v2 as wr

    from instability.analysis.wandb_report import report_definition

    _synthetic_sweep(tmp_path)
    records = [read_record(path) for path in find_records([tmp_path])]
    report = report_definition(records, entity="me")
    groups = sorted({setting_name(record.setting) for record in records})
    assert report.entity == "me" and report.project == "instability"
    assert [block.text for block in report.blocks if isinstance(block, wr.H2)] == groups
    grids = [block for block in report.blocks if isinstance(block, wr.PanelGrid)]
    assert len(grids) == 1 + len(groups)
    for group, grid in zip(groups, grids[1:]):
        (runset,) = grid.runsets
        assert group in str(runset.filters)
        line, bar, table = grid.panels
        assert line.x == "layer" and line.y == ["layers/SVCCA", "layers/OP", "layers/CKA"]
        assert [m.name for m in bar.metrics] == ["best/test/accuracy"] and table.table_name == "tables/measures"
    assert all(panel.x == "layer" for panel in grids[0].panels)  # the overlay across settings


def test_report_command_dry_run_lists_sections_offline(tmp_path):
    _synthetic_sweep(tmp_path)
    command = [sys.executable, "-m", "instability.tracking", "report", str(tmp_path), "--dry-run"]
    done = subprocess.run(command, check=False, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("H2: ") == 2 and "<entity>/instability" in done.stdout


def test_a_single_setting_has_one_analysis_run_in_its_group(tmp_path, monkeypatch):
    from helpers.analysis import FAST, run_analysis

    for key, value in _env(tmp_path).items():
        if key.startswith("WANDB"):
            monkeypatch.setenv(key, value)
    for seed in range(3):
        write_run(tmp_path / "sweep" / f"seed{seed}", seed, base_labels(), base_hidden(seed=seed))
    run_analysis(tmp_path / "sweep", tmp_path / "out", *FAST, "wandb.mode=offline")
    wandb.teardown()  # the W&B service writes the rest of the transaction log as it stops
    (run,) = offline_runs(tmp_path / "out")
    assert run.job_type == "analyze" and run.group == setting_name(setting())
    assert [row["layer"] for row in run.history if "layer" in row] == [1, 2, 3, 4]
    assert {"tables/measures", "tables/skipped"} <= {key.rsplit("/", 1)[0] for key in run.summary}
