"""Random test inputs shared by the backend tests."""
import random

import torch

from neumeta_fast import INR


def random_shapes(rng: random.Random, count: int):
    """`count` named shapes of every tensor kind (3x3 and 1x1 conv, linear, vector, single element)."""
    shapes = []
    for t in range(count):
        kind = rng.choice(["conv3", "conv1", "linear", "vector", "single"])
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        shape = {"conv3": (a, b, 3, 3), "conv1": (a, b, 1, 1), "linear": (a, b), "vector": (a,), "single": (1,)}[kind]
        shapes.append((f"t{t}", shape))
    return shapes


def random_inr(num_tensors: int, seed: int = 0, **kw) -> INR:
    """A small INR with weights larger than the default init, so that every input matters."""
    torch.manual_seed(seed)
    cfg = dict(hidden_dim=32, num_layers=3, num_freqs=4)
    cfg.update(kw)
    inr = INR(num_tensors, **cfg)
    with torch.no_grad():
        for p in inr.parameters():
            p.normal_(0, 0.3)
    return inr
