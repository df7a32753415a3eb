"""First-token hidden states of every encoder layer, read with forward hooks during one inference pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from instability.models.layers import layer_output_modules, num_layers


class CaptureError(RuntimeError):
    """The layer outputs of this model cannot be read as [batch, tokens, dim] once per layer."""


def _states(output) -> torch.Tensor:
    """A layer's hidden states from whatever the layer returns (a tensor, a tuple, a ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise CaptureError(f"a layer returned {type(output).__name__}, not its hidden states")


@torch.inference_mode()
def capture_outputs(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    prepare: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    with_hidden: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits [N, C] and, with `with_hidden`, first-token states [layers, N, dim], float32 on the CPU.

    The hooks keep only the first token ([CLS] / <s>) of each layer's output, so the model never has to
    return all tokens' hidden states. Layer outputs are taken in call order, which also serves models whose
    layers share one module (ALBERT); each forward pass must give `num_hidden_layers` outputs of shape
    [batch, tokens, dim], else `CaptureError`. As transformers' `output_hidden_states`, the top layer's states are
    the base model's output (after a final norm, where the model has one: ModernBERT). `prepare` moves a batch to
    the model's device and drops labels.
    """
    depth = num_layers(model)
    calls: list[torch.Tensor] = []
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(depth)]

    def keep_first_token(module: nn.Module, args: tuple, output) -> None:
        states = _states(output)
        if states.dim() != 3:
            raise CaptureError(f"a layer output has shape {list(states.shape)}, not [batch, tokens, dim] (an "
                               "unpadded attention implementation?); first-token states cannot be read from it")
        calls.append(states[:, 0].float())

    def keep_top(module: nn.Module, args: tuple, output) -> None:
        top.append(_states(output)[:, 0].float())

    top: list[torch.Tensor] = []
    modules = layer_output_modules(model) if with_hidden else []
    handles = [module.register_forward_hook(keep_first_token) for module in modules]
    if with_hidden:
        handles.append(model.base_model.register_forward_hook(keep_top))
    was_training = model.training
    model.eval()
    logits = []
    try:
        for batch in batches:
            calls.clear(), top.clear()
            logits.append(model(**prepare(batch)).logits.float())
            if with_hidden:
                if len(calls) != depth or len(top) != 1:
                    raise CaptureError(f"{type(model).__name__}: one forward pass gave {len(calls)} layer outputs, "
                                       f"but the model has {depth} layers")
                calls[-1] = top[0]
                for index, states in enumerate(calls):
                    per_layer[index].append(states)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    hidden = torch.stack([torch.cat(states) for states in per_layer]).cpu() if with_hidden else None
    return torch.cat(logits).cpu(), hidden
