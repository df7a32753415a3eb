"""First-token hidden states of every encoder layer, read with forward hooks during one inference pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from instability.models.layers import encoder_layers


@torch.inference_mode()
def capture_outputs(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    prepare: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    with_hidden: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits [N, C] and, with `with_hidden`, first-token states [layers, N, dim], float32 on the CPU.

    The hooks keep only the first token ([CLS] / <s>) of each layer's output, so the model never has to
    return all tokens' hidden states. `prepare` moves a batch to the model's device and drops labels.
    """
    layers = encoder_layers(model)
    per_layer: list[list[torch.Tensor]] = [[] for _ in layers]

    def hook(index: int):
        def keep_first_token(module: nn.Module, args: tuple, output) -> None:
            states = output[0] if isinstance(output, tuple) else output
            per_layer[index].append(states[:, 0].float())

        return keep_first_token

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)] if with_hidden else []
    was_training = model.training
    model.eval()
    logits = []
    try:
        for batch in batches:
            logits.append(model(**prepare(batch)).logits.float())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    hidden = torch.stack([torch.cat(states) for states in per_layer]).cpu() if with_hidden else None
    return torch.cat(logits).cpu(), hidden
