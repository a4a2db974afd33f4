"""Data-parallel training under torchrun: nccl when the trainer runs on CUDA, gloo on the CPU.

The trainer's model is an INR that `generate` reads parameter by parameter, so instead of
wrapping it in DistributedDataParallel the gradients are averaged explicitly after backward
(one all-reduce over a flat buffer): the same arithmetic as DDP without the wrapper.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1) with the backend for the trainer's
    `device`; on CUDA without an index each rank takes the GPU of its LOCAL_RANK. Returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device if device.index is not None else int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return rank_and_world()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_parameters(module: nn.Module) -> None:
    """Start every rank from rank 0's parameters."""
    if rank_and_world()[1] > 1:
        for p in module.parameters():
            dist.broadcast(p.data, 0)


def average_gradients(module: nn.Module, world: int) -> None:
    """Mean of every parameter's gradient over ranks (missing gradients count as zero)."""
    if world <= 1:
        return
    params = list(module.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
