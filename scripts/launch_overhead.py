#!/usr/bin/env python3
"""Host cost of calling flash_attention, and the first call's cost in a new process (GPU only).

    python scripts/launch_overhead.py host         # host time per call, direct launch on and off
    python scripts/launch_overhead.py first-call   # a new process's first call, cold and warm cache

``--root DIR`` imports the ``kernels`` package found in DIR instead of this checkout's, so an
older copy of the package can be measured in the same session. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _kernels(root: Path):
    sys.path.insert(0, str(root))
    import kernels
    from kernels import flash

    return kernels, flash


def _set_direct(flash, on: bool):
    if hasattr(flash, "_DIRECT"):
        flash._DIRECT.enabled = on
    else:  # the package before the DirectLauncher
        flash.DIRECT_LAUNCH = on


def host(root: Path, calls: int) -> dict:
    import torch

    kernels, flash = _kernels(root)
    B, H, N, D = 4, 16, 1024, 128
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(3))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    do = torch.randn_like(q)
    out = {}
    for direct in (True, False):
        _set_direct(flash, direct)
        for name in ("fwd", "fwd+bwd"):
            def call():
                if name == "fwd":
                    kernels.flash_attention(q, k, v, causal=True)
                else:
                    kernels.flash_attention(qg, kg, vg, causal=True).backward(do)
            for _ in range(20):
                call()
            torch.cuda.synchronize()
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter()
                call()
                ts.append((time.perf_counter() - t0) * 1e6)
                if name == "fwd+bwd":
                    torch.cuda.synchronize()  # a backward call must not queue behind the last
            torch.cuda.synchronize()
            out[f"{name} direct={'on' if direct else 'off'} us"] = round(statistics.median(ts), 2)
    return out


def first_call_child(root: Path) -> None:
    import torch

    kernels, _ = _kernels(root)
    q, k, v = (torch.randn(4, 16, 3000, 128, device="cuda", dtype=torch.float16) for _ in range(3))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    kernels.flash_attention(q, k, v, causal=True)
    torch.cuda.synchronize()
    print(json.dumps({"first_call_s": time.perf_counter() - t0}))


def first_call(root: Path) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TRITON_CACHE_DIR": cache, "KERNELS_AUTOTUNE": "1"}
        for run in ("cold cache", "warm cache (new process)"):
            res = subprocess.run([sys.executable, __file__, "first-call-child", "--root", str(root)], env=env,
                                 capture_output=True, text=True, timeout=900)
            if res.returncode:
                raise SystemExit(res.stderr[-3000:])
            out[f"{run} s"] = round(json.loads(res.stdout.strip().splitlines()[-1])["first_call_s"], 3)
        out["autotune files"] = sum(1 for _ in Path(cache).rglob("*.autotune.json"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["host", "first-call", "first-call-child"])
    p.add_argument("--root", default=str(ROOT), help="folder holding the kernels package to measure")
    p.add_argument("--calls", type=int, default=300)
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    if args.what == "first-call-child":
        first_call_child(root)
        return 0
    result = host(root, args.calls) if args.what == "host" else first_call(root)
    print(json.dumps({"root": str(root), args.what: result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
