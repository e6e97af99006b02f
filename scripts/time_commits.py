"""Time kernels.flash_attention's forward and backward from two checkouts, one process each.

    python scripts/time_commits.py --root .baseline --root . --out /tmp/router.json

Each ``--root`` is a folder holding a ``kernels/`` package (``git archive <sha> kernels | tar -x
-C DIR`` makes one); it is imported in a fresh process so two versions never share a module or
Triton's in-process caches. Every shape is timed ``--rounds`` times, the roots interleaved round by
round so both see the same GPU state; each sample is the median of ``--reps`` CUDA-event timings
after warm-up. Inputs are fresh random fp16/bf16 tensors; outputs are checked against each other.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SHAPES = [  # (B, H, N, D, dtype, causal): one per router branch at production sizes
    (4, 16, 8192, 128, "float16", False),  # Gluon forward and backward
    (4, 32, 4096, 64, "bfloat16", True),  # Gluon, causal, D = 64
    (8, 16, 1024, 128, "float16", False),  # the pointer kernel (N below the Gluon threshold)
]

CHILD = r"""
import json, sys, torch
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
def median(fn):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]
res = {"fwd_ms": median(fwd), "bwd_ms": median(bwd)}
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
            for root in args.root:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
