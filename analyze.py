"""Analyse fine-tuning sweeps: `python analyze.py sweep_dir=multirun/2026-01-01_12-00-00` (or a list of folders).

Writes measures, validity and consistency analyses as CSV, Markdown and figures into `<sweep_dir>/analysis/`
(or `out_dir=`), and W&B runs (one per setting in its fine-tuning group, plus one for the sweep); see
conf/analyze.yaml for the switches.
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    from rich.console import Console  # imported here so `--help` and `--cfg` stay fast
    from rich.markup import escape

    from instability.analysis.loading import AnalysisError
    from instability.analysis.pipeline import run

    console = Console()
    try:
        run(cfg, console)
    except AnalysisError as error:
        console.print(f"[bold red]analyze: error:[/bold red] {escape(str(error))}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
