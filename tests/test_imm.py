"""Instability mitigation methods (SPEC section 1) on tiny BERT and RoBERTa models built from configs."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from transformers import AutoModelForSequenceClassification, BertConfig, RobertaConfig

from instability.imm import LLRD, Mixout, ReInit, Standard, WDPre
from instability.imm.mixout import MixoutLinear

REPO = Path(__file__).resolve().parents[1]
ARCHS = ["bert", "roberta"]
DEPTH = 6


def tiny(arch: str, seed: int = 0, **overrides) -> nn.Module:
    config_cls = {"bert": BertConfig, "roberta": RobertaConfig}[arch]
    config = config_cls(
        vocab_size=100, hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=2, intermediate_size=64,
        num_labels=2, **overrides,
    )
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config)


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    return {
        "input_ids": torch.randint(3, 100, (4, 8), generator=generator),
        "labels": torch.randint(0, 2, (4,), generator=generator),
    }


def no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name


def group_of(groups: list[dict]) -> dict[int, dict]:
    """Map each parameter to its group, asserting that no parameter is in two groups."""
    owner: dict[int, dict] = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in owner, "parameter in two groups"
            owner[id(p)] = group
    return owner


def pooler_prefix(model: nn.Module) -> str:
    """What re-init touches besides the top layers: BERT's pooler, RoBERTa's classifier.dense."""
    return f"{model.base_model_prefix}.pooler." if model.base_model.pooler is not None else "classifier.dense."


# ---------------------------------------------------------------------------------------------------------- Mixout


def train_losses(model: nn.Module, steps: int = 4) -> list[float]:
    model.train()
    optimizer = torch.optim.AdamW(Standard().param_groups(model, 1e-3, 0.01))
    torch.manual_seed(1)
    losses = []
    for _ in range(steps):
        loss = model(**batch()).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("arch", ARCHS)
def test_mixout_p0_trains_like_plain_model(arch):
    overrides = Mixout(0.0).config_overrides()
    plain, mixed, mixed_half = (tiny(arch, **overrides) for _ in range(3))
    Mixout(0.0).prepare(mixed)
    Mixout(0.5).prepare(mixed_half)
    n_linear = sum(isinstance(m, nn.Linear) for m in plain.modules())
    assert sum(isinstance(m, MixoutLinear) for m in mixed.modules()) == n_linear
    plain_losses = train_losses(plain)
    assert train_losses(mixed) == plain_losses
    for (name, a), (_, b) in zip(plain.state_dict().items(), mixed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert train_losses(mixed_half)[1:] != plain_losses[1:]


def test_mixout_prepare_keeps_parameters_and_state_dict_keys():
    model = tiny("bert")
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    Mixout(0.1).prepare(model)
    assert all(p is params[n] for n, p in model.named_parameters())
    assert list(model.state_dict()) == keys
    query = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, MixoutLinear) and torch.equal(query.target, query.weight)
    with torch.no_grad():
        query.weight.add_(1.0)
    assert not torch.equal(query.target, query.weight)  # the target is a frozen copy, not the live weight
    assert not query.target.requires_grad


def fine_tuned_mixout(in_features: int, out_features: int, p: float, mask: str) -> MixoutLinear:
    """A MixoutLinear whose weight moved away from its target by a different amount (>= 0.5) per element, so a
    draw tells which elements took the target and a wrong rescaling shows per element."""
    torch.manual_seed(0)
    layer = MixoutLinear(nn.Linear(in_features, out_features), p, mask)
    with torch.no_grad():
        layer.weight.add_(0.5 + torch.rand_like(layer.weight))
    return layer


@pytest.mark.parametrize("mask", ["unit", "element"])
def test_mixout_draws_keep_target_with_probability_p_and_expectation_w(mask):
    p = 0.1
    layer = fine_tuned_mixout(64, 8, p, mask)
    draws = torch.stack([layer.mixed_weight() for _ in range(4000)])
    took_target = draws == layer.target
    rescaled = (layer.weight - p * layer.target) / (1 - p)
    assert torch.all(took_target | (draws == rescaled))  # every element is the target or the rescaled weight
    assert abs(took_target.float().mean().item() - p) < 0.005
    mean = draws.mean(0)
    assert abs((mean - layer.weight).mean().item()) < 0.005  # without rescaling this is off by p * (w - target)
    assert torch.allclose(mean, layer.weight, atol=0.05)


def test_mixout_mask_is_one_draw_per_input_unit():
    """Lee et al.: every output row shares the input-unit mask, so each column of the weight takes the target
    together; per column the draw is Bernoulli(p)."""
    p = 0.3
    layer = fine_tuned_mixout(200, 16, p, "unit")
    took_target = torch.stack([layer.mixed_weight() == layer.target for _ in range(200)])  # [draws, out, in]
    assert torch.equal(took_target, took_target[:, :1].expand_as(took_target))  # constant down each column
    per_unit = took_target[:, 0]
    assert per_unit.any(-1).all() and (~per_unit).any(-1).all()  # every draw mixes some units, not all
    assert abs(per_unit.float().mean().item() - p) < 0.01


def test_mixout_element_mask_is_mixconnect():
    layer = fine_tuned_mixout(200, 16, 0.3, "element")
    took_target = layer.mixed_weight() == layer.target
    assert not torch.equal(took_target, took_target[:1].expand_as(took_target))
    assert not torch.equal(took_target, took_target[:, :1].expand_as(took_target))


@pytest.mark.parametrize("mask", ["unit", "element"])
def test_mixout_forward_train_and_eval(mask):
    p = 0.3
    torch.manual_seed(0)
    plain = nn.Linear(16, 8)
    layer = MixoutLinear(plain, p, mask)
    with torch.no_grad():
        layer.weight.add_(0.5)
    x = torch.randn(5, 16)
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)
    mixed = layer.mixed_weight()
    assert torch.allclose(y, F.linear(x, mixed, layer.bias))  # the bias is not mixed
    assert not torch.allclose(y, plain(x))
    torch.manual_seed(7)
    assert torch.equal(layer(x), y)  # deterministic under the seeded RNG

    y.sum().backward()
    took_target = mixed == layer.target
    expected = torch.where(took_target, 0.0, x.sum(0).expand(8, 16) / (1 - p))
    assert torch.allclose(layer.weight.grad, expected)

    layer.eval()
    assert torch.equal(layer(x), plain(x))


def test_mixout_mask_option_reaches_every_layer():
    model = tiny("bert")
    Mixout(0.1, mask="element").prepare(model)
    assert {m.mask for m in model.modules() if isinstance(m, MixoutLinear)} == {"element"}
    assert Mixout(0.2, mask="element").describe() == {"name": "mixout", "p": 0.2, "mask": "element"}
    with pytest.raises(ValueError, match="mask"):
        MixoutLinear(nn.Linear(4, 4), 0.1, "row")


@pytest.mark.parametrize("arch", ARCHS)
def test_mixout_turns_every_dropout_off(arch):
    from instability.models.backbone import Backbone, dropout_keys

    assert Mixout().dropout(0.1) == 0.0 and Standard().dropout(0.1) == 0.1
    config = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64}
    backbone = Backbone(name=arch, architecture=arch, tokenizer="unused", config=config)
    model, control = (backbone.build(2, dropout=imm.dropout(0.1)) for imm in (Mixout(), Standard()))
    keys = dropout_keys(model.config)
    assert {"hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"} <= set(keys)
    assert all(getattr(model.config, key) == 0.0 for key in keys)
    assert all(getattr(control.config, key) == 0.1 for key in keys)
    for m in (model, control):
        m.train()
    inputs = {"input_ids": batch()["input_ids"]}
    assert torch.equal(model(**inputs).logits, model(**inputs).logits)
    assert not torch.equal(control(**inputs).logits, control(**inputs).logits)


# ------------------------------------------------------------------------------------------------------------ LLRD


@pytest.mark.parametrize("arch", ARCHS)
def test_llrd_lr_and_decay_per_parameter(arch):
    model = tiny(arch)
    lr, weight_decay, eta = 1e-3, 0.01, 0.9
    groups = LLRD(eta).param_groups(model, lr, weight_decay)
    owner = group_of(groups)
    assert set(owner) == {id(p) for p in model.parameters()}
    prefix = model.base_model_prefix
    for name, p in model.named_parameters():
        layer = re.match(rf"{prefix}\.encoder\.layer\.(\d+)\.", name)
        if layer:
            expected_lr = lr * eta ** (DEPTH - int(layer[1]))
        elif name.startswith(f"{prefix}.embeddings."):
            expected_lr = lr * eta ** (DEPTH + 1)
        else:
            assert name.startswith(("classifier.", f"{prefix}.pooler.")), name
            assert owner[id(p)]["lr"] == lr and owner[id(p)]["weight_decay"] == 0.0, name
            continue
        assert owner[id(p)]["lr"] == pytest.approx(expected_lr), name
        assert owner[id(p)]["weight_decay"] == (0.0 if no_decay(name) else weight_decay), name
    top = dict(model.named_parameters())[f"{prefix}.encoder.layer.{DEPTH - 1}.output.dense.weight"]
    assert owner[id(top)]["lr"] == pytest.approx(lr * eta)
    names = [group["name"] for group in groups]
    assert names == ["embeddings", "embeddings/no_decay",
                     *(f"layer.{i}{suffix}" for i in range(DEPTH) for suffix in ("", "/no_decay")), "head"]
    torch.optim.AdamW(groups)


# ---------------------------------------------------------------------------------------------------------- ReInit


@pytest.mark.parametrize("arch", ARCHS)
def test_reinit_changes_top_layers_and_pooler_only(arch):
    std = 0.05
    model = tiny(arch, initializer_range=std)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # stands in for pre-trained weights, far from the initialiser
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    ReInit(num_layers=2).prepare(model)
    after = model.state_dict()
    prefix = model.base_model_prefix
    touched = (f"{prefix}.encoder.layer.4.", f"{prefix}.encoder.layer.5.", pooler_prefix(model))
    weights = []
    for name, value in after.items():
        if not name.startswith(touched):
            assert torch.equal(value, before[name]), name
        elif name.endswith("LayerNorm.weight"):
            assert torch.equal(value, torch.ones_like(value)), name
        elif name.endswith("bias"):
            assert torch.equal(value, torch.zeros_like(value)), name
        else:
            assert value.std().item() == pytest.approx(std, rel=0.2), name
            weights.append(value.flatten())
    assert len(weights) == 2 * 6 + 1
    weights = torch.cat(weights)
    assert weights.std().item() == pytest.approx(std, rel=0.05)
    assert abs(weights.mean().item()) < 0.005

    again = tiny(arch, initializer_range=std)
    again.load_state_dict(before)
    torch.manual_seed(3)
    ReInit(num_layers=2).prepare(again)
    assert all(torch.equal(v, after[k]) for k, v in again.state_dict().items())


def test_reinit_rejects_more_layers_than_the_model_has():
    ReInit(num_layers=DEPTH).prepare(tiny("bert"))
    with pytest.raises(ValueError, match="num_layers"):
        ReInit(num_layers=DEPTH + 1).prepare(tiny("bert"))


# ---------------------------------------------------------------------------------------------------------- WD_pre


@pytest.mark.parametrize("arch", ARCHS)
def test_wd_pre_pulls_towards_pretrained_and_head_towards_zero(arch):
    lr, coefficient, weight_decay = 0.1, 0.5, 0.2
    model = tiny(arch)
    imm = WDPre(coefficient)
    with pytest.raises(RuntimeError):
        imm.param_groups(model, lr, weight_decay)
    imm.prepare(model)
    pretrained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # fine-tuning moved every weight
    groups = imm.param_groups(model, lr, weight_decay)
    owner = group_of(groups)
    assert set(owner) == {id(p) for p in model.parameters()}
    prefix = model.base_model_prefix
    anchored = {
        n for n, _ in model.named_parameters()
        if n.startswith((f"{prefix}.embeddings.", f"{prefix}.encoder.")) and not no_decay(n)
    }
    params = dict(model.named_parameters())
    for name, p in params.items():
        expected = weight_decay if name not in anchored and not no_decay(name) else 0.0
        assert owner[id(p)]["weight_decay"] == expected, name

    optimizer = torch.optim.AdamW(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    for step in range(3):
        current_lr = lr / (1 + step)
        previous = {n: p.detach().clone() for n, p in params.items()}
        for p in params.values():
            p.grad = torch.zeros_like(p)  # Adam's own update is then exactly zero
        imm.before_optimizer_step(model, optimizer)
        optimizer.step()
        scheduler.step()
        for name, p in params.items():
            if name in anchored:
                expected = pretrained[name] + (previous[name] - pretrained[name]) * (1 - current_lr * coefficient)
            elif no_decay(name):
                expected = previous[name]
            else:
                expected = previous[name] * (1 - current_lr * weight_decay)
            assert torch.allclose(p, expected, rtol=1e-5, atol=1e-6), (step, name)


# ------------------------------------------------------------------------------------------------ configs, options


@pytest.mark.parametrize(
    ("config", "cls", "description"),
    [
        ("none", Standard, {"name": "none"}),
        ("mixout", Mixout, {"name": "mixout", "p": 0.1, "mask": "unit"}),
        ("llrd", LLRD, {"name": "llrd", "eta": 0.95}),
        ("reinit", ReInit, {"name": "reinit", "num_layers": 5}),
        ("wd_pre", WDPre, {"name": "wd_pre", "coefficient": 0.01}),
    ],
)
def test_hydra_config_instantiates(config, cls, description):
    imm = instantiate(OmegaConf.load(REPO / "conf" / "imm" / f"{config}.yaml"))
    assert type(imm) is cls
    assert imm.describe() == description


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: Mixout(p=1.0), "p"),
        (lambda: Mixout(mask="neuron"), "mask"),
        (lambda: LLRD(eta=0.0), "eta"),
        (lambda: ReInit(num_layers=-1), "num_layers"),
        (lambda: WDPre(coefficient=-0.1), "coefficient"),
    ],
)
def test_invalid_options_are_rejected(build, option):
    with pytest.raises(ValueError, match=option):
        build()
