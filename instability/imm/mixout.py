"""Mixout (Lee et al. 2020): during training every linear weight element is swapped, with probability p,
for its value at load time (the target), then rescaled so that the expected weight is the current one.

As in the authors' reference code (github.com/bloodwass/mixout), only weights are mixed; biases are used as they
are. Two deliberate differences from that code: the mask is drawn per weight element (the reference draws one
row of the mask and repeats it for every output unit), and the gradient is autograd's exact derivative of the
mixed weight, mask / (1 - p) (the reference drops the 1 / (1 - p) factor, which AdamW is insensitive to).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from instability.imm.base import Mitigation


class MixoutLinear(nn.Linear):
    """A linear layer that shares the given layer's parameters and mixes its weight with a frozen target."""

    def __init__(self, linear: nn.Linear, p: float) -> None:
        # nn.Linear.__init__ would allocate and initialise new parameters; this layer reuses the existing ones.
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.p = linear.in_features, linear.out_features, p
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        # Not persistent: checkpoints keep the plain model's keys; the target is re-taken at load time by prepare().
        self.register_buffer("target", linear.weight.detach().clone(), persistent=False)
        self.train(linear.training)

    def mixed_weight(self) -> torch.Tensor:
        """One Mixout draw: target where a Bernoulli(p) mask is set, else (w - p * target) / (1 - p)."""
        take_target = torch.rand_like(self.weight) < self.p
        return torch.where(take_target, self.target, (self.weight - self.p * self.target) / (1 - self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            return F.linear(x, self.mixed_weight(), self.bias)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


class Mixout(Mitigation):
    """Every nn.Linear becomes a MixoutLinear targeting its load-time weights; ordinary dropout is off."""

    name = "mixout"

    def __init__(self, p: float = 0.1) -> None:
        if not 0 <= p < 1:
            raise ValueError(f"mixout option p must be in [0, 1), got {p}")
        self.p = p

    def config_overrides(self) -> dict[str, Any]:
        return {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}

    def prepare(self, model: nn.Module) -> None:
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and not isinstance(child, MixoutLinear):
                    setattr(parent, child_name, MixoutLinear(child, self.p))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p}
