"""The torchmetrics classes in two processes (gloo, CPU): each sees half of the examples, and the gathered state
gives the functional result on all the data, as their docstrings claim."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from instability.measures import (
    FleissKappaInstability,
    LinearCKADistance,
    PairwiseDisagreement,
    PairwiseJSD,
    ProcrustesDistance,
    SVCCADistance,
    fleiss_kappa_instability,
    mean_over_pairs,
    pairwise_disagreement,
    pairwise_jsd,
    pairwise_representation_distances,
)

MODELS, EXAMPLES, LAYERS, DIM, CLASSES = 4, 30, 2, 6, 3


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    labels = torch.randint(0, CLASSES, (MODELS, EXAMPLES), generator=generator)
    logits = torch.randn(MODELS, EXAMPLES, CLASSES, generator=generator, dtype=torch.float64)
    hidden = torch.randn(MODELS, LAYERS, EXAMPLES, DIM, generator=generator, dtype=torch.float64)
    return labels, logits, hidden


def reference() -> dict[str, torch.Tensor]:
    labels, logits, hidden = data()
    values = {"pwd": pairwise_disagreement(labels), "kappa": fleiss_kappa_instability(labels, CLASSES),
              "jsd": pairwise_jsd(logits, from_logits=True)}
    for name in ("svcca", "op", "cka"):
        values[name] = mean_over_pairs(pairwise_representation_distances(hidden, name))
    return values


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    labels, logits, hidden = data()
    half = slice(0, EXAMPLES // 2) if rank == 0 else slice(EXAMPLES // 2, EXAMPLES)
    metrics = {"pwd": PairwiseDisagreement(), "kappa": FleissKappaInstability(num_classes=CLASSES),
               "jsd": PairwiseJSD(from_logits=True), "svcca": SVCCADistance(), "op": ProcrustesDistance(),
               "cka": LinearCKADistance()}
    inputs = {"pwd": labels[:, half], "kappa": labels[:, half], "jsd": logits[:, half],
              "svcca": hidden[:, :, half], "op": hidden[:, :, half], "cka": hidden[:, :, half]}
    for batch in (slice(0, 7), slice(7, None)):  # two batches per process; examples are dim 1 (hidden: dim 2)
        for name, metric in metrics.items():
            metric.update(inputs[name][:, :, batch] if name in ("svcca", "op", "cka") else inputs[name][:, batch])
    results = {name: metric.compute() for name, metric in metrics.items()}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_gathered_state_equals_the_functional_result_on_all_data(tmp_path):
    out = str(tmp_path / "results.pt")
    mp.spawn(worker, args=(free_port(), out), nprocs=2, join=True)
    gathered = torch.load(out, weights_only=True)
    for name, expected in reference().items():
        torch.testing.assert_close(gathered[name].double(), expected.double(), rtol=1e-9, atol=1e-12, msg=name)
