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


def _kernels(root: Path, alias: str = "kernels"):
    """The kernels package in ``root``, imported under ``alias`` (two copies can live side by side),
    and its module that holds the direct-launch switch (``launch``; ``flash`` before kernels/launch.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(alias, root / "kernels" / "__init__.py",
                                                  submodule_search_locations=[str(root / "kernels")])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module, sys.modules.get(f"{alias}.launch") or sys.modules[f"{alias}.flash"]


def _set_direct(switch, on: bool):
    """Turn direct launch on or off in the module ``_kernels`` returned."""
    # kernels/launch.py's DIRECT, or flash.py's _DIRECT before kernels/launch.py (f57d95b)
    launcher = getattr(switch, "DIRECT", getattr(switch, "_DIRECT", None))  # (not `or`: an empty one is falsy)
    if launcher is not None:
        launcher.enabled = on
    else:  # the package before the DirectLauncher
        switch.DIRECT_LAUNCH = on


def host(roots: list[Path], calls: int, rounds: int = 5) -> dict:
    """Median wall time per call on a problem small enough that the GPU keeps up with the host
    (one head, N=128, D=64: a few us of GPU time), so the time is the host's. Forward calls, and
    forward + backward calls; each package and setting measured in interleaved rounds."""
    import torch

    q, k, v = (torch.randn(1, 1, 128, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    do = torch.randn_like(q)
    packages = [(f"pkg{i}", *_kernels(root, f"kernels_m{i}"), root) for i, root in enumerate(roots)]
    variants = []
    for alias, kernels, switch, root in packages:
        _set_direct(switch, True)  # a package whose switch is out of reach stops here, before any timing
        for direct in (True, False):
            for name in ("fwd", "fwd+bwd"):
                def call(kernels=kernels, name=name):
                    if name == "fwd":
                        kernels.flash_attention(q, k, v, causal=True)
                    else:
                        kernels.flash_attention(qg, kg, vg, causal=True).backward(do)
                variants.append((f"{root.name or root} {name} direct={'on' if direct else 'off'}", switch, direct,
                                 call))
    samples = {label: [] for label, *_ in variants}
    for r in range(rounds):
        for label, switch, direct, call in variants[r % len(variants):] + variants[:r % len(variants)]:
            _set_direct(switch, direct)
            for _ in range(20):
                call()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                call()
            samples[label].append((time.perf_counter() - t0) / calls * 1e6)
            torch.cuda.synchronize()
    return {label: {"median_us": round(statistics.median(ts), 2), "spread": round(max(ts) / min(ts) - 1, 3)}
            for label, ts in samples.items()}


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
    p.add_argument("--root", action="append", help="folder holding a kernels package to measure (repeatable; "
                   "default: this checkout)")
    p.add_argument("--calls", type=int, default=500)
    args = p.parse_args(argv)
    roots = [Path(r).resolve() for r in (args.root or [str(ROOT)])]
    if args.what == "first-call-child":
        first_call_child(roots[0])
        return 0
    result = host(roots, args.calls) if args.what == "host" else {str(r): first_call(r) for r in roots}
    print(json.dumps({args.what: result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
