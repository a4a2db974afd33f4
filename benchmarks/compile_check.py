"""Build the forward kernel for a GPU without one: proves it lowers to sm_90 code and shows its resources.

    python benchmarks/compile_check.py [--arch 90]     (TRITON_INTERPRET must be unset)
    python benchmarks/compile_check.py --dry-run       every variant's compile inputs and the tools, nothing built

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


def nvidia_tool(name: str) -> str:
    """A CUDA tool that ships with triton (ptxas, cuobjdump)."""
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def resources(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([nvidia_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                              text=True).stdout
    return {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text)}


def compile_inputs(hidden: int, in_features: int, precision: str, noise: int, routed: bool, samples: int):
    """The launch configuration, the kernel's constexpr values and its argument signature for one variant."""
    cfg = launch.config(9, precision)
    constants = dict(SAMPLES=samples, FIRST_NOISY=int(samples > 1), NOISE=noise, ROUTED=routed, CHANNELS=False,
                     BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, SW=cfg.scratch_width(in_features, hidden),
                     OP=cfg.out_pad, PREC=precision, GPU=True)
    signature = {n: "constexpr" if n in constants else _TYPES.get(n, "i32" if n in _INTS else "*fp32")
                 for n in _inr_forward_kernel.arg_names}
    missing = set(constants) - set(signature)
    if missing:
        raise RuntimeError(f"the forward kernel has no parameters {sorted(missing)}: compile_check is out of date")
    return cfg, constants, signature


def build(arch: int, hidden: int, in_features: int, precision: str, noise: int, routed: bool, samples: int):
    cfg, constants, signature = compile_inputs(hidden, in_features, precision, noise, routed, samples)
    kernel = triton.compile(ASTSource(_inr_forward_kernel, signature, constexprs=constants),
                            target=GPUTarget("cuda", arch, 32), options={"num_warps": cfg.num_warps})
    return cfg, kernel


def dry_run() -> int:
    """Everything but the build: each variant's compile inputs, and the tools the build and report use."""
    for variant in VARIANTS:
        cfg, _, signature = compile_inputs(*variant)
        print(f"{variant}: {cfg.num_warps} warps, {len(signature)} kernel arguments")
    missing = [tool for tool in ("ptxas", "cuobjdump") if not os.path.exists(nvidia_tool(tool))]
    for tool in missing:
        print(f"FAILED: triton ships no {tool} at {nvidia_tool(tool)}")
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dry-run", action="store_true", help="resolve every variant's inputs, build nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        return dry_run()
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
