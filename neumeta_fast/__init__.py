"""neumeta_fast: fast weight generation for Neural Metamorphosis."""
from ._version import __version__
