"""The LightningDataModule: tokenise a GLUE task once (cached on disk), serve the train set and the two dev halves."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from instability.data.authors_split import authors_split
from instability.data.glue import (
    Split,
    TaskSpec,
    get_task,
    load_split,
    majority_class,
    resolve_glue_dir,
    split_dev,
    subsample_train,
)

DEFAULT_CACHE_DIR = Path(os.environ.get("INSTABILITY_CACHE", Path.home() / ".cache" / "instability"))
SPLITS = ("seeded", "authors")


class GlueDataModule(pl.LightningDataModule):
    """Train set (optionally a fixed random subset), validation half and test half of a GLUE dev set.

    The dev split depends on `split_seed` only (or, with `split="authors"`, is the paper authors' split; see
    `authors_split`) and the train subset on `train_subset_seed` only, so all training seeds of a sweep see the
    same data. `task` is a task's name (`conf/task/<name>.yaml`), its config, or its `TaskSpec`. `batch_size` is
    the global training batch: under DDP each process loads batch_size / world size.
    """

    def __init__(
        self,
        task: str | Mapping[str, Any] | TaskSpec,
        tokenizer: PreTrainedTokenizerBase,
        glue_dir: str | None = None,
        split_seed: int = 42,
        train_size: int | None = None,
        train_subset_seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        max_length: int = 128,
        num_workers: int = 0,
        cache_dir: str | None = None,
        split: str = "seeded",
        split_model: str | None = None,
        check_rows: bool = True,
    ) -> None:
        super().__init__()
        self.task = get_task(task)
        _check_options(self.task.text_columns, tokenizer, split, train_size, batch_size, eval_batch_size, max_length)
        self.tokenizer = tokenizer
        self.glue_dir = glue_dir
        self.split_seed = split_seed
        self.train_size = train_size
        self.train_subset_seed = train_subset_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_length = max_length
        self.num_workers = num_workers
        self.split = split
        self.split_model = split_model
        self.check_rows = check_rows
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR
        self.collate = DataCollatorWithPadding(tokenizer)
        self.splits: dict[str, Split] = {}
        self.encoded: dict[str, datasets.Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Read, split and tokenise (once: later calls and later jobs with the same inputs reuse the result)."""
        if self.encoded:
            return
        glue_dir = resolve_glue_dir(self.glue_dir)
        train, dev = (load_split(self.task, name, glue_dir, self.check_rows) for name in ("train", "dev"))
        if len(dev) < 2:
            source = glue_dir / self.task.folder / self.task.files["dev"] if glue_dir else \
                f"the hub's {self.task.name} dev set"
            raise ValueError(f"{source}: {len(dev)} row(s); splitting dev into two halves needs at least 2")
        if self.split == "authors":
            val_pos, test_pos = authors_split(self.task.name, dev.labels, self.split_model)
        else:
            val_pos, test_pos = split_dev(len(dev), self.split_seed)
        self.splits = {
            "train": train.subset(subsample_train(len(train), self.train_size, self.train_subset_seed)),
            "val": dev.subset(val_pos),
            "test": dev.subset(test_pos),
        }
        self.encoded = {name: self._tokenise(name, split) for name, split in self.splits.items()}

    def _tokenise(self, name: str, split: Split) -> datasets.Dataset:
        columns = {f"text{i}": texts for i, texts in enumerate(split.texts)}
        table = datasets.Dataset.from_dict({**columns, "labels": split.labels.tolist()})
        fields = list(columns)

        def encode(batch: dict) -> dict:
            return self.tokenizer(*(batch[f] for f in fields), truncation=True, max_length=self.max_length)

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        cache_file = self.cache_dir / f"{self.task.name}-{name}-{self._fingerprint(split)}.arrow"
        encoded = table.map(encode, batched=True, remove_columns=fields, cache_file_name=str(cache_file))
        return encoded.with_format("python")

    def _fingerprint(self, split: Split) -> str:
        """Hash of everything the tokenised split depends on: texts, labels, tokenizer, maximum length."""
        digest = hashlib.sha256()
        digest.update(json.dumps([split.texts, split.labels.tolist(), self.max_length]).encode())
        digest.update(json.dumps(self.tokenizer.get_vocab(), sort_keys=True).encode())
        digest.update(type(self.tokenizer).__name__.encode())
        digest.update(json.dumps(self.tokenizer.init_kwargs.get("do_lower_case")).encode())
        return digest.hexdigest()[:16]

    @property
    def world_size(self) -> int:
        """Processes that share the training batch: the attached trainer's world size, else 1."""
        return int(self.trainer.world_size) if self.trainer is not None else 1

    @property
    def per_device_batch_size(self) -> int:
        """The training batch of each process: the global `batch_size` split evenly over the world size."""
        world = self.world_size
        if self.batch_size % world:
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch and must divide evenly over the "
                f"{world} training processes (world size {world}); choose a multiple of {world}"
            )
        return self.batch_size // world

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.encoded[name],
            batch_size=self.per_device_batch_size if name == "train" else self.eval_batch_size,
            shuffle=shuffle,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def majority_label_of(self, name: str) -> int:
        """The majority class of a split's own labels: the failed-run baseline of the half being scored."""
        return majority_class(self.labels(name))

    def ids(self, name: str) -> np.ndarray:
        """Example ids (row positions in the GLUE file) of a split, in loader order."""
        return self.splits[name].ids

    def labels(self, name: str) -> np.ndarray:
        """Gold labels of a split, in loader order."""
        return self.splits[name].labels


def _check_options(
    text_columns: tuple, tokenizer: PreTrainedTokenizerBase, split: str, train_size: int | None,
    batch_size: int, eval_batch_size: int, max_length: int,
) -> None:
    """Reject option values that would fail later or, worse, run with another setting than the record says."""
    if split not in SPLITS:
        raise ValueError(f"data.split={split!r}: choose one of {', '.join(SPLITS)}")
    for option, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("train_size", train_size)):
        if value is not None and value <= 0:
            raise ValueError(f"data.{option}={value} must be a positive number of examples")
    # Below the special-token count the tokenizer skips truncation altogether (with only a warning); at it, an
    # example keeps no text. So every text field must keep at least one token besides the special tokens.
    num_texts = len(text_columns)
    special = tokenizer.num_special_tokens_to_add(pair=num_texts == 2)
    if max_length < special + num_texts:
        raise ValueError(
            f"data.max_length={max_length} is too short: the tokenizer adds {special} special tokens to each "
            f"example and each of its {num_texts} text(s) needs at least one token, so it must be at least "
            f"{special + num_texts} (below {special} truncation is silently skipped)"
        )
