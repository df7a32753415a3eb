"""`analyze.py`'s work: find and load the runs, compute every measure per setting, run the switched-on validity
and consistency analyses, write the outputs and the W&B runs, and print a short summary."""

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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from instability.analysis import plots, summary, tables, wandb_report
from instability.analysis.consistency import SettingPoint, benchmark, sd_vs_agreement
from instability.analysis.loading import (
    AnalysisError,
    SettingData,
    Skipped,
    check_memory,
    group_settings,
    load_setting,
    record_paths,
    roots_of,
)
from instability.analysis.options import validate
from instability.analysis.output import WANDB_DIR, OutputFolder
from instability.analysis.results import SdVsAgreement, SettingResult, SweepResult
from instability.analysis.setting_measures import (
    REPRESENTATION,
    MeasureOptions,
    headline,
    measure_values,
    pair_matrices,
    single_threaded_torch,
)
from instability.analysis.validity import (
    bootstrap,
    failed_groups,
    failed_vs_successful,
    generator,
    layer_trend,
    subsampling,
)


def run(cfg: DictConfig | dict[str, Any], console: Console | None = None) -> SweepResult:
    """Analyse the sweep folder(s) of `cfg` (see conf/analyze.yaml); raises `AnalysisError` on unusable input
    or options. On failure the output folder is left as it was, so the same command can run again."""
    if isinstance(cfg, DictConfig) and OmegaConf.is_missing(cfg, "sweep_dir"):
        raise AnalysisError("sweep_dir is required: python analyze.py sweep_dir=<folder> (or a list of folders)")
    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    validate(config)
    console = console or Console()
    roots = roots_of(config["sweep_dir"])
    timings: dict[str, float] = {}
    with single_threaded_torch(), _progress(console) as progress:
        paths = record_paths(roots)
        task = progress.add_task("reading records", total=len(paths))
        settings, skipped = group_settings(paths, config["checkpoint"], config["include_stopped"],
                                           lambda k: progress.advance(task, k))
        for problem in skipped:
            _print_skip(progress.console, problem)
        check_memory(settings, config["memory"]["max_gib"])
        out_dir = Path(config["out_dir"]) if config["out_dir"] else roots[0] / "analysis"
        output = OutputFolder(out_dir, config["overwrite"])
        wandb_dir_is_ours = not (out_dir / WANDB_DIR).exists()
        wandb_run = wandb_report.start(config, settings, roots, out_dir)
        succeeded = False
        try:
            sweep = SweepResult(roots, out_dir, [], skipped, config, measure_options(config), config["seed"],
                                timings=timings)
            for runs in settings:
                start = time.perf_counter()
                task = progress.add_task(f"loading {escape(runs.name)}", total=len(runs.records))
                with _timed(timings, "load"):
                    data, more = load_setting(runs, config["min_runs"], lambda k, t=task: progress.advance(t, k))
                progress.remove_task(task)
                skipped += more
                for problem in more:
                    _print_skip(progress.console, problem)
                if data is not None:
                    sweep.settings.append(analyse_setting(data, config, sweep.options, progress, timings))
                    progress.console.print(f"{escape(runs.name)}: {len(data.seeds)} runs analysed "
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
            if not succeeded:
                output.abandon(wandb_dir_is_ours)
    _print_summary(console, sweep)
    return sweep


def measure_options(config: dict[str, Any]) -> MeasureOptions:
    """The measure choices of `config` (workers: all CPU cores when null)."""
    measures = config["measures"]
    return MeasureOptions(measures["cka_debiased"], measures["kappa_chance"],
                          measures["workers"] or len(os.sched_getaffinity(0)))


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
    data: SettingData, config: dict[str, Any], options: MeasureOptions, progress: Progress, timings: dict[str, float]
) -> SettingResult:
    """Every measure of one setting, then its switched-on validity analyses."""
    _, num_layers, num_examples, hidden_size = data.hidden.shape
    sub = config["subsampling"]
    draws = sub["draws"] * len(sub["fractions"]) if sub["enabled"] else 0
    task = progress.add_task(f"measures {escape(data.name)}", total=len(REPRESENTATION) * num_layers * (1 + draws))
    advance: Callable[[int], None] = lambda k: progress.advance(task, k)  # noqa: E731
    with _timed(timings, "measures"):
        pairs = pair_matrices(data.logits, data.hidden, options, runs=data.runs, advance=advance)
        values, problems = measure_values(data.scores, data.predictions, data.num_classes, pairs, options)
    result = SettingResult(
        name=data.name, setting_id=data.key, setting=data.setting, checkpoint=data.checkpoint, metric=data.metric,
        seeds=data.seeds, runs=data.runs, scores=data.scores.numpy(), failed=data.failed,
        diverged_seeds=data.diverged_seeds, majority_baseline=data.majority_baseline, num_examples=num_examples,
        num_layers=num_layers, hidden_size=hidden_size, values=values,
        last_layer={label: stack[-1].numpy() for label, stack in pairs.representation.items()},
        notes=pairs.notes + [f"{label} undefined on the full test half: {why}" for label, why in problems.items()],
    )
    if config["layer_trend"]:
        with _timed(timings, "layer_trend"):
            result.trend, result.agreement = layer_trend(values)
    failed_cfg = config["failed_runs"]
    if failed_cfg["enabled"]:
        with _timed(timings, "failed_runs"):
            failed_at, successful_at, result.failed_note = failed_groups(data.failed, len(data.diverged_seeds),
                                                                         failed_cfg["min_per_group"])
            if result.failed_note is None:
                rng = generator(config["seed"], data.key, "permutation")
                result.failed_runs = failed_vs_successful(pairs, data.seeds, failed_at, successful_at,
                                                          failed_cfg["permutations"], rng, data.checkpoint,
                                                          data.diverged_seeds, failed_cfg["alpha"])
    if sub["enabled"]:
        with _timed(timings, "subsampling"):
            rng = generator(config["seed"], data.key, "subsampling")
            result.subsampling, notes = subsampling(data, values, options, sub["fractions"], sub["draws"], rng, advance)
            result.notes += list(dict.fromkeys(notes))
    boot = config["bootstrap"]
    if boot["enabled"]:
        with _timed(timings, "bootstrap"):
            rng = generator(config["seed"], data.key, "bootstrap")
            try:
                result.bootstrap = bootstrap(data, pairs, options, boot["replicates"], boot["keep_self_pairs"],
                                             boot["confidence"], rng, boot["measures"], boot["seeds_below"])
            except ValueError as error:
                result.notes.append(f"bootstrap not run: {error}")
    progress.remove_task(task)
    return result


def _plotted_sd(result: SettingResult, seeds_below: int | None) -> float | None:
    """The SD that SD vs agreement plots: over all seeds (None: the table's), or over seeds < `seeds_below`."""
    if seeds_below is None:
        return None
    scores = result.scores[np.asarray(result.seeds) < seeds_below]
    return float(scores.std()) if scores.size >= 2 else float("nan")


def _across_settings(sweep: SweepResult) -> None:
    config = sweep.config
    options = config["sd_vs_agreement"]
    points = [SettingPoint(r.name, r.setting, headline(r.values), r.bootstrap.agreement() if r.bootstrap else None,
                           _plotted_sd(r, options["sd_seeds_below"])) for r in sweep.settings]
    if config["benchmark"]["enabled"]:
        sweep.benchmarks, sweep.ranks, notes = benchmark(points, config["benchmark"]["group_by"])
        sweep.benchmark_group_by = list(config["benchmark"]["group_by"])
        sweep.notes += [f"benchmark: {note}" for note in notes]
    if config["bootstrap"]["enabled"] and options["enabled"]:
        rows, results, notes = sd_vs_agreement(points, options["group_by"], options["same_lr_as_standard"])
        sweep.sd_vs_agreement = SdVsAgreement(results, rows, list(options["group_by"]),
                                              options["same_lr_as_standard"], options["sd_seeds_below"])
        sweep.notes += [f"SD vs agreement: {note}" for note in notes]


def _folder(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _write(sweep: SweepResult, output: OutputFolder, wandb_run: Any) -> None:
    """Figures, CSV tables, summary.md, and the W&B run's tables and figures."""
    if sweep.config["figures"]:
        for r in sweep.settings:
            base = f"figures/{_folder(r.name)}"
            r.figures["layers"] = output.save_figure(f"{base}/layers.png", plots.layers(r))
            r.figures["scores"] = output.save_figure(f"{base}/scores.png", plots.scores(r))
            r.figures["distance_matrix"] = output.save_figure(f"{base}/distance_matrix.png", plots.distance_matrix(r))
            if r.failed_runs is not None:
                r.figures["failed_runs"] = output.save_figure(f"{base}/failed_runs.png", plots.failed_runs(r))
            if r.subsampling:
                r.figures["subsampling"] = output.save_figure(f"{base}/subsampling.png", plots.subsampling(r))
            if r.bootstrap is not None:
                r.figures["bootstrap_correlation"] = output.save_figure(
                    f"{base}/bootstrap_correlation.png", plots.bootstrap_correlation(r))
        for b in sweep.benchmarks or []:
            sweep.figures[f"benchmark/{b.group}"] = output.save_figure(
                f"figures/benchmark_{_folder(b.group)}.png", plots.benchmark(b))
        for row in sweep.sd_vs_agreement.results if sweep.sd_vs_agreement else []:
            points = [p for p in sweep.sd_vs_agreement.points if p["group"] == row["group"]]
            sweep.figures[f"sd_vs_agreement/{row['group']}"] = output.save_figure(
                f"figures/sd_vs_agreement_{_folder(row['group'])}.png",
                plots.sd_vs_agreement(row["group"], points, row["pearson_r"], row["p_value"]))
    written = tables.tables(sweep)
    for name, (rows, columns) in written.items():
        tables.write_csv(output, name, rows, columns)
    output.write_text("summary.md", summary.summary_markdown(sweep))
    wandb_report.log(wandb_run, sweep, written)


def _print_skipped(console: Console, skipped: list[Skipped]) -> None:
    if not skipped:
        return
    table = Table(title=f"Skipped ({len(skipped)}): left out of the analysis", title_justify="left")
    for column in ("run", "seed", "problem"):
        table.add_column(column, overflow="fold")
    for s in skipped:
        table.add_row(escape(s.run), "" if s.seed is None else str(s.seed), escape(s.reason))
    console.print(table)


def _print_skip(console: Console, problem: Skipped) -> None:
    console.print(f"[yellow]skipped[/yellow] {escape(problem.run)}: {escape(problem.reason)}", highlight=False)


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
        table.add_row(escape(f"{r.name} ({r.metric})"), str(len(r.seeds)),
                      *("n/a" if np.isnan(values[label]) else f"{values[label]:.3f}" for label in labels))
    console.print(table)
    _print_skipped(console, sweep.skipped)
    for note in sweep.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    console.print(f"Outputs in [bold]{escape(str(sweep.out_dir))}[/bold] (summary.md, measures.csv, figures/).",
                  highlight=False)
