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


def flip_tensor_byte(path, position: float = 0.5) -> None:
    """Flip one bit inside the largest tensor stored in torch.save's zip file at `path` (a byte the
    zip format does not check on load), at `position` of its length."""
    import struct
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", fh.read(4))
        at = info.header_offset + 30 + name_len + extra_len + int(position * (info.file_size - 1))
        fh.seek(at)
        byte = fh.read(1)[0]
        fh.seek(at)
        fh.write(bytes([byte ^ 0x10]))
