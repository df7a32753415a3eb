"""Lightning callbacks: keep the best weights in memory, and capture outputs at the end of fitting."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from instability.capture import capture_outputs
from instability.records import Outputs


class BestWeights(pl.Callback):
    """Keeps a CPU copy of the weights with the best validation-half task metric (the first best on ties)."""

    def __init__(self) -> None:
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or pl_module.diverged:
            return
        value = trainer.callback_metrics.get(pl_module.monitor)
        if value is None or not torch.isfinite(value):
            return
        if self.best_score is None or float(value) > self.best_score:
            self.best_score, self.best_step = float(value), trainer.global_step
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.model.state_dict().items()}


class OutputCapture(pl.Callback):
    """After fitting, runs the final and then the best weights on both dev halves.

    Keeps logits of both halves and the first-token states of every layer on the test half, in `outputs`
    under "final" and "best" (the final weights' outputs again when no validation ever ran). A diverged run
    (NaN/inf loss or outputs) gets none.
    """

    def __init__(self) -> None:
        self.outputs: dict[str, Outputs] = {}
        self.seconds = 0.0

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.diverged:
            return
        start = time.perf_counter()
        datamodule = trainer.datamodule
        self.outputs["final"] = self._run(trainer, pl_module, datamodule)
        final = self.outputs["final"]
        if not all(bool(torch.isfinite(t).all()) for t in (final.test_logits, final.test_hidden, final.val_logits)):
            pl_module.diverged, self.outputs = True, {}  # the last update broke the weights after the last loss check
            return
        best = next((cb for cb in trainer.callbacks if isinstance(cb, BestWeights)), None)
        if best is not None and best.state is not None:
            pl_module.model.load_state_dict(best.state)
            self.outputs["best"] = self._run(trainer, pl_module, datamodule)
        else:
            self.outputs["best"] = self.outputs["final"]
        self.seconds = time.perf_counter() - start

    @staticmethod
    def _run(trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> Outputs:
        """Outputs in the run's own precision (under mixed precision, the autocast that validation used too)."""
        def prepare(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return pl_module.model_inputs(pl_module.transfer_batch_to_device(batch, pl_module.device, 0))

        with trainer.precision_plugin.forward_context():
            test_logits, hidden = capture_outputs(pl_module.model, datamodule.test_dataloader(), prepare)
            val_logits, _ = capture_outputs(pl_module.model, datamodule.val_dataloader(), prepare, with_hidden=False)
        return Outputs(test_logits, hidden, val_logits)
