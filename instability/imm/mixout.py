"""Mixout (Lee et al. 2020): during training each linear layer's weight is mixed with its value at load time (the
target): with probability p an *input unit* takes its target weights (one Bernoulli per input feature, shared by
every output row, so all weights leaving that unit are swapped together), and the result is rescaled so that the
expected weight is the current one.

As in the authors' reference code (github.com/bloodwass/mixout, also copied by Du & Nguyen), the mask is drawn per
input unit and only weights are mixed; biases are used as they are. ``mask="element"`` draws one Bernoulli per
weight element instead: that is "mixconnect", a different method, offered only as an explicit option. One
deliberate difference from the reference: the gradient is autograd's exact derivative of the mixed weight,
mask / (1 - p) (the reference drops the 1 / (1 - p) factor, which AdamW is insensitive to).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from instability.imm.base import Mitigation

MASKS = ("unit", "element")  # per input unit (Mixout), per weight element (mixconnect)


def check_options(p: float, mask: str) -> None:
    """Reject a mix probability outside [0, 1) and an unknown mask kind."""
    if not 0 <= p < 1:
        raise ValueError(f"mixout option p must be in [0, 1), got {p}")
    if mask not in MASKS:
        raise ValueError(f"mixout option mask must be one of {MASKS}, got {mask!r}")


class MixoutLinear(nn.Linear):
    """A linear layer that shares the given layer's parameters and mixes its weight with a frozen target."""

    def __init__(self, linear: nn.Linear, p: float, mask: str = "unit") -> None:
        check_options(p, mask)
        # nn.Linear.__init__ would allocate and initialise new parameters; this layer reuses the existing ones.
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.p, self.mask = linear.in_features, linear.out_features, p, mask
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        # Not persistent: checkpoints keep the plain model's keys; the target is re-taken at load time by prepare().
        self.register_buffer("target", linear.weight.detach().clone(), persistent=False)
        self.train(linear.training)

    def mixed_weight(self) -> torch.Tensor:
        """One Mixout draw: target where the Bernoulli(p) mask is set, else (w - p * target) / (1 - p).

        The weight is [out, in]; the "unit" mask is one row of length ``in`` broadcast over every output row."""
        shape = self.weight.shape[-1:] if self.mask == "unit" else self.weight.shape
        take_target = torch.rand(shape, device=self.weight.device) < self.p
        return torch.where(take_target, self.target, (self.weight - self.p * self.target) / (1 - self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            return F.linear(x, self.mixed_weight(), self.bias)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}, mask={self.mask}"


class Mixout(Mitigation):
    """Every nn.Linear becomes a MixoutLinear targeting its load-time weights; ordinary dropout is off.

    ``mask``: "unit" (default, Lee et al.'s Mixout: one draw per input unit) or "element" (mixconnect)."""

    name = "mixout"

    def __init__(self, p: float = 0.1, mask: str = "unit") -> None:
        check_options(p, mask)
        self.p, self.mask = p, mask

    def dropout(self, dropout: float) -> float:
        return 0.0

    def prepare(self, model: nn.Module) -> None:
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and not isinstance(child, MixoutLinear):
                    setattr(parent, child_name, MixoutLinear(child, self.p, self.mask))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p, "mask": self.mask}
