"""The measures of one setting (SPEC section 2), from pair matrices computed once per setting.

The expensive part, one [M, M] matrix per pair measure and one [L, M, M] stack per representation measure,
is computed once (`pair_matrices`). A bootstrap replicate, a group of runs or a permutation is then an index
of model positions: `measure_values` reduces the matrices with `mean_over_pairs` and recomputes SD, the mean
and the chance agreement of I_kappa on the chosen rows. A subset of examples needs new matrices
(`pair_matrices(..., examples=...)`).

Self-pairs: an index that repeats a run (a bootstrap replicate) makes pairs of a run with itself. Every pair
measure of one replicate follows the same convention, I_kappa included: 1 - kappa = (1 - Pbar) / (1 - P_e)
and Pbar = 1 - I_pwd, so I_kappa is computed as I_pwd over the same pairs divided by 1 - P_e, with P_e from the
replicate's predictions (a repeated run counted as often as it is drawn, as SD counts it). With self-pairs kept
this is exactly Fleiss' kappa of the repeated raters (the released notebook); with self-pairs dropped (the
default) a repeated run adds no agreement with itself. Without repeats both are textbook Fleiss' kappa.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from instability.measures.functional import (
    mean_over_pairs,
    pairwise_disagreement_matrix,
    pairwise_jsd_matrix,
    pairwise_representation_distances,
    score_sd,
)
from instability.models.metrics import score

MEAN = "mean"  # the task metric's mean over seeds (reported beside the measures, not an instability)
PREDICTION = ("SD", "I_pwd", "I_kappa", "I_jsd")
REPRESENTATION = {"SVCCA": "svcca", "OP": "op", "CKA": "cka"}  # label -> measures-package name
HEADLINE = (*PREDICTION, *REPRESENTATION)  # the representation measures at the last layer
ALL = (MEAN, *HEADLINE)
PAPER = ("SD", "I_pwd", "I_kappa", "I_jsd", "OP", "CKA")  # the paper's bootstrap and SD-vs-agreement measures


@dataclass(frozen=True)
class MeasureOptions:
    """Choices the measures offer (SPEC: debiased CKA and textbook Fleiss' kappa are the defaults), and the
    number of threads computing representation measures."""

    cka_debiased: bool = True
    kappa_chance: str = "textbook"
    workers: int = 1

    def representation_kwargs(self, label: str) -> dict[str, bool]:
        return {"debiased": self.cka_debiased} if label == "CKA" else {}


@dataclass
class PairMatrices:
    """Pair matrices of one setting: [M, M] for I_pwd and I_jsd, [L, M, M] per representation measure.

    A layer where a representation measure is undefined (e.g. a run's states are constant over examples)
    holds NaN and is explained in `notes`.
    """

    prediction: dict[str, torch.Tensor]
    representation: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)


def pair_matrices(
    logits: torch.Tensor,
    hidden: torch.Tensor,
    options: MeasureOptions,
    examples: torch.Tensor | None = None,
    runs: list[str] | None = None,
    advance: Callable[[int], None] = lambda steps: None,
) -> PairMatrices:
    """All pair matrices for logits [M, N, C] and hidden states [M, L, N, D], on all examples or on `examples`.

    Representation measures run one (measure, layer) at a time, so a float32 stack is never copied whole, on
    `options.workers` threads with single-threaded torch (see `single_threaded_torch`). `advance(1)` reports
    each (measure, layer) done; `runs` names the runs in notes.
    """
    if examples is not None:
        logits = logits[:, examples]
    predictions = logits.argmax(-1)
    prediction = {"I_pwd": pairwise_disagreement_matrix(predictions),
                  "I_jsd": pairwise_jsd_matrix(logits, from_logits=True)}
    num_models, num_layers = hidden.shape[:2]

    def one(label: str, layer: int) -> tuple[torch.Tensor | None, str | None]:
        states = hidden[:, layer : layer + 1]
        if examples is not None:
            states = states[:, :, examples]
        try:
            kwargs = options.representation_kwargs(label)
            return pairwise_representation_distances(states, REPRESENTATION[label], **kwargs)[0], None
        except ValueError as error:
            return None, f"{label} undefined at layer {layer + 1}: {error}{_constant_runs(states, runs)}"
        finally:
            advance(1)

    jobs = [(label, layer) for label in REPRESENTATION for layer in range(num_layers)]
    with single_threaded_torch(), ThreadPoolExecutor(options.workers) as pool:
        outcomes = list(pool.map(lambda job: one(*job), jobs))
    representation = {label: torch.full((num_layers, num_models, num_models), float("nan"), dtype=torch.float64)
                      for label in REPRESENTATION}
    notes = []
    for (label, layer), (matrix, note) in zip(jobs, outcomes):
        if matrix is None:
            notes.append(note)
        else:
            representation[label][layer] = matrix
    return PairMatrices(prediction, representation, notes)


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Torch and numpy's BLAS on one thread inside the block. On a shared CPU, intra-op threads make the analysis's
    many small ops and LAPACK calls up to a thousand times slower; parallelism comes from worker threads instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def _constant_runs(states: torch.Tensor, runs: list[str] | None) -> str:
    """Names of the runs whose states [M, 1, N, D] do not vary over examples."""
    constant = (states.amax(-2) == states.amin(-2)).all(-1).flatten()
    if runs is None or not bool(constant.any()):
        return ""
    return " (constant over examples in " + ", ".join(run for run, flag in zip(runs, constant.tolist()) if flag) + ")"


def measure_values(
    scores: torch.Tensor,
    predictions: torch.Tensor,
    num_classes: int,
    pairs: PairMatrices,
    options: MeasureOptions,
    index: torch.Tensor | None = None,
    keep_self_pairs: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every measure of the runs at positions `index` (all runs when None; repeats allowed, as in a bootstrap).

    Returns the values (0-d arrays, [L] for representation measures) and, per measure that is undefined
    here, why (its value is NaN).
    """
    rows = torch.arange(scores.numel()) if index is None else index
    values: dict[str, np.ndarray] = {}
    problems: dict[str, str] = {}

    def attempt(label: str, compute: Callable[[], torch.Tensor], shape: tuple[int, ...] = ()) -> None:
        try:
            values[label] = compute().double().numpy()
        except ValueError as error:
            values[label], problems[label] = np.full(shape, np.nan), str(error)

    values[MEAN] = np.asarray(float(scores[rows].mean()))
    attempt("SD", lambda: score_sd(scores[rows]))
    attempt("I_pwd", lambda: mean_over_pairs(pairs.prediction["I_pwd"], rows, keep_self_pairs))
    attempt("I_kappa", lambda: kappa_instability(pairs.prediction["I_pwd"], predictions, num_classes, rows,
                                                 options.kappa_chance, keep_self_pairs))
    attempt("I_jsd", lambda: mean_over_pairs(pairs.prediction["I_jsd"], rows, keep_self_pairs))
    for label, stack in pairs.representation.items():
        attempt(label, lambda: layer_means(stack, rows, keep_self_pairs), (stack.shape[0],))
    return values, problems


def chance_agreement(predictions: torch.Tensor, num_classes: int, chance: str) -> torch.Tensor:
    """Fleiss' P_e of predictions [M, N]: sum_c p_c^2 (textbook), or the released notebook's 1/N."""
    if chance == "released":
        return torch.tensor(1.0 / predictions.shape[-1], dtype=torch.float64)
    counts = torch.bincount(predictions.flatten(), minlength=num_classes).double()
    return ((counts / counts.sum()) ** 2).sum()


def kappa_instability(
    disagreement: torch.Tensor, predictions: torch.Tensor, num_classes: int, rows: torch.Tensor, chance: str,
    keep_self_pairs: bool,
) -> torch.Tensor:
    """I_kappa = 1 - Fleiss' kappa of the runs at `rows`, as I_pwd over the same pairs / (1 - P_e) (module doc)."""
    expected = chance_agreement(predictions[rows], num_classes, chance)
    if bool(expected >= 1.0):
        raise ValueError("Fleiss' kappa is undefined: chance agreement P_e is 1 (one class everywhere, or N = 1)")
    return mean_over_pairs(disagreement, rows, keep_self_pairs).double() / (1.0 - expected)


def layer_means(stack: torch.Tensor, rows: torch.Tensor, keep_self_pairs: bool) -> torch.Tensor:
    """mean_over_pairs per layer, NaN where the layer's matrix is undefined."""
    defined = ~stack.isnan().any(-1).any(-1)
    result = torch.full((stack.shape[0],), float("nan"), dtype=torch.float64)
    if bool(defined.any()):
        result[defined] = mean_over_pairs(stack[defined], rows, keep_self_pairs)
    return result


def subset_scores(predictions: torch.Tensor, gold: torch.Tensor, metric: str) -> torch.Tensor:
    """The task metric [M] of each run's predictions [M, n] against gold labels [n] (for example subsets)."""
    return torch.tensor([score((metric,), row, gold)[metric] for row in predictions], dtype=torch.float64)


def headline(values: dict[str, np.ndarray]) -> dict[str, float]:
    """The table's numbers: prediction measures, and representation measures at the last layer."""
    return {label: float(np.asarray(values[label]).reshape(-1)[-1]) for label in ALL}
