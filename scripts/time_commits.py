"""Time kernels.flash_attention's forward and backward from two checkouts, one process each.

    python scripts/time_commits.py --root .baseline --root . --out /tmp/router.json

Each ``--root`` is a folder holding a ``kernels/`` package (``git archive <sha> kernels | tar -x
-C DIR`` makes one); it is imported in a fresh process so two versions never share a module or
Triton's in-process caches. Every shape is timed ``--rounds`` times, the roots interleaved round by
round (the order alternating) so both see the same GPU state. Two times per pass: ``fwd_ms`` /
``bwd_ms``, ``--reps`` calls back to back between two CUDA events (median of five such means: the
kernels' time wherever it exceeds the host's), and ``fwd_call_ms`` / ``bwd_call_ms``, the median
single call from an idle GPU (host launch cost included). Inputs are seeded random fp16/bf16
tensors, the same for every root; each record carries checksums of the output and dQ, and the
summary refuses roots whose checksums disagree beyond fp16 rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SHAPES = [  # (B, H, N, D, dtype, causal): one per router branch at production sizes
    (4, 16, 8192, 128, "float16", False),  # Gluon forward and backward
    (4, 32, 4096, 64, "bfloat16", True),  # Gluon, causal, D = 64
    (8, 16, 1024, 128, "float16", False),  # the pointer kernel (N below the Gluon threshold)
    (1, 4, 256, 64, "float16", False),  # host-bound: the per-call cost of the router and launcher
]

CHILD = r"""
import json, statistics, sys, torch
sys.path.insert(0, sys.argv[1])
import kernels
B, H, N, D, dtype, causal, reps = json.loads(sys.argv[2])
dt = getattr(torch, dtype)
torch.manual_seed(0)
q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
do = torch.randn(B, H, N, D, device="cuda", dtype=dt)
fwd = lambda: kernels.flash_attention(q, k, v, causal=causal)
out = fwd()
def bwd():
    for t in (q, k, v):
        t.grad = None
    out.backward(do, retain_graph=True)
def call_ms(fn):
    # One call from an idle GPU, CUDA events around it: the latency a caller sees, host launch
    # cost included.
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)
def stream_ms(fn):
    # reps calls back to back between two events: the GPU stays busy, so host cost hides behind
    # the kernels wherever they take longer than it; median of 5 such means.
    means = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        for _ in range(reps):
            fn()
        b.record(); torch.cuda.synchronize()
        means.append(a.elapsed_time(b) / reps)
    return statistics.median(means)
res = {"fwd_ms": stream_ms(fwd), "bwd_ms": stream_ms(bwd), "fwd_call_ms": call_ms(fwd), "bwd_call_ms": call_ms(bwd)}
bwd()
res["checksum"] = [float(out.double().abs().sum()), float(q.grad.double().abs().sum())]
print(json.dumps(res))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", action="append", required=True, help="a folder with a kernels/ package (repeat)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    results = []
    for shape in SHAPES:
        for rnd in range(args.rounds):
            for root in (args.root if rnd % 2 == 0 else args.root[::-1]):  # alternate who goes first
                env = {**os.environ, "PYTHONPATH": os.path.abspath(root)}
                r = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(root), json.dumps([*shape, args.reps])],
                                   capture_output=True, text=True, env=env, cwd=os.path.abspath(root))
                if r.returncode:
                    print(r.stderr[-2000:], file=sys.stderr)
                    return 1
                rec = dict(zip(("B", "H", "N", "D", "dtype", "causal"), shape), root=root, round=rnd,
                           **json.loads(r.stdout.strip().splitlines()[-1]))
                results.append(rec)
                print(json.dumps(rec), flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    return summarize(results, args.root)


def summarize(results: list[dict], roots: list[str]) -> int:
    """Print each shape's median over rounds per root, and the ratio to the first root; exit 1
    where the roots' results disagree."""
    bad = 0
    for shape in SHAPES:
        mine = [r for r in results if tuple(r[k] for k in ("B", "H", "N", "D", "dtype", "causal")) == shape]
        base = None
        for root in roots:
            rs = [r for r in mine if r["root"] == root]
            med = {key: statistics.median(r[key] for r in rs) for key in ("fwd_ms", "bwd_ms", "fwd_call_ms", "bwd_call_ms")}
            base = base or (med, rs[0]["checksum"])
            ratios = " ".join(f"{key}={med[key]:.4f} ({med[key] / base[0][key]:.3f}x)" for key in med)
            print(f"{shape} {root}: {ratios}")
            if any(abs(a - b) > 1e-3 * abs(b) for a, b in zip(rs[0]["checksum"], base[1])):
                print(f"  {root}: checksums {rs[0]['checksum']} differ from {base[1]}")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
