"""The analysis folder: every file written atomically (instability.atomic), listed in a manifest written last.

Earlier output is never replaced unless asked (`overwrite`). A folder counts as holding an earlier analysis when
it has a manifest or files of its own; an unfinished analysis leaves neither (`abandon` removes what it wrote,
and its W&B folder and temporary files do not count), so a failed analysis never blocks its own rerun.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from instability.analysis.loading import AnalysisError
from instability.atomic import write_file, write_json

MANIFEST = "analysis.json"
WANDB_DIR = "wandb"  # the analyze W&B run's local files


class OutputFolder:
    """Writes the analysis outputs into one folder and records them in a manifest.

    An existing folder with outputs in it is an error unless `overwrite`; then files are replaced one by one
    and, at `finish`, those the previous analysis wrote but this one did not are removed. The folder is created
    and checked for writing at once, before any measure is computed.
    """

    def __init__(self, folder: str | os.PathLike, overwrite: bool) -> None:
        self.folder = Path(folder)
        self.written: list[str] = []
        self.previous: list[str] = []
        if self.folder.exists() and not self.folder.is_dir():
            raise AnalysisError(f"output folder {self.folder} is a file")
        if self.folder.is_dir() and self._holds_output():
            if not overwrite:
                raise AnalysisError(f"output folder {self.folder} already holds an earlier analysis (or other files); "
                                    "pass overwrite=true to replace it, or out_dir=<another folder>")
            manifest = self.folder / MANIFEST
            if manifest.is_file():
                self.previous = list(json.loads(manifest.read_text(encoding="utf-8")).get("files", []))
        self._check_writable()

    def _holds_output(self) -> bool:
        return any(entry.name != WANDB_DIR and not entry.name.startswith(".") for entry in self.folder.iterdir())

    def _check_writable(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):
                pass
        except OSError as error:
            raise AnalysisError(f"cannot write into the output folder {self.folder} ({error.strerror or error}); "
                                "choose a writable out_dir=<folder>") from None

    def write(self, relative: str, produce: Callable[[IO], None], binary: bool = False) -> Path:
        """Write `relative` through `produce(handle)` atomically."""
        target = write_file(self.folder / relative, produce, binary)
        self.written.append(relative)
        return target

    def write_text(self, relative: str, text: str) -> Path:
        return self.write(relative, lambda out: out.write(text))

    def save_figure(self, relative: str, figure: Any) -> str:
        """Save a matplotlib figure as PNG and close it."""
        import matplotlib.pyplot as plt

        try:
            self.write(relative, lambda out: figure.savefig(out, format="png", dpi=120), binary=True)
        finally:
            plt.close(figure)
        return relative

    def finish(self, info: dict[str, Any]) -> None:
        """Write the manifest, then remove files of the previous analysis that this one did not write."""
        write_json(self.folder / MANIFEST, {**info, "files": sorted(set(self.written))})
        for stale in set(self.previous) - set(self.written):
            self._remove(stale)

    def abandon(self, wandb_dir_is_ours: bool) -> None:
        """After a failure: remove the files this analysis wrote that no earlier analysis listed, and its W&B
        folder when this analysis created it, so that the rerun finds the folder as it was."""
        for relative in set(self.written) - set(self.previous):
            self._remove(relative)
        if wandb_dir_is_ours:
            shutil.rmtree(self.folder / WANDB_DIR, ignore_errors=True)

    def _remove(self, relative: str) -> None:
        path = self.folder / relative
        if path.is_file() and self.folder.resolve() in path.resolve().parents:
            path.unlink()
            for parent in path.parents:
                if parent == self.folder or any(parent.iterdir()):
                    break
                parent.rmdir()
