"""Every GLUE classification task as data (conf/task/*.yaml): GLUE's metrics, C classes, files in the official
layout (small slices written here for the tasks the shared data lacks), short fits, and 3-class MNLI records through
every measure of the analysis (issue #16)."""

import math

import numpy as np
import pytest
import torch
from helpers.analysis import run_analysis
from helpers.config import REPO, compose_train
from helpers.records import base_hidden, noisy, setting
from omegaconf import OmegaConf
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from instability.data.glue import TaskSpec, get_task, load_split, split_dev
from instability.models.metrics import score
from instability.records import Halves, Outputs, build_record, read_record, write_record
from instability.train import run

# GLUE's metrics (the first is the task metric), number of classes, folder and dev file.
GLUE = {
    "cola": (("mcc",), 2, "CoLA", "dev.tsv"),
    "sst2": (("accuracy",), 2, "SST-2", "dev.tsv"),
    "mrpc": (("f1", "accuracy"), 2, "MRPC", "dev.tsv"),
    "qqp": (("f1", "accuracy"), 2, "QQP", "dev.tsv"),
    "mnli": (("accuracy",), 3, "MNLI", "dev_matched.tsv"),
    "mnli_mm": (("accuracy",), 3, "MNLI", "dev_mismatched.tsv"),
    "qnli": (("accuracy",), 2, "QNLI", "dev.tsv"),
    "rte": (("accuracy",), 2, "RTE", "dev.tsv"),
    "wnli": (("accuracy",), 2, "WNLI", "dev.tsv"),
}
MNLI_PARSES = ["sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse", "sentence2_parse"]
# Official headers; a row is made from (row number, text a, text b, label string).
LAYOUTS = {
    "QQP": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            lambda i, a, b, y: [str(i), str(2 * i), str(2 * i + 1), a, b, y], ["0", "1"]),
    "QNLI": (["index", "question", "sentence", "label"], lambda i, a, b, y: [str(i), a, b, y],
             ["entailment", "not_entailment"]),
    "WNLI": (["index", "sentence1", "sentence2", "label"], lambda i, a, b, y: [str(i), a, b, y], ["0", "1"]),
}
MNLI_LABELS = ["entailment", "neutral", "contradiction"]
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", '"quoted"', "fast", "slowly", "red", "blue", "house",
         "tree", "river"]


def sentence(i: int, salt: int) -> str:
    rng = np.random.default_rng(1000 * salt + i)
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))


def labels_of(rows: int, classes: int, salt: int) -> list[int]:
    return np.random.default_rng(salt).integers(0, classes, size=rows).tolist()


def write_tsv(path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n", encoding="utf-8")


def write_slices(root, train_rows: int = 24, dev_rows: int = 40) -> dict:
    """QQP, MNLI (train, dev_matched, dev_mismatched), QNLI and WNLI slices in the official layout; returns, per
    (folder, file), the labels written (as classes) and the first text of row 1."""
    written = {}
    for folder, (header, make_row, names) in LAYOUTS.items():
        for salt, (file, rows) in enumerate((("train.tsv", train_rows), ("dev.tsv", dev_rows))):
            labels = labels_of(rows, len(names), salt + len(folder))
            write_tsv(root / folder / file, header,
                      [make_row(i, sentence(i, salt), sentence(i, salt + 7), names[y]) for i, y in enumerate(labels)])
            written[(folder, file)] = labels, sentence(1, salt)
    for salt, (file, rows) in enumerate((("train.tsv", train_rows), ("dev_matched.tsv", dev_rows),
                                         ("dev_mismatched.tsv", dev_rows + 2))):
        annotators = ["label1"] if file == "train.tsv" else [f"label{k}" for k in range(1, 6)]
        header = ["index", "promptID", "pairID", "genre", *MNLI_PARSES, "sentence1", "sentence2", *annotators,
                  "gold_label"]
        labels = labels_of(rows, 3, 40 + salt)
        written[("MNLI", file)] = labels, sentence(1, salt)
        write_tsv(root / "MNLI" / file, header, [
            [str(i), str(i), f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", sentence(i, salt),
             sentence(i, salt + 3), *[MNLI_LABELS[y]] * len(annotators), MNLI_LABELS[y]] for i, y in enumerate(labels)])
    return written


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue_slices")
    return root, write_slices(root)


# ---------------------------------------------------------------------------------------------------- task configs


@pytest.mark.parametrize("name", GLUE)
def test_every_glue_classification_task_is_a_config(name, tmp_path):
    metrics, classes, folder, dev_file = GLUE[name]
    task = get_task(name)
    assert (task.metrics, task.num_labels, task.folder, task.files["dev"]) == (metrics, classes, folder, dev_file)
    cfg = compose_train(tmp_path, f"task={name}")
    assert cfg.task.name == name and TaskSpec.from_config(cfg.task) == task


def test_stsb_is_refused_before_training_with_its_reason(train_cfg):
    with pytest.raises(ValueError, match="task=stsb is not supported: STS-B is a regression task"):
        get_task("stsb")
    with pytest.raises(ValueError, match="regression"):
        run(train_cfg("task=stsb"))


@pytest.mark.parametrize(("change", "message"), [
    ({"metrics": ["f1"]}, r"\['f1'\] are defined for binary tasks only, not for 3 classes"),
    ({"metrics": ["auc"]}, "unknown metric"),
    ({"label_map": {"entailment": 0, "neutral": 2, "contradiction": 3}}, "classes 0..C-1"),
    ({"text_columns": ["a", "b", "c"]}, "1 or 2 texts"),
    ({"expected_rows": {"train": 1}}, "expected_rows must have exactly train, dev"),
    ({"lable_map": {}}, r"unknown keys \['lable_map'\]"),
])
def test_task_configs_are_checked(change, message):
    config = {**OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "task" / "mnli.yaml")), **change}
    with pytest.raises(ValueError, match=message):
        TaskSpec.from_config(config)


# ----------------------------------------------------------------------------------------------- official layout


@pytest.mark.parametrize("name", ["qqp", "mnli", "mnli_mm", "qnli", "wnli"])
def test_slices_in_the_official_layout_are_read(slices, name):
    root, written = slices
    task = get_task(name)
    dev = load_split(task, "dev", root, check_rows=False)
    expected, text = written[(task.folder, task.files["dev"])]
    assert dev.labels.tolist() == expected and np.array_equal(dev.ids, np.arange(len(expected)))
    assert len(dev.texts) == 2 and dev.texts[0][1] == text and '"quoted"' in " ".join(dev.texts[0] + dev.texts[1])
    official = task.expected_rows["dev"]
    message = rf"{len(expected)} data rows, but the official GLUE {name} dev set has {official}"
    with pytest.raises(ValueError, match=message):
        load_split(task, "dev", root)


# ------------------------------------------------------------------------------------------------------ short fits


def fit(train_cfg, name: str, root=None, *overrides: str):
    data = [f"data.glue_dir={root}", "data.check_rows=false"] if root is not None else []
    cfg = train_cfg(f"task={name}", *data, "data.train_size=16", *overrides)
    run(cfg)
    return read_record(cfg.paths.output_dir)


@pytest.mark.parametrize("name", ["qqp", "mnli", "mnli_mm", "qnli", "wnli", "sst2"])  # cola, mrpc, rte: test_train
def test_short_fit_per_task_records_glue_metrics(train_cfg, slices, name):
    root, written = slices
    metrics, classes, folder, dev_file = GLUE[name]
    record = fit(train_cfg, name, None if name == "sst2" else root)
    assert record.finished and record.task == name and record.meta["metric"] == metrics[0]
    for checkpoint in ("best", "final"):
        assert set(record.meta["metrics"][checkpoint]["test"]) == set(metrics)
    n = record.labels.numel()
    assert record.logits("best").shape == (n, classes) and record.meta["shapes"]["classes"] == classes
    if name != "sst2":
        dev_labels = np.asarray(written[(folder, dev_file)][0])
        assert record.labels.tolist() == dev_labels[split_dev(len(dev_labels), 42)[1]].tolist()
    majority = int(torch.bincount(record.labels).argmax())
    baseline = score((metrics[0],), torch.full_like(record.labels, majority), record.labels)[metrics[0]]
    assert record.majority_baseline == pytest.approx(baseline)


def test_multiclass_metrics_match_their_definitions():
    generator = torch.Generator().manual_seed(0)
    preds, gold = torch.randint(0, 3, (2, 300), generator=generator)
    assert score(("accuracy",), preds, gold)["accuracy"] == pytest.approx(float((preds == gold).double().mean()))
    # Gorodkin's R_K: the correlation of one-hot label vectors, summed over classes
    x, y = (np.eye(3)[t.numpy()] for t in (gold, preds))
    x, y = x - x.mean(0), y - y.mean(0)
    expected = (x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum())
    assert score(("mcc",), preds, gold)["mcc"] == pytest.approx(expected)
    assert score(("mcc",), torch.full_like(gold, 2), gold)["mcc"] == 0.0  # one predicted class
    with pytest.raises(ValueError, match="binary tasks only"):
        score(("f1",), preds, gold)


# ------------------------------------------------------------------------------------------------ 3-class analysis


def write_three_class_runs(root, runs: int = 5, examples: int = 42) -> torch.Tensor:
    """MNLI-like records: gold = class i % 3; run r relabels its own block of 2 examples to the next class."""
    gold = torch.arange(examples) % 3
    states = base_hidden(examples=examples)
    predictions = []
    for seed in range(runs):
        predicted = gold.clone()
        block = slice(2 * seed, 2 * seed + 2)
        predicted[block] = (predicted[block] + 1) % 3
        predictions.append(predicted)
        logits = torch.nn.functional.one_hot(predicted, 3).float() * 2 - 1
        outputs = Outputs(logits, noisy(states, [0.1, 0.2, 0.3, 0.4], seed), torch.zeros(6, 3))
        halves = Halves(torch.arange(examples), gold, torch.arange(6), torch.arange(6) % 3)
        meta, tensors = build_record(seed=seed, setting=setting(task="mnli"), metrics=("accuracy",), halves=halves,
                                     outputs={"best": outputs, "final": outputs}, config={"seed": seed})
        assert meta["majority"] == {"label": 0, "baseline": pytest.approx(14 / 42)}  # the majority class's share
        write_record(root / str(seed), meta, tensors)
    return torch.stack(predictions)


def test_three_classes_flow_through_every_measure(tmp_path):
    predictions = write_three_class_runs(tmp_path / "sweep")
    result, _ = run_analysis(tmp_path / "sweep", tmp_path / "out")  # every analysis, with light defaults
    (found,) = result.settings
    values = {name: np.asarray(value) for name, value in found.values.items()}
    assert all(np.isfinite(value).all() for value in values.values()), values
    runs, examples = predictions.shape
    counts, _ = aggregate_raters(predictions.T.numpy(), n_cat=3)
    assert float(values["I_kappa"]) == pytest.approx(1 - fleiss_kappa(counts, method="fleiss"))
    assert float(values["I_pwd"]) == pytest.approx(4 / examples)  # disjoint blocks of 2: every pair differs on 4
    assert 0 < float(values["I_jsd"]) <= math.log(2)
    assert found.failed == [False] * runs and found.bootstrap is not None and found.subsampling


def test_mnli_fit_records_are_analysed(train_cfg, slices, tmp_path):
    root, _ = slices
    records = [fit(train_cfg, "mnli", root, f"seed={seed}", "module.lr=1e-3") for seed in range(3)]
    assert {tuple(r.logits("best").shape) for r in records} == {(20, 3)}
    result, _ = run_analysis([r.path.parent for r in records], tmp_path / "out", "layer_trend=false",
                             "failed_runs.enabled=false", "subsampling.enabled=false", "bootstrap.enabled=false",
                             "benchmark.enabled=false")
    (found,) = result.settings
    assert found.num_examples == 20 and found.num_layers == 2
    for measure in ("I_pwd", "I_jsd", "OP", "CKA"):
        assert np.isfinite(np.asarray(found.values[measure])).all(), measure
