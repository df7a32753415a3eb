"""W&B for fine-tuning runs and analyses, and the console they share.

A fine-tuning run is a W&B run in its setting's group (`setting_name`), with tags, a run id derived from the
sweep name, setting and seed (a rerun of the job continues the same run: resume="allow"), the record's scores in
its summary, and its record logged as an artifact that the analysis runs then use (lineage). Offline W&B makes
no network traffic (W&B's error reporting, its only connection offline, is switched off).

    python -m instability.tracking sync multirun/<name> [--dry-run]     upload every offline run under the folder
    python -m instability.tracking report multirun/<name> [--entity E]  publish a W&B report of the sweep
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from instability.setting import method_label, setting_id, setting_name, value

RECORD_ARTIFACT_TYPE = "run-record"
ANALYSIS_SUFFIX = "analyze"  # ends the offline folder name of every analysis run: `sync` uploads them last
_OFFLINE_RUN = re.compile(r"^offline-run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9_-]+?)(?P<analysis>-" + ANALYSIS_SUFFIX + ")?$")


# ---------------------------------------------------------------------------------------------------- any run


def init(mode: str, *, analysis: bool = False, **kwargs: Any) -> Any:
    """`wandb.init` in `mode` with the project's settings: quiet console, several runs per process allowed, and
    no network traffic when offline. Analysis runs' offline folders end with `-analyze`."""
    import wandb

    if mode == "offline":
        # W&B's error reporting (OpenTelemetry, from the wandb-core service) is the only network traffic of an
        # offline run; it is read when the service starts, so it is set before any run starts.
        os.environ["WANDB_ERROR_REPORTING"] = "false"
    settings = wandb.Settings(quiet=True, x_sync_dir_suffix=ANALYSIS_SUFFIX if analysis else "")
    return wandb.init(mode=mode, reinit="create_new", settings=settings, **kwargs)


def tags(setting: Mapping[str, Any]) -> list[str]:
    """Tags of a setting's runs: task, model, method, learning rate and precision (`task:rte`, `lr:2e-05`, ...)."""
    lr = value(setting, "lr")
    return [f"task:{value(setting, 'task')}", f"model:{value(setting, 'model')}", f"method:{method_label(setting)}",
            f"lr:{lr:g}" if isinstance(lr, float) else f"lr:{lr}", f"precision:{value(setting, 'precision')}"]


def run_id(setting: Mapping[str, Any], seed: int, sweep: str) -> str:
    """The W&B run id of a fine-tuning run: the same for the same sweep name, setting and seed, so a rerun of a
    crashed job continues its run instead of adding a second one to the group."""
    return f"{setting_id(setting)}-seed{seed}-{hashlib.sha256(sweep.encode()).hexdigest()[:6]}"


def record_artifact(record_dir: Path, meta: Mapping[str, Any], name: str) -> Any:
    """The artifact of a run record: its record.json (content-addressed; the tensors stay in the job folder).
    Training logs it; the analysis builds the same one from the record on disk and uses it, which W&B resolves
    to the version training logged."""
    import wandb

    metadata = {"setting_id": meta["setting_id"], "setting_name": setting_name(meta["setting"]),
                "seed": meta["seed"], "status": meta["status"], "metric": meta["metric"]}
    artifact = wandb.Artifact(name, type=RECORD_ARTIFACT_TYPE, metadata=metadata)
    artifact.add_file(str(Path(record_dir) / "record.json"), name="record.json")
    return artifact


def use(run: Any, artifact: Any) -> None:
    """Mark `artifact` as an input of `run`. Offline, W&B refuses `use_artifact`; the offline run then records
    the artifact with use-after-commit, as `use_artifact` does online for an artifact not yet logged."""
    if run.disabled:
        return
    if run.offline:
        run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
    else:
        run.use_artifact(artifact)


# --------------------------------------------------------------------------------------------- fine-tuning


def finetune_logger(cfg: Any, setting: Mapping[str, Any], seed: int) -> Any:
    """Lightning's WandbLogger around a run started here (on rank zero only: other ranks log nothing)."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    options = cfg.logger
    if rank_zero_only.rank != 0:
        return WandbLogger(project=options.project, save_dir=options.save_dir)
    group = setting_name(setting)
    config = {**_plain(cfg), "setting_id": setting_id(setting), "setting_name": group}
    run = init(str(options.mode), project=options.project, dir=str(options.save_dir), group=group,
               job_type=options.job_type, name=f"{group}-seed{seed}", id=run_id(setting, seed, str(cfg.name)),
               resume="allow", tags=[*tags(setting), *options.get("tags", [])], config=config)
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    run.define_metric("val/*", summary="max,last")  # every task metric is better when higher
    run.define_metric("train/loss", summary="min,last")
    return WandbLogger(experiment=run, project=options.project, save_dir=options.save_dir)


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def _wandb_run(logger: Any) -> Any:
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return logger.experiment if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0 else None


def record_info(logger: Any) -> dict[str, Any] | None:
    """The W&B fields of the run record (None without W&B): run id, group, project and record artifact."""
    run = _wandb_run(logger)
    if run is None:
        return None
    return {"run_id": run.id, "group": run.group, "project": run.project, "artifact": f"record-{run.id}"}


def log_record(logger: Any, meta: Mapping[str, Any], record_dir: Path, step: int) -> None:
    """After the record is written: W&B gets the scores and failure flags in the run summary and the record as
    an artifact; another logger (CSV) gets the scores as metrics at the last step."""
    flat = {f"{c}/{h}/{m}": v for c, halves in meta["metrics"].items() for h, ms in halves.items() for m, v in ms.items()}
    failed = {f"{c}/failed": bool(flag) for c, flag in meta["failed"].items()}
    run = _wandb_run(logger)
    if run is not None:
        run.summary.update({**flat, **failed, "metric": meta["metric"], "status": meta["status"],
                            "best_score": meta.get("best_score"),
                            "steps": meta.get("steps"), "record": str(record_dir)})
        if not run.disabled:
            run.log_artifact(record_artifact(record_dir, meta, meta["wandb"]["artifact"]))
    elif logger is not None and flat:
        logger.log_metrics({**flat, **{k: float(v) for k, v in failed.items()}}, step=step)
        logger.save()


def finish(logger: Any, succeeded: bool) -> None:
    """Finish the W&B run (exit code 1 when the run failed)."""
    run = _wandb_run(logger)
    if run is not None:
        run.finish(exit_code=0 if succeeded else 1)


# ------------------------------------------------------------------------------------------------- console


class _DropTips(logging.Filter):
    """Drops Lightning's advertising tips (`💡 Tip: ... try installing litlogger`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def one_console_line() -> None:
    """Every log line once: Lightning adds its own console handler to the `lightning` logger at import, which
    prints its messages a second time beside Hydra's root handler; it is removed when the root logger has
    handlers. Also drops Lightning's tips and its deprecation warning about torch's pytree (not ours to fix)."""
    import lightning  # noqa: F401  (its import adds the handlers removed here)

    if logging.getLogger().hasHandlers():  # Lightning's rule for adding its handlers, undone
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    logger.removeHandler(handler)
            logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


# ---------------------------------------------------------------------------------------------------- sync


def offline_runs(folders: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path], list[Path]]:
    """The offline run folders under `folders` (any depth): fine-tuning runs, analysis runs, and earlier
    attempts of a run id that a later attempt (a rerun of a crashed job) replaces; sorted."""
    newest: dict[str, Path] = {}
    superseded: list[Path] = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("offline-run-*")):
            match = _OFFLINE_RUN.match(path.name)
            if match is None or path.is_symlink() or not any(path.glob("*.wandb")):
                continue
            key = match.group("id") + (match.group("analysis") or "")
            earlier = newest.get(key)
            if earlier is not None:  # names start with the start time: the later name is the later attempt
                superseded.append(min(earlier, path, key=lambda p: p.name))
            newest[key] = path if earlier is None else max(earlier, path, key=lambda p: p.name)
    runs = sorted(newest.values())
    analysis = [path for path in runs if path.name.endswith(f"-{ANALYSIS_SUFFIX}")]
    return [path for path in runs if path not in analysis], analysis, sorted(superseded)


def sync(folders: Sequence[str | os.PathLike], wandb_args: Sequence[str] = ()) -> int:
    """`wandb sync` of every offline run under `folders`: fine-tuning runs first, then the analyses (so the
    record artifacts are the fine-tuning runs' before an analysis uses them); returns the exit status."""
    finetune, analysis, superseded = offline_runs(folders)
    for path in superseded:
        print(f"left out (a later attempt of the same run replaces it): {path}")
    if not finetune and not analysis:
        print(f"no offline W&B runs under {', '.join(str(f) for f in folders)}")
        return 1
    for batch in (finetune, analysis):
        if batch:
            command = [sys.executable, "-m", "wandb", "sync", *wandb_args, *map(str, batch)]
            status = subprocess.run(command, check=False).returncode
            if status != 0:
                return status
    return 0


def report(folders: Sequence[str | os.PathLike], entity: str | None, project: str | None, title: str | None,
           dry_run: bool) -> int:
    """Build the W&B report of the runs recorded under `folders` and publish it (needs internet and a login),
    or with `dry_run` print its sections without any network."""
    from instability.analysis.wandb_report import report_definition
    from instability.records import RecordError, find_records, read_record

    records = []
    for path in find_records(folders):
        try:
            records.append(read_record(path))
        except RecordError as error:
            print(f"left out: {error}")
    if not records:
        print(f"no run records under {', '.join(str(f) for f in folders)}")
        return 1
    if entity is None and not dry_run:
        import wandb

        entity = wandb.Api().default_entity
    definition = report_definition(records, entity or "<entity>", project, title)
    if dry_run:
        print(f"report {definition.title!r} in {definition.entity}/{definition.project}:")
        for block in definition.blocks:
            text = getattr(block, "text", None)
            print(f"  {type(block).__name__}: {text}" if text else f"  {type(block).__name__}")
        return 0
    definition.save()
    print(f"report published: {definition.url}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m instability.tracking sync|report <folder>...` (see --help)."""
    parser = argparse.ArgumentParser(prog="python -m instability.tracking", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("sync", help="upload every offline run under sweep or analysis folders "
                                              "(other options go to `wandb sync`, e.g. --dry-run)")
    upload.add_argument("folders", nargs="+", type=Path)
    publish = commands.add_parser("report", help="publish a W&B report of the runs under sweep folders")
    publish.add_argument("folders", nargs="+", type=Path)
    publish.add_argument("--entity", help="W&B entity (default: the logged-in user's)")
    publish.add_argument("--project", help="W&B project (default: the records')")
    publish.add_argument("--title")
    publish.add_argument("--dry-run", action="store_true", help="list the report's sections; no network")
    args, rest = parser.parse_known_args(argv)
    if args.command == "report":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return report(args.folders, args.entity, args.project, args.title, args.dry_run)
    return sync(args.folders, rest)


if __name__ == "__main__":
    sys.exit(main())
