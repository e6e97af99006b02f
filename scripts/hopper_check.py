"""Time the Gluon Hopper forward beside the pointer kernel and SDPA's cuDNN backend, in one run.

    python scripts/hopper_check.py [--quick] [--out FILE]

A development probe for post 5's kernel (the site's numbers come from benchmark.py):
each case is checked against float64 first, then timed with ``triton.testing.do_bench``
(median). Needs torch, triton and an sm90 GPU; prints a table last and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys


def fa_flops(B, H, NQ, NK, D, causal):
    flops = 4.0 * B * H * NQ * NK * D
    return flops / 2 if causal else flops


def host_probe():
    """Host time per call of the Gluon launcher, through Triton's own launch path and through the
    compiled kernel's entry (``kernels.launch.DIRECT``), fp16 and bf16; and whether Triton's launch
    cache grows (a miss per call would recompile or reload the kernel every time)."""
    import time

    import torch

    from kernels import launch
    from kernels.gluon import forward as gluon_forward

    for direct in (False, True):
        launch.DIRECT.enabled = direct
        for dtype in (torch.float16, torch.bfloat16):
            q, k, v = (torch.randn(4, 16, 2048, 128, device="cuda", dtype=dtype) for _ in range(3))
            for _ in range(3):
                gluon_forward.hopper_forward(q, k, v, False, 0.088)
            torch.cuda.synchronize()
            caches = lambda: sum(  # noqa: E731
                len(c[0]) for c in gluon_forward.hopper_fwd_kernel.device_caches.values())
            before = caches()
            t0 = time.perf_counter()
            for _ in range(50):  # the GPU needs ~0.5 ms per call, so these calls only queue work
                gluon_forward.hopper_forward(q, k, v, False, 0.088)
            host = (time.perf_counter() - t0) / 50 * 1e6
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / 50 * 1e6
            print(f"{'direct' if direct else 'triton'} {dtype}: host {host:.0f} us per call, wall {wall:.0f} us "
                  f"per call, compiled kernels in the launch cache {before} -> {caches()}", flush=True)
    return 0


def sweep(out: str | None):
    """The schedule and block-order switches over the production suite's long shapes, in three
    interleaved rounds (a ratio counts only where the rounds do not overlap), beside cuDNN."""
    import itertools

    import torch
    import torch.nn.functional as F
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels.gluon import forward as gluon_forward

    records = []
    for (H, D), N, dtype, causal in itertools.product(((16, 128), (32, 64)), (2048, 4096, 8192, 16384),
                                                      (torch.float16, torch.bfloat16), (False, True)):
        q, k, v = (torch.randn(4, H, N, D, device="cuda", dtype=dtype) for _ in range(3))
        scale = D**-0.5
        variants = {f"{sched}{'' if lpt else '-inorder'}": (sched, lpt)
                    for sched in ("serial", "pingpong") for lpt in ((True, False) if causal else (True,))}
        calls = {name: (lambda s=s, lpt=lpt: gluon_forward.hopper_forward(q, k, v, causal, scale, schedule=s, lpt=lpt))
                 for name, (s, lpt) in variants.items()}

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        calls["cudnn"] = cudnn
        rounds = {name: [] for name in calls}
        for _ in range(3):
            for name, fn in calls.items():
                rounds[name].append(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        row = dict(H=H, D=D, N=N, dtype=str(dtype).split(".")[-1], causal=causal, rounds_ms=rounds)
        records.append(row)
        flops = fa_flops(4, H, N, N, D, causal)
        print(f"{row['dtype']} D{D} N{N} {'causal' if causal else 'full':6} " + " ".join(
            f"{name} {flops / sorted(r)[1] / 1e9:.0f} [{flops / max(r) / 1e9:.0f}-{flops / min(r) / 1e9:.0f}]"
            for name, r in rounds.items()), flush=True)
    if out:
        with open(out, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "triton": triton.__version__, "records": records}, f, indent=1)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two shapes only")
    parser.add_argument("--host", action="store_true", help="only probe host time per call, fp16 against bf16")
    parser.add_argument("--sweep", action="store_true",
                        help="schedules and causal block order over the production shapes, beside cuDNN")
    parser.add_argument("--out", default=None, help="write the records here as JSON")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels import flash
    from kernels.gluon import forward as gluon_forward
    from kernels.reference import reference_attention

    if args.host:
        return host_probe()
    if args.sweep:
        return sweep(args.out)
    cases = [(4, 16, 128, 4096), (4, 16, 128, 16384), (4, 32, 64, 4096), (4, 32, 64, 16384), (4, 16, 128, 2048),
             (4, 32, 64, 2048)]
    if args.quick:
        cases = cases[:2]
    records = []
    for B, H, D, N in cases:
        for dtype in (torch.float16, torch.bfloat16):
            for causal in (False, True):
                if dtype == torch.bfloat16 and N != 16384:
                    continue
                q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=dtype) for _ in range(3))
                scale = D**-0.5
                # Correctness on the first 2 heads of the first batch against float64.
                ref = reference_attention(q[:1, :2], k[:1, :2], v[:1, :2], causal=causal, scale=scale)
                got = gluon_forward.hopper_attention(q, k, v, causal=causal, scale=scale)[:1, :2]
                torch_err = (F.scaled_dot_product_attention(q[:1, :2], k[:1, :2], v[:1, :2], is_causal=causal)
                             .double() - ref.double()).abs().max().item()
                err = (got.double() - ref.double()).abs().max().item()
                row = dict(B=B, H=H, D=D, N=N, dtype=str(dtype).split(".")[-1], causal=causal,
                           err=err, torch_err=torch_err)
                providers = {
                    "gluon": lambda: gluon_forward.hopper_attention(q, k, v, causal=causal, scale=scale),
                    "pipelined": lambda: gluon_forward.hopper_forward(q, k, v, causal, scale, schedule="pipelined")[0],
                    "pingpong": lambda: gluon_forward.hopper_forward(q, k, v, causal, scale, schedule="pingpong")[0],
                    "stages3": lambda: gluon_forward.hopper_forward(q, k, v, causal, scale, stages=3)[0],
                    "in_order": lambda: gluon_forward.hopper_forward(q, k, v, causal, scale, lpt=False)[0],
                    "flash": lambda: flash.flash_forward(q, k, v, causal, scale, "ieee")[0],
                }

                def cudnn():
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                providers["cudnn"] = cudnn
                for name, fn in providers.items():
                    ms = triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")
                    row[name + "_ms"] = ms
                    row[name + "_tflops"] = fa_flops(B, H, N, N, D, causal) / ms / 1e9
                records.append(row)
                print(json.dumps(row), flush=True)
    print(f"{'case':34} {'err/torch':>9} {'gluon':>7} {'pipe':>7} {'pingp':>7} {'stg3':>7} {'inord':>7} {'flash':>7} {'cudnn':>7}  TFLOP/s; gluon/cudnn")
    for r in records:
        case = f"{r['dtype']} B{r['B']} H{r['H']} D{r['D']} N{r['N']} {'causal' if r['causal'] else 'full'}"
        print(f"{case:34} {r['err'] / max(r['torch_err'], 1e-9):9.2f} {r['gluon_tflops']:7.0f} {r['pipelined_tflops']:7.0f} {r['pingpong_tflops']:7.0f} {r['stages3_tflops']:7.0f} {r['in_order_tflops']:7.0f} "
              f"{r['flash_tflops']:7.0f} {r['cudnn_tflops']:7.0f}  {r['gluon_ms'] and r['cudnn_ms'] / r['gluon_ms']:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "triton": triton.__version__, "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
