"""Build the forward kernel for a GPU without one: proves it lowers to sm_90 code and shows its resources.

    python benchmarks/compile_check.py [--arch 90]     (TRITON_INTERPRET must be unset)

Uses the ptxas / cuobjdump that ship with triton. Prints registers, stack (spills, beyond the 32
bytes libdevice's sin/cos reduction keeps there) and shared memory per variant; exits 1 when a
variant fails to build or needs more shared memory than an H100 block may have.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from neumeta_fast.kernels import launch
from neumeta_fast.kernels.inr_forward import NOISE_NONE, NOISE_PHILOX, NOISE_TENSOR, _inr_forward_kernel

SMEM_LIMIT = 227 * 1024  # H100 / H200 per-block maximum
_TYPES = {"tiles_ptr": "*i32", "seg_ptr": "*i64", "norm": "fp32", "noise_scale": "fp32", "seed": "i64"}
_INTS = ("num_rows", "num_tensors", "num_tiles", "D", "H", "O", "NB")

# (hidden, in_features, precision, noise source, routed, samples): paper INR and small INR
VARIANTS = [(512, 390, p, NOISE_NONE, False, 1) for p in launch.PRECISIONS] + [
    (512, 390, "ieee", NOISE_PHILOX, True, 3), (512, 390, "ieee", NOISE_TENSOR, True, 2),
    (256, 198, "ieee", NOISE_PHILOX, False, 1), (256, 198, "bf16", NOISE_NONE, False, 1)]


def resources(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    return {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def build(arch: int, hidden: int, in_features: int, precision: str, noise: int, routed: bool, samples: int):
    cfg = launch.config(9, precision)
    constants = dict(SAMPLES=samples, FIRST_NOISY=int(samples > 1), NOISE=noise, ROUTED=routed, CHANNELS=False,
                     BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, SW=cfg.scratch_width(in_features, hidden),
                     OP=cfg.out_pad, PREC=precision, GPU=True)
    signature = {n: "constexpr" if n in constants else _TYPES.get(n, "i32" if n in _INTS else "*fp32")
                 for n in _inr_forward_kernel.arg_names}
    kernel = triton.compile(ASTSource(_inr_forward_kernel, signature, constexprs=constants),
                            target=GPUTarget("cuda", arch, 32), options={"num_warps": cfg.num_warps})
    return cfg, kernel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the interpreter builds no GPU code")
    print(f"forward kernel built for sm_{args.arch} with triton {triton.__version__}")
    print("| hidden | precision | noise | warps | registers | stack (B) | shared (B) |")
    print("|---|---|---|---|---|---|---|")
    bad = []
    for hidden, d, precision, noise, routed, samples in VARIANTS:
        what = ["none", "philox", "tensor"][noise] + (f", reference, K={samples}" if routed else "")
        try:
            cfg, kernel = build(args.arch, hidden, d, precision, noise, routed, samples)
        except Exception as exc:  # report every variant, then fail
            bad.append(f"{hidden}/{precision}/{what}: {type(exc).__name__}: {str(exc)[-400:]}")
            continue
        use, smem = resources(kernel.asm["cubin"]), kernel.metadata.shared
        print(f"| {hidden} | {precision} | {what} | {cfg.num_warps} | {use.get('REG')} | {use.get('STACK')} | "
              f"{smem} |", flush=True)
        if smem > SMEM_LIMIT:
            bad.append(f"{hidden}/{precision}/{what}: {smem} B shared memory > {SMEM_LIMIT}")
    for line in bad:
        print("FAILED:", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
