"""The one definition of a training setting: what it holds, and everything derived from it."""

import pytest
from helpers.config import REPO, compose_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from instability.setting import IRRELEVANT, display_names, setting_dir, setting_id, setting_name, setting_of


def test_a_new_config_key_is_part_of_the_setting_unless_declared_irrelevant(tmp_path):
    base = setting_of(compose_train(tmp_path))
    assert setting_of(compose_train(tmp_path, "+module.new_knob=3"))["module.new_knob"] == 3
    assert setting_id(setting_of(compose_train(tmp_path, "+data.new_option=x"))) != setting_id(base)
    for key in ("+logger.new_option=1", "+wandb.entity=me", "+paths.elsewhere=/x", "seed=7", "name=other",
                "trainer.enable_progress_bar=true", "trainer.devices=2", "data.num_workers=3"):
        assert setting_of(compose_train(tmp_path, key)) == base, key


@pytest.mark.parametrize("override", ["module.dropout=0.0", "module.weight_decay=0.1", "module.warmup_ratio=0.2",
                                      "data.batch_size=32", "data.split_seed=1", "data.max_length=64",
                                      "eval_per_epoch=2", "trainer.precision=bf16-mixed", "imm=llrd",
                                      "measure_checkpoint=final", "module.adam_eps=1e-8", "tf32=true"])
def test_every_key_that_changes_a_run_changes_the_setting(tmp_path, override):
    base, changed = setting_of(compose_train(tmp_path)), setting_of(compose_train(tmp_path, override))
    assert setting_id(changed) != setting_id(base)
    assert setting_dir(changed) != setting_dir(base) and setting_name(changed) != setting_name(base)


def test_the_setting_resolves_the_same_way_inside_the_hydra_job_folder(tmp_path):
    """The job folder Hydra names through `${setting_dir:}` is the one derived from the job's own setting."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny-roberta", "regime=failed"], return_hydra_config=True)
    subdir = OmegaConf.select(cfg, "hydra.sweep.subdir")
    assert subdir == f"{setting_dir(setting_of(cfg))}/seed0"
    assert subdir.startswith("rte/tiny-roberta/none-lr3e-05-ep5-final-")


def test_irrelevant_keys_are_spelt_as_config_keys():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=["logger=wandb"], return_hydra_config=True))
    for key in IRRELEVANT:
        node = cfg
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key} names no config key"
            node = node[part]


def test_display_names_show_what_differs_among_the_settings(tmp_path):
    a, b = setting_of(compose_train(tmp_path)), setting_of(compose_train(tmp_path, "module.dropout=0.0"))
    first, second = display_names([a, b])
    assert first.endswith("module.dropout=0.1") and second.endswith("module.dropout=0")
    assert display_names([a]) == ["rte-tiny-bert-none-lr2e-05-n32-ep1"]
