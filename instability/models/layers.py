"""Where a Hugging Face encoder classifier keeps its parts, found from its own structure rather than BERT's names.

The layer list is the base model's one `nn.ModuleList` with a module per layer (`config.num_hidden_layers`; of the
class the model declares for its hidden states, where it declares one). Base-model parameters outside the layers
are *below* them (embeddings, an embedding projection, relative-position tables) unless their module first runs
after the last layer in a forward pass (a pooler, a final norm): that is read from one probe forward pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

Named = list[tuple[str, nn.Parameter]]


class UnsupportedModelError(ValueError):
    """A method (or the hidden-state capture) has no meaning for this architecture; the message says why."""


def num_layers(model: nn.Module) -> int:
    """The number of transformer layers the model's config declares."""
    return int(model.config.num_hidden_layers)


def hidden_size(model: nn.Module) -> int:
    """The width of a layer's output."""
    return int(model.config.hidden_size)


def _declared_layer_class(base: nn.Module) -> type | None:
    """The class whose outputs the model itself records as hidden states (transformers' `_can_record_outputs`)."""
    recorder = (getattr(base, "_can_record_outputs", None) or {}).get("hidden_states")
    return getattr(recorder, "target_class", recorder) if recorder is not None else None


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The distinct transformer layers of a classifier, bottom layer first (embedding output excluded).

    Raises `UnsupportedModelError` when there is no list of `num_hidden_layers` distinct layers, e.g. for
    models whose layers share one set of weights (ALBERT)."""
    base, depth = model.base_model, num_layers(model)
    declared = _declared_layer_class(base)
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) == depth
             and len({type(x) for x in m}) == 1 and (declared is None or isinstance(m[0], declared))]
    nested = {id(inner) for outer in lists for inner in outer.modules() if inner is not outer}
    lists = [m for m in lists if id(m) not in nested]
    if len(lists) == 1 and len({id(layer) for layer in lists[0]}) == depth:
        return list(lists[0])
    shared = [m for m in base.modules() if declared is not None and isinstance(m, declared)]
    if len(lists) > 1:
        why = f"it has {len(lists)} candidate lists"
    elif 0 < len(shared) < depth:
        why = f"its {depth} layers share the weights of {len(shared)} layer module(s), as ALBERT's do"
    else:
        why = "its layers are not held in one ModuleList"
    raise UnsupportedModelError(f"{type(model).__name__} has no list of {depth} distinct transformer layers ({why})")


def layer_output_modules(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the layer outputs: the distinct layers, or else the module(s) of the class the
    model records hidden states from, which then run once per layer (ALBERT's shared layer)."""
    try:
        return encoder_layers(model)
    except UnsupportedModelError:
        declared = _declared_layer_class(model.base_model)
        shared = [m for m in model.base_model.modules() if declared is not None and isinstance(m, declared)]
        if shared:
            return shared
        raise


@contextmanager
def _probe_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode, no gradients, and the RNG state left as found (dropout would draw in training mode)."""
    device = next(model.parameters()).device
    was_training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)


def probe_forward(model: nn.Module) -> None:
    """One forward pass of a 4-token input, in evaluation mode and without touching the RNG state."""
    device = next(model.parameters()).device
    ids = (torch.arange(4, device=device) + 5) % int(model.config.vocab_size)
    with _probe_mode(model):
        model(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None])


@dataclass(frozen=True)
class Parts:
    """A classifier's parameters by place, each (full name, parameter), every trainable parameter exactly once."""

    below: Named  # base-model parameters read before the first layer: embeddings, projections, position tables
    layers: list[Named]  # per layer, bottom first (one entry per distinct layer module: one for ALBERT)
    above: Named  # base-model parameters whose module runs after the last layer: pooler, final norm
    head: Named  # outside the base model: the classification head


def model_parts(model: nn.Module) -> Parts:
    """Split a classifier's trainable parameters into embeddings-side, per-layer, top-of-encoder and head parts."""
    layers = layer_output_modules(model)
    late = _run_after_last_layer(model, layers)
    in_layer = {id(p): index for index, layer in enumerate(layers) for p in layer.parameters()}
    in_base = {id(p) for p in model.base_model.parameters()}
    below, above, head = [], [], []
    per_layer: list[Named] = [[] for _ in layers]
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in in_layer:
            per_layer[in_layer[id(p)]].append((name, p))
        elif id(p) not in in_base:
            head.append((name, p))
        else:
            (above if id(p) in late else below).append((name, p))
    return Parts(below, per_layer, above, head)


def _run_after_last_layer(model: nn.Module, layers: list[nn.Module]) -> set[int]:
    """Ids of base-model parameters whose module is first called after the last layer returns. A parameter read
    without calling its module (DeBERTa's relative-position table) counts as read before the layers."""
    clock = itertools.count()
    first_call: dict[int, int] = {}
    last_layer_end = [-1]
    owners = [m for m in model.base_model.modules() if next(m.parameters(recurse=False), None) is not None]

    def starts(module: nn.Module, args: tuple) -> None:
        first_call.setdefault(id(module), next(clock))

    def ends(module: nn.Module, args: tuple, output) -> None:
        last_layer_end[0] = next(clock)

    handles = [m.register_forward_pre_hook(starts) for m in owners] + [layers[-1].register_forward_hook(ends)]
    try:
        probe_forward(model)
    finally:
        for handle in handles:
            handle.remove()
    return {id(p) for m in owners if first_call.get(id(m), -1) > last_layer_end[0] for p in m.parameters(recurse=False)}


def output_layers(model: nn.Module) -> list[nn.Module]:
    """The head's output projection(s): linear layers outside the base model with one output per label."""
    in_base = {id(m) for m in model.base_model.modules()}
    return [m for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in in_base
            and m.out_features == model.config.num_labels]


def is_norm(module: nn.Module) -> bool:
    """A normalisation layer (LayerNorm, RMSNorm, ...), by type or, for models' own classes, by class name."""
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm)) \
        or "Norm" in type(module).__name__


def no_decay_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters that get no weight decay (SPEC section 1): biases and normalisation layers' parameters."""
    return {id(p) for module in model.modules() for name, p in module.named_parameters(recurse=False)
            if name == "bias" or is_norm(module)}
