"""Lightning callbacks: keep the best weights in memory, and capture outputs at the end of fitting (checked on a
few examples before the first step, so a model whose outputs cannot be captured or recorded fails at once)."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch

from instability.capture import CaptureError, capture_outputs
from instability.models.layers import hidden_size, num_layers
from instability.records import Halves, Outputs, build_record

CHECK_EXAMPLES = 4


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

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Capture a few test-half examples and build a record of them (not written) before the first step:
        what would otherwise fail after training fails now. RNG state and model mode are left as found."""
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # loaders draw a seed
            batch = next(iter(trainer.datamodule.test_dataloader()))
            batch = {key: value[:CHECK_EXAMPLES] for key, value in batch.items()}
            with trainer.precision_plugin.forward_context():
                logits, hidden = capture_outputs(pl_module.model, [batch], _preparer(pl_module))
        model, n = pl_module.model, int(batch["labels"].shape[0])
        expected = {"hidden states": ((num_layers(model), n, hidden_size(model)), tuple(hidden.shape)),
                    "logits": ((n, pl_module.task.num_labels), tuple(logits.shape))}
        wrong = [f"{what} {list(got)}, expected {list(want)}" for what, (want, got) in expected.items() if got != want]
        if wrong:
            raise CaptureError(f"{type(model).__name__}: capture before training gave {'; '.join(wrong)}")
        if not (torch.isfinite(logits).all() and torch.isfinite(hidden).all()):
            raise CaptureError(f"{type(model).__name__}: NaN/inf outputs before training (precision "
                               f"{trainer.precision})")
        datamodule = trainer.datamodule
        ids, labels = (torch.as_tensor(x[:n]) for x in (datamodule.ids("test"), datamodule.labels("test")))
        outputs = Outputs(logits, hidden, logits)
        build_record(seed=0, setting={}, metrics=pl_module.task.metrics, halves=Halves(ids, labels, ids, labels),
                     outputs={"best": outputs, "final": outputs})

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
        if best is not None and best.state is not None and best.best_step != trainer.global_step:
            pl_module.model.load_state_dict(best.state)
            self.outputs["best"] = self._run(trainer, pl_module, datamodule)
        else:  # no validation ran, or the best weights are the final ones: the same outputs
            self.outputs["best"] = self.outputs["final"]
        self.seconds = time.perf_counter() - start

    @staticmethod
    def _run(trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> Outputs:
        """Outputs in the run's own precision (under mixed precision, the autocast that validation used too)."""
        prepare = _preparer(pl_module)
        with trainer.precision_plugin.forward_context():
            test_logits, hidden = capture_outputs(pl_module.model, datamodule.test_dataloader(), prepare)
            val_logits, _ = capture_outputs(pl_module.model, datamodule.val_dataloader(), prepare, with_hidden=False)
        return Outputs(test_logits, hidden, val_logits)


def _preparer(pl_module: pl.LightningModule):
    """Moves a batch to the module's device and keeps the model's inputs."""
    def prepare(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return pl_module.model_inputs(pl_module.transfer_batch_to_device(batch, pl_module.device, 0))

    return prepare
