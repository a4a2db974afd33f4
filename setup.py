"""Build neumeta_fast's extensions: the C++ one always, the CUDA one where CUDA is usable.
The package's metadata, dependencies and entry point are in pyproject.toml.

Environment flags:
  NEUMETA_FORCE_CUDA=1  build the CUDA extension even when no GPU is visible (needs nvcc and a CUDA torch)
  NEUMETA_SKIP_CUDA=1   never build the CUDA extension
"""
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def _cuda_wanted() -> bool:
    if _flag("NEUMETA_SKIP_CUDA"):
        return False
    if _flag("NEUMETA_FORCE_CUDA"):
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None and torch.cuda.is_available()


def _extensions():
    cxx = ["-O3", "-std=c++17", "-fno-trapping-math"]  # FP traps are never enabled: lets selects on floats vectorise
    cpu_sources = sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    exts = [CppExtension("neumeta_fast._C", cpu_sources, extra_compile_args={"cxx": cxx})]
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    if cuda_sources and _cuda_wanted():
        exts.append(
            CUDAExtension(
                "neumeta_fast._C_cuda",
                cuda_sources,
                include_dirs=[os.path.join(HERE, "csrc", "include")],
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "--use_fast_math"]},
            )
        )
    elif cuda_sources:
        print("neumeta_fast: CUDA extension skipped (no CUDA torch/nvcc/GPU; set NEUMETA_FORCE_CUDA=1 to force)")
    return exts


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
