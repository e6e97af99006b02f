"""Per-call cost of kernels.flash_attention at a host-bound shape, for one checkout of kernels/.

    python scripts/host_cost.py --root .baseline --variant base
    python scripts/host_cost.py --root . --variant new        # or --variant direct

At (B, H, N, D) = (1, 4, 256, 64) fp16 the kernels take a few microseconds each, so 200 calls
back to back between two synchronizations measure what the host spends per call (best of three
such loops). Variants, to split a difference between two checkouts: "base" / "new" as they are;
"customop" registers a torch.library custom op with a fake and an autograd function first (what
kernels.attention does at import); "direct" replaces the router's backward with the three pointer
launches alone. One process per run, so two checkouts never share a module.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

VARIANTS = ("base", "new", "customop", "direct")


def register_probe_op(torch) -> None:
    @torch.library.custom_op("probe::copy", mutates_args=())
    def copy(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    copy.register_fake(lambda x: x.new_empty(x.shape))
    copy.register_autograd(lambda ctx, g: g, setup_context=lambda ctx, inputs, output: None)


def use_minimal_backward() -> None:
    from kernels import attention, flash

    def minimal(do4, q4, k4, v4, o4, lse, causal, scale, precision="ieee", *, backend="auto"):
        delta = flash.flash_preprocess(o4, do4)
        dk, dv = flash.flash_dkdv(q4, k4, v4, do4, lse, delta, causal, scale, precision)
        return flash.flash_dq(q4, k4, v4, do4, lse, delta, causal, scale, precision), dk, dv

    attention.attention_backward = minimal


def best_us(fn, sync, calls: int = 200, loops: int = 3) -> float:
    for _ in range(30):
        fn()
    best = float("inf")
    for _ in range(loops):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="a folder holding a kernels/ package")
    p.add_argument("--variant", choices=VARIANTS, default="new")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.root))
    import torch

    import kernels

    if not torch.cuda.is_available():
        sys.exit("host_cost.py: needs a CUDA GPU")
    if args.variant == "customop":
        register_probe_op(torch)
    if args.variant == "direct":
        use_minimal_backward()
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 256, 64, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3))
    do = torch.randn(1, 4, 256, 64, device="cuda", dtype=torch.float16)
    out = kernels.flash_attention(q, k, v)

    def bwd():
        for t in (q, k, v):
            t.grad = None
        out.backward(do, retain_graph=True)

    fwd_us = best_us(lambda: kernels.flash_attention(q, k, v), torch.cuda.synchronize)
    bwd_us = best_us(bwd, torch.cuda.synchronize)
    print(f"{args.root} {args.variant:8} forward {fwd_us:6.1f} us/call  backward {bwd_us:6.1f} us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
