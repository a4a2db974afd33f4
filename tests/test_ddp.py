"""The trainer under data parallelism: 2 CPU processes with gloo, a few steps.

An MLP family (no BatchNorm, whose batch statistics would differ per rank) makes the
2-process run comparable to one process on the same global batch.
"""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neumeta_fast import data as D
from neumeta_fast.models.family import named_family
from neumeta_fast.trainer import TrainConfig, Trainer

CONFIG = dict(steps=4, batch_size=8, hidden_dim=16, num_layers=2, num_freqs=2, lr=3e-3, prefit_steps=2, noise=0.5)


def _make():
    torch.manual_seed(0)
    data = D.synthetic(n_train=64, n_test=16)
    family = named_family("mlp", full_width=6, num_classes=4)
    return family, family.build(6), data


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        family, base, data = _make()
        trainer = Trainer(family, base, data, TrainConfig(**CONFIG))
        trainer.fit()
        torch.save([p.detach() for p in trainer.inr.parameters()], os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*ranks))  # ranks stay in sync
    family, base, data = _make()
    single = Trainer(family, base, data, TrainConfig(**{**CONFIG, "batch_size": 16}))
    single.fit()
    for a, b in zip(ranks[0], single.inr.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)
