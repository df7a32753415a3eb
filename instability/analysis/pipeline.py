"""`analyze.py`'s work: find and load the runs, compute every measure per setting, run the switched-on validity
and consistency analyses, write the outputs and the W&B run, and print a short summary."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from instability.analysis import plots, reports, wandb_report
from instability.analysis.compute import (
    REPRESENTATION,
    MeasureOptions,
    headline,
    measure_values,
    pair_matrices,
    single_threaded_torch,
)
from instability.analysis.consistency import SettingPoint, benchmark, sd_vs_agreement
from instability.analysis.loading import (
    AnalysisError,
    SettingData,
    Skipped,
    group_settings,
    load_setting,
    record_paths,
    roots_of,
)
from instability.analysis.results import SettingResult, SweepResult
from instability.analysis.validity import (
    bootstrap,
    failed_groups,
    failed_vs_successful,
    generator,
    layer_trend,
    subsampling,
)


def run(cfg: DictConfig | dict[str, Any], console: Console | None = None) -> SweepResult:
    """Analyse the sweep folder(s) of `cfg` (see conf/analyze.yaml); raises `AnalysisError` on unusable input."""
    if isinstance(cfg, DictConfig) and OmegaConf.is_missing(cfg, "sweep_dir"):
        raise AnalysisError("sweep_dir is required: python analyze.py sweep_dir=<folder> (or a list of folders)")
    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    console = console or Console()
    roots = roots_of(config["sweep_dir"])
    timings: dict[str, float] = {}
    with single_threaded_torch(), _progress(console) as progress:
        paths = record_paths(roots)
        task = progress.add_task("reading records", total=len(paths))
        settings, skipped = group_settings(paths, config["checkpoint"], lambda k: progress.advance(task, k))
        for problem in skipped:
            progress.console.print(f"[yellow]skipped[/yellow] {problem.run}: {problem.reason}", highlight=False)
        out_dir = Path(config["out_dir"]) if config["out_dir"] else roots[0] / "analysis"
        output = reports.OutputFolder(out_dir, config["overwrite"])
        wandb_run = wandb_report.start(config, settings, roots, out_dir)
        succeeded = False
        try:
            sweep = SweepResult(roots, out_dir, [], skipped, config, timings=timings)
            for runs in settings:
                start = time.perf_counter()
                task = progress.add_task(f"loading {runs.name}", total=len(runs.records))
                with _timed(timings, "load"):
                    data, more = load_setting(runs, config["min_runs"], lambda k, t=task: progress.advance(t, k))
                progress.remove_task(task)
                skipped += more
                for problem in more:
                    progress.console.print(f"[yellow]skipped[/yellow] {problem.run}: {problem.reason}", highlight=False)
                if data is not None:
                    sweep.settings.append(analyse_setting(data, config, progress, timings))
                    progress.console.print(f"{runs.name}: {len(data.seeds)} runs analysed "
                                           f"in {time.perf_counter() - start:.1f} s", highlight=False)
                    del data  # frees the hidden states before the next setting loads
            if not sweep.settings:
                _print_skipped(console, skipped)
                raise AnalysisError(f"no setting has {config['min_runs']} or more usable runs; nothing to analyse "
                                    f"(skipped: {len(skipped)}, listed above)")
            with _timed(timings, "consistency"):
                _across_settings(sweep)
            with _timed(timings, "outputs"):
                _write(sweep, output, wandb_run)
            output.finish({"created": datetime.now(timezone.utc).isoformat(), "config": config,
                           "sweep_dirs": [str(root) for root in roots], "settings": [r.name for r in sweep.settings],
                           "skipped": [vars(s) for s in skipped], "timings_s": timings})
            succeeded = True
        finally:
            wandb_run.finish(exit_code=0 if succeeded else 1)
    _print_summary(console, sweep)
    return sweep


@contextmanager
def _progress(console: Console):
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        yield progress


@contextmanager
def _timed(timings: dict[str, float], phase: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start


def analyse_setting(
    data: SettingData, config: dict[str, Any], progress: Progress, timings: dict[str, float]
) -> SettingResult:
    """Every measure of one setting, then its switched-on validity analyses."""
    measures = config["measures"]
    options = MeasureOptions(measures["cka_debiased"], measures["kappa_chance"],
                             measures["workers"] or len(os.sched_getaffinity(0)))
    _, num_layers, num_examples, hidden_size = data.hidden.shape
    sub = config["subsampling"]
    draws = sub["draws"] * len(sub["fractions"]) if sub["enabled"] else 0
    task = progress.add_task(f"measures {data.name}", total=len(REPRESENTATION) * num_layers * (1 + draws))
    advance: Callable[[int], None] = lambda k: progress.advance(task, k)  # noqa: E731
    with _timed(timings, "measures"):
        pairs = pair_matrices(data.logits, data.hidden, options, runs=data.runs, advance=advance)
        values, problems = measure_values(data.scores, data.predictions, data.num_classes, pairs, options)
    result = SettingResult(
        name=data.name, setting=data.setting, checkpoint=data.checkpoint, metric=data.metric, seeds=data.seeds,
        runs=data.runs, scores=data.scores.numpy(), failed=data.failed, majority_baseline=data.majority_baseline,
        num_examples=num_examples, num_layers=num_layers, hidden_size=hidden_size, values=values,
        last_layer={label: stack[-1].numpy() for label, stack in pairs.representation.items()},
        notes=pairs.notes + [f"{label} undefined on the full test half: {why}" for label, why in problems.items()],
    )
    if config["layer_trend"]:
        with _timed(timings, "layer_trend"):
            result.trend, result.agreement = layer_trend(values)
    failed_cfg = config["failed_runs"]
    if failed_cfg["enabled"]:
        with _timed(timings, "failed_runs"):
            failed_at, successful_at, result.failed_note = failed_groups(data.failed, failed_cfg["min_per_group"])
            if result.failed_note is None:
                rng = generator(config["seed"], data.key, "permutation")
                result.failed_runs = failed_vs_successful(pairs, data.seeds, failed_at, successful_at,
                                                          failed_cfg["permutations"], rng)
    if sub["enabled"]:
        with _timed(timings, "subsampling"):
            rng = generator(config["seed"], data.key, "subsampling")
            result.subsampling, notes = subsampling(data, values, options, sub["fractions"], sub["draws"], rng, advance)
            result.notes += list(dict.fromkeys(notes))
    boot = config["bootstrap"]
    if boot["enabled"]:
        with _timed(timings, "bootstrap"):
            rng = generator(config["seed"], data.key, "bootstrap")
            result.bootstrap = bootstrap(data, pairs, options, boot["replicates"], boot["keep_self_pairs"],
                                         boot["confidence"], rng)
    progress.remove_task(task)
    return result


def _across_settings(sweep: SweepResult) -> None:
    config = sweep.config
    points = [SettingPoint(r.name, r.setting, headline(r.values), r.bootstrap.agreement() if r.bootstrap else None)
              for r in sweep.settings]
    if config["benchmark"]["enabled"]:
        sweep.benchmarks, sweep.ranks, notes = benchmark(points, config["benchmark"]["group_by"])
        sweep.notes += [f"benchmark: {note}" for note in notes]
    if config["bootstrap"]["enabled"]:
        sweep.sd_points, sweep.sd_results, notes = sd_vs_agreement(points, config["bootstrap"]["group_by"])
        sweep.notes += [f"SD vs agreement: {note}" for note in notes]


def _folder(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _write(sweep: SweepResult, output: reports.OutputFolder, wandb_run: Any) -> None:
    """Figures, CSV tables, summary.md, and the W&B run's tables and figures."""
    config = sweep.config
    if config["figures"]:
        for r in sweep.settings:
            base = f"figures/{_folder(r.name)}"
            r.figures["layers"] = output.save_figure(f"{base}/layers.png", plots.layers(r))
            r.figures["scores"] = output.save_figure(f"{base}/scores.png", plots.scores(r))
            r.figures["distance_matrix"] = output.save_figure(f"{base}/distance_matrix.png", plots.distance_matrix(r))
            if r.failed_runs is not None:
                r.figures["failed_runs"] = output.save_figure(
                    f"{base}/failed_runs.png", plots.failed_runs(r, config["failed_runs"]["alpha"]))
            if r.subsampling:
                r.figures["subsampling"] = output.save_figure(f"{base}/subsampling.png", plots.subsampling(r))
            if r.bootstrap is not None:
                r.figures["bootstrap_correlation"] = output.save_figure(
                    f"{base}/bootstrap_correlation.png", plots.bootstrap_correlation(r))
        for b in sweep.benchmarks:
            sweep.figures[f"benchmark/{b.group}"] = output.save_figure(
                f"figures/benchmark_{_folder(b.group)}.png", plots.benchmark(b))
        for row in sweep.sd_results:
            points = [p for p in sweep.sd_points if p["group"] == row["group"]]
            sweep.figures[f"sd_vs_agreement/{row['group']}"] = output.save_figure(
                f"figures/sd_vs_agreement_{_folder(row['group'])}.png",
                plots.sd_vs_agreement(row["group"], points, row["pearson_r"], row["p_value"]))
    tables = reports.tables(sweep)
    for name, (rows, columns) in tables.items():
        output.write_csv(name, rows, columns)
    output.write_text("summary.md", reports.summary_markdown(sweep))
    wandb_report.log(wandb_run, sweep, tables)


def _print_skipped(console: Console, skipped: list[Skipped]) -> None:
    if not skipped:
        return
    table = Table(title=f"Skipped ({len(skipped)}): left out of the analysis", title_justify="left")
    for column in ("run", "seed", "problem"):
        table.add_column(column, overflow="fold")
    for s in skipped:
        table.add_row(s.run, "" if s.seed is None else str(s.seed), s.reason)
    console.print(table)


def _print_summary(console: Console, sweep: SweepResult) -> None:
    """A short table (CKA stands for the representation measures; summary.md has them all), then what was skipped."""
    table = Table(title="Instability per setting (test half; CKA at the last layer; all measures in summary.md)",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("setting (metric)", overflow="fold", min_width=20)
    labels = ("mean", "SD", "I_pwd", "I_kappa", "I_jsd", "CKA")
    for column in ("n", "score", *labels[1:]):
        table.add_column(column, justify="right", no_wrap=True)
    for r in sweep.settings:
        values = headline(r.values)
        table.add_row(f"{r.name} ({r.metric})", str(len(r.seeds)),
                      *("n/a" if np.isnan(values[label]) else f"{values[label]:.3f}" for label in labels))
    console.print(table)
    _print_skipped(console, sweep.skipped)
    for note in sweep.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"Outputs in [bold]{sweep.out_dir}[/bold] (summary.md, measures.csv, figures/).", highlight=False)
