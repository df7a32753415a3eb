"""The LightningModule: a sequence classifier fine-tuned with AdamW and a linear warm-up/decay schedule."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from transformers import get_linear_schedule_with_warmup

from instability.data.glue import TaskSpec, get_task
from instability.imm import Mitigation, Standard
from instability.models.backbone import Backbone
from instability.models.metrics import metric_collection

FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def adamw_kernel(groups: list[dict[str, Any]], precision: str) -> dict[str, bool]:
    """Fused AdamW (one kernel for all parameters, the HF Trainer's default; on CPU about 7x faster than the
    per-parameter loop, some 6% of a MiniLM step) where it is valid, else the multi-tensor `foreach` kernel.

    Under mixed precision Lightning unscales the gradients before clipping them (SPEC: clip at 1.0), which a fused
    optimiser refuses to let it do, so mixed precision uses `foreach` (benchmarks/optimizer_step.py times both).
    """
    on_fused_device = all(p.device.type in FUSED_ADAMW_DEVICES for group in groups for p in group["params"])
    if on_fused_device and "mixed" not in precision:
        return {"fused": True}
    return {"foreach": True}


def takes_segment_ids(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes `token_type_ids` and its config has two or more segment types."""
    return "token_type_ids" in inspect.signature(model.forward).parameters \
        and getattr(model.config, "type_vocab_size", 2) >= 2


class FineTuner(pl.LightningModule):
    """Fine-tunes `backbone` on `task` (SPEC section 1; a task name, config or spec), with a mitigation method's
    hooks applied. `dropout` sets every dropout probability of the architecture (Mixout turns them off).

    The model is built in the constructor, so build this module only after seeding.
    """

    def __init__(
        self,
        backbone: Backbone,
        task: str | Mapping[str, Any] | TaskSpec,
        imm: Mitigation | None = None,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-6,
        dropout: float = 0.1,
        finite_check_every: int = 10,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.task = get_task(task)
        self.imm = imm or Standard()
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.adam_betas, self.adam_eps = tuple(adam_betas), adam_eps
        self.finite_check_every = finite_check_every
        self.model = backbone.build(num_labels=self.task.num_labels, dropout=self.imm.dropout(dropout),
                                    overrides=self.imm.config_overrides())
        self.imm.prepare(self.model)
        self._segment_ids = takes_segment_ids(self.model)
        self.model.train()  # from_pretrained returns eval mode, and Lightning keeps submodules' modes: dropout on
        self.compile = compile
        self._train_model = self.model  # torch.compile'd in setup() if asked; capture hooks use `model` itself
        self.val_metrics = metric_collection(self.task.metrics, prefix="val/", num_classes=self.task.num_labels)
        self.diverged = False
        self._last_loss: torch.Tensor | None = None

    @property
    def monitor(self) -> str:
        """The logged name of the task metric on the validation half: model selection uses it."""
        return f"val/{self.task.metric}"

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch without labels, and without segment ids for models that take none or have a single segment type."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if not self._segment_ids:
            inputs.pop("token_type_ids", None)
        return inputs

    def setup(self, stage: str) -> None:
        if self.compile and self._train_model is self.model:
            self._train_model = torch.compile(self.model)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**self.model_inputs(batch)).logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self._train_model(**self.model_inputs(batch)).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        self._last_loss = loss.detach()
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop a run whose loss became NaN/inf; checked every few steps to keep host syncs off the hot path."""
        if self.global_step % self.finite_check_every == 0:
            self._check_finite()

    def on_train_epoch_end(self) -> None:
        self._check_finite()

    def _check_finite(self) -> None:
        if self._last_loss is not None and not bool(torch.isfinite(self._last_loss)):
            self.diverged = True
            self.trainer.should_stop = True

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.val_metrics.update(self(batch).argmax(-1), batch["labels"])

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.imm.before_optimizer_step(self.model, optimizer)

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self.imm.param_groups(self.model, self.lr, self.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.adam_betas, eps=self.adam_eps,
                                      **adamw_kernel(groups, str(self.trainer.precision)))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = math.ceil(self.warmup_ratio * total)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
