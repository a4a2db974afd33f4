"""neumeta_fast: fast weight generation for Neural Metamorphosis (NeuMeta)."""
import torch  # noqa: F401  (the C++ extension links against torch's libraries)

from . import tsp
from ._version import __version__
from .backends import backends
from .generate import generate, generate_into
from .inr import INR
from .layout import Layout, Segment
from .models.family import Family
from .smoothing import SmoothReport, smooth, total_variation
from .trainer import TrainConfig, Trainer

__all__ = ["__version__", "backends", "generate", "generate_into", "INR", "Layout", "Segment", "Family",
           "SmoothReport", "smooth", "total_variation", "TrainConfig", "Trainer", "tsp"]
