"""The paper authors' dev halves, replayed exactly (`data.split=authors`).

The authors' `save_eval_data.py` (github.com/nlpsoc/instability_measurement) calls `transformers.set_seed(123)`
on import, then for each task and model loads the hub's GLUE validation set and calls
`Dataset.train_test_split(test_size=0.5)` without a seed. Their pinned `datasets==1.9.0` then reads
`seed = np.random.get_state()[1][0]` (the first word of the global Mersenne Twister key), steps the global
RNG once (`np.random.random()`) and permutes with `np.random.default_rng(seed)`: the first ceil(n/2) positions
of the permutation are the test half, the rest the validation half (their `val_test['train']`).

After `np.random.seed(123)` that first key word is 123. The first step regenerates the key, whose first word
is then 1122872025 until the key is used up 312 steps later. So the first split of a process permutes with
123 and every later one (2nd to 313th) with 1122872025: only two splits of each dev set can occur.

Which one each task and model got follows from the majority-class fractions of the test halves printed by
the authors' notebook (`analyze_measures.ipynb`), which the two replays reproduce on the official GLUE files
(same row order as the hub's): CoLA 346/522 with the first draw for both models; RTE 72/139 and MRPC 137/204
with a later draw for both models (the first would give 76 and 138); SST-2 221/436 with the first draw for
BERT and 220/436 with a later draw for RoBERTa. So the split of RTE, MRPC and CoLA does not depend on the
model; that of SST-2 does (by model family, from the `model` hint). The replay only uses a local
`RandomState`: the global numpy RNG is left untouched.
"""

from __future__ import annotations

import math

import numpy as np

AUTHORS_SET_SEED = 123  # transformers.set_seed(123) in save_eval_data.py

# (task, model family) -> (which unseeded train_test_split call of the process, majority count of the test half
# in the authors' notebook). The count is checked: data in another row order cannot pass for the authors' halves.
AUTHORS_DRAWS: dict[tuple[str, str], tuple[int, int]] = {
    ("cola", "bert"): (1, 346),
    ("cola", "roberta"): (1, 346),
    ("mrpc", "bert"): (2, 137),
    ("mrpc", "roberta"): (2, 137),
    ("rte", "bert"): (2, 72),
    ("rte", "roberta"): (2, 72),
    ("sst2", "bert"): (1, 221),
    ("sst2", "roberta"): (2, 220),
}
FAMILIES = ("bert", "roberta")


def draw_seed(draw: int, set_seed: int = AUTHORS_SET_SEED) -> int:
    """The seed `datasets` 1.9.0 derives for the `draw`-th unseeded split after `np.random.seed(set_seed)`."""
    if draw < 1:
        raise ValueError(f"draw={draw}: draws are counted from 1")
    state = np.random.RandomState(set_seed)
    for _ in range(draw - 1):
        state.random_sample()  # the one step each earlier split takes
    return int(state.get_state()[1][0])


def replay_split(num_examples: int, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the validation and test halves of the `draw`-th split, each sorted.

    As `Dataset.train_test_split(test_size=0.5)`: the test half is the first ceil(n/2) of the permutation.
    """
    order = np.random.default_rng(draw_seed(draw)).permutation(num_examples)
    num_test = math.ceil(0.5 * num_examples)
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def model_family(model: str | None) -> str | None:
    """`roberta` or `bert` when the model name contains it (RoBERTa names contain both), else None."""
    name = (model or "").lower()
    return next((family for family in ("roberta", "bert") if family in name), None)


def authors_split(task: str, labels: np.ndarray, model: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The authors' validation and test halves of a dev set (positions, sorted), given its labels in file order.

    Refuses (naming `data.split`) a task the authors did not split, an SST-2 split without a BERT or RoBERTa
    model hint, and data on which the replay does not give the notebook's majority count.
    """
    draws = {family: AUTHORS_DRAWS.get((task, family)) for family in FAMILIES}
    if not all(draws.values()):
        known = sorted({name for name, _ in AUTHORS_DRAWS})
        raise ValueError(f"data.split=authors: the authors split only {', '.join(known)}, not {task!r}")
    family = model_family(model)
    if family is None and len(set(draws.values())) > 1:
        raise ValueError(
            f"data.split=authors on {task}: the authors' halves differ between BERT and RoBERTa models "
            f"(different draws of their split script), and data.split_model={model!r} names neither"
        )
    draw, majority = draws[family or FAMILIES[0]]
    val, test = replay_split(len(labels), draw)
    found = int(np.bincount(labels[test]).max())
    if found != majority:
        raise ValueError(
            f"data.split=authors on {task}: the replayed test half has a majority class of {found} of {len(test)} "
            f"examples, where the authors' notebook has {majority}, so these are not the authors' halves "
            "(other data or another row order than the official GLUE files); use data.split=seeded"
        )
    return val, test
