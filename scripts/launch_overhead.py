#!/usr/bin/env python3
"""Host cost of calling flash_attention, and the first call's cost in a new process (GPU only).

    python scripts/launch_overhead.py host         # host time per call, direct launch on and off
    python scripts/launch_overhead.py first-call   # a new process's first call, cold and warm cache
    python scripts/launch_overhead.py sweep --out short.json [--quick]   # short sequences (issue 23)

``sweep``: at the production shapes (B = 4; H = 32 at D = 64, H = 16 at D = 128), N = 1k, 2k and
4k, fp16 and bf16, causal and not, for the Gluon kernels (``backend="gluon"``), the pointer
kernels (``backend="pointer"``), the router (``backend="auto"``) and SDPA's cuDNN backend, forward
and forward + backward (``torch.autograd.grad``), it measures per call:

- ``wall_us``: calls back to back between two synchronisations (what a training loop sees);
- ``host_us``: the same loop's time until the last call returned, before synchronising: the host
  time per call, while the GPU is behind (the launch queue never fills at these call counts);
- ``gpu_us``: replays of a CUDA graph holding ``GRAPH_CALLS`` calls: GPU time without host cost.

Rounds interleave the providers (order rotated per round); each value is the median over rounds,
with the spread (slowest / fastest - 1). Every provider's output (and, with the backward, its
gradients) is checked against float64 on two heads first; any failure, a direct launch that fell
back to Triton's path, or an error exits non-zero without writing ``--out`` (written whole, via a
temporary file). ``--quick``: fp16, N = 1k and 2k, fewer rounds (about 3 minutes on an H100,
compiles included). ``--n``, ``--dtype``, ``--head-dim`` narrow the grid (to split a run).

``--root DIR`` imports the ``kernels`` package found in DIR instead of this checkout's, so an
older copy of the package can be measured in the same session (``sweep`` takes one root).
Prints one JSON object (``sweep``: a summary; the records go to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
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


# ----------------------------------------------------------------------------- sweep (issue 23)

HEADS = {64: 32, 128: 16}  # the production suite's heads per head dim (scripts/benchmark.py)
BATCH = 4
PROVIDERS = ("gluon", "pointer", "auto", "cudnn")
PASSES = ("fwd", "fwd+bwd")
GRAPH_CALLS = 10  # calls per captured graph: one replay's own launch cost spread over ten calls
DEVICE = "cuda"


class SweepError(RuntimeError):
    """A check failed or a provider could not run: the sweep stops and writes nothing."""


def _provider(kernels, name: str, causal: bool):
    """fn(q, k, v) -> output for one provider; cuDNN runs inside the sdpa_kernel context the
    caller holds (entering it per call would add its cost to cuDNN's host time)."""
    import torch.nn.functional as F

    if name == "cudnn":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return lambda q, k, v: kernels.flash_attention(q, k, v, causal=causal, backend=name)


def _call(fn, q, k, v, do, backward: bool):
    """One call of a pass: the forward, or the forward and dq, dk, dv through autograd."""
    import torch

    if not backward:
        return fn(q, k, v)
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), do))


def _check(name, results, q, k, v, do, causal, dtype):
    """The output (and gradients) of one provider on batch 0, heads 0-1, against float64 autograd:
    max abs error within ``tol`` of the reference's largest magnitude (fp16 1%, bf16 4%: loose
    enough never to fail a correct kernel, tight enough to catch a wrong or unwritten result)."""
    import torch

    tol = {torch.float16: 1e-2, torch.bfloat16: 4e-2}[dtype]
    q64, k64, v64 = (t[0, :2].detach().double().requires_grad_() for t in (q, k, v))
    scores = q64 @ k64.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    ref = torch.softmax(scores, -1) @ v64
    want = [ref.detach()]
    if len(results) > 1:
        want += list(torch.autograd.grad(ref, (q64, k64, v64), do[0, :2].double()))
    for label, got, w in zip(("out", "dq", "dk", "dv"), results, want):
        g = got[0, :2].double()
        if not torch.isfinite(g).all():
            raise SweepError(f"{name}: {label} has NaN or inf")
        err, scale = (g - w).abs().max().item(), max(w.abs().max().item(), 1e-3)
        if err > tol * scale:
            raise SweepError(f"{name}: {label} max abs error {err:.3e} > {tol:.0e} x {scale:.3e}")


def _graph(fn, calls: int):
    """A CUDA graph of ``calls`` calls of ``fn``, warmed up on a side stream first (as
    torch.cuda.graphs asks: lazy initialisation must not happen during capture)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    return graph


def _time_loop(fn, calls: int) -> tuple[float, float]:
    """(host us, wall us) per call of ``calls`` calls back to back."""
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (t1 - t0) / calls * 1e6, (t2 - t0) / calls * 1e6


def _time_graph(graph, replays: int) -> float:
    """GPU us per call: ``replays`` replays of a graph of GRAPH_CALLS calls between two events."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (replays * GRAPH_CALLS)


def _stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "spread": round(max(values) / min(values) - 1, 3),
            "rounds": [round(x, 2) for x in values]}


def sweep_cases(quick: bool, ns=None, dtypes=None, head_dims=None) -> list[dict]:
    ns = ns or ([1024, 2048] if quick else [1024, 2048, 4096])
    dtypes = dtypes or (["float16"] if quick else ["float16", "bfloat16"])
    head_dims = head_dims or [64, 128]
    return [dict(B=BATCH, H=HEADS[d], N=n, D=d, dtype=dt, causal=c)
            for dt in dtypes for d in head_dims for c in (False, True) for n in ns]


def sweep_case(kernels, case: dict, rounds: int, calls: int, replays: int) -> list[dict]:
    """Every provider and pass of one case, measured in interleaved rounds; returns the records."""
    import torch

    dtype = getattr(torch, case["dtype"])
    B, H, N, D, causal = case["B"], case["H"], case["N"], case["D"], case["causal"]
    q, k, v, do = (torch.randn(B, H, N, D, device=DEVICE, dtype=dtype) for _ in range(4))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    runs = []  # (provider, pass, call, graph)
    for name in PROVIDERS:
        fn = _provider(kernels, name, causal)
        for pas in PASSES:
            backward = pas == "fwd+bwd"
            args = (qg, kg, vg) if backward else (q, k, v)
            call = (lambda fn=fn, args=args, backward=backward: _call(fn, *args, do, backward))
            with _context(name):
                first = call()
                _check(f"{name} {pas} {case}", first if backward else (first,), *args, do, causal, dtype)
                del first
                graph = _graph(call, GRAPH_CALLS)
            runs.append((name, pas, call, graph))
    samples = {(name, pas): {"host_us": [], "wall_us": [], "gpu_us": []} for name, pas, _, _ in runs}
    for r in range(rounds):
        for name, pas, call, graph in runs[r % len(runs):] + runs[:r % len(runs)]:
            with _context(name):
                for _ in range(3):
                    call()
                host_us, wall_us = _time_loop(call, calls)
                gpu_us = _time_graph(graph, replays)
            for key, value in (("host_us", host_us), ("wall_us", wall_us), ("gpu_us", gpu_us)):
                samples[(name, pas)][key].append(value)
    records = []
    for name, pas, _, _ in runs:
        rec = {**case, "provider": name, "pass": pas,
               **{key: _stats(vals) for key, vals in samples[(name, pas)].items()}}
        if name != "cudnn":
            plan = kernels.plan(q, k, v, causal=causal, backward=pas == "fwd+bwd", backend=name)
            rec["kernels"] = {"forward": plan.forward, "dkdv": plan.dkdv, "dq": plan.dq}
        else:
            rec["kernels"] = {"forward": "sdpa-cudnn"}
        records.append(rec)
    del runs
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return records


def _context(name: str):
    """What a provider's calls run inside: SDPA restricted to cuDNN (an error, not another
    backend, where cuDNN cannot run the case), nothing for ours."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.CUDNN_ATTENTION) if name == "cudnn" else contextlib.nullcontext()


def _summary(records: list[dict]) -> list[dict]:
    """Per case and pass: each metric's cuDNN / provider ratio (above 1: the provider is faster)."""
    by = {}
    for r in records:
        by.setdefault((r["dtype"], r["D"], r["causal"], r["N"], r["pass"]), {})[r["provider"]] = r
    out = []
    for (dt, d, c, n, pas), provs in sorted(by.items(), key=lambda kv: (kv[0][4], kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        row = {"dtype": dt, "D": d, "causal": c, "N": n, "pass": pas}
        for name in ("gluon", "pointer", "auto"):
            for metric in ("wall_us", "gpu_us"):
                row[f"{name} {metric[:-3]} vs cudnn"] = round(provs["cudnn"][metric]["median"] /
                                                              provs[name][metric]["median"], 3)
            row[f"{name} host_us"] = provs[name]["host_us"]["median"]
        row["cudnn host_us"] = provs["cudnn"]["host_us"]["median"]
        out.append(row)
    return out


def _git_commit(root: Path) -> str:
    res = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    if res.returncode:
        return "unknown"
    return res.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def sweep(root: Path, out: Path, quick: bool, ns=None, dtypes=None, head_dims=None) -> dict:
    import torch
    import triton

    if not torch.cuda.is_available():
        raise SweepError("sweep needs a CUDA GPU")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("")  # fail now, not after the measurements, if --out cannot be written
    tmp.unlink()
    kernels, switch = _kernels(root)
    direct_on = bool(getattr(switch, "DIRECT", None) and switch.DIRECT.enabled)
    rounds, calls, replays = (3, 20, 5) if quick else (5, 30, 10)
    t0 = time.perf_counter()
    cases = sweep_cases(quick, ns, dtypes, head_dims)
    records = []
    for i, case in enumerate(cases):
        records += sweep_case(kernels, case, rounds, calls, replays)
        if direct_on and not switch.DIRECT.enabled:
            raise SweepError("the direct launch fell back to Triton's path (see its warning)")
        print(f"[{i + 1}/{len(cases)}] {case} {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if direct_on and not switch.DIRECT.enabled:
        raise SweepError("the direct launch fell back to Triton's path during the sweep (see its warning)")
    doc = {
        "what": "host, wall and CUDA-graph GPU time per call (scripts/launch_overhead.py sweep)",
        "commit": _git_commit(root), "root": str(root), "quick": quick,
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
        "python": platform.python_version(), "direct_launch": direct_on,
        "env": {k: v for k, v in os.environ.items() if k.startswith("KERNELS_")},
        "rounds": rounds, "calls_per_loop": calls, "graph": {"calls": GRAPH_CALLS, "replays": replays},
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "summary": _summary(records), "records": records,
    }
    text = json.dumps(doc, indent=1)
    tmp.write_text(text)
    os.replace(tmp, out)  # whole or not at all
    return {"out": str(out), "elapsed_s": doc["elapsed_s"], "gpu": doc["gpu"], "commit": doc["commit"],
            "summary": doc["summary"]}


def _csv(kind):
    return lambda text: [kind(x) for x in text.split(",")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["host", "first-call", "first-call-child", "sweep"])
    p.add_argument("--root", action="append", help="folder holding a kernels package to measure (repeatable for "
                   "host and first-call; default: this checkout)")
    p.add_argument("--calls", type=int, default=500, help="host: calls per round")
    p.add_argument("--out", type=Path, help="sweep: the JSON file to write (required)")
    p.add_argument("--quick", action="store_true", help="sweep: fp16, N = 1k and 2k, 3 rounds (about 3 minutes)")
    p.add_argument("--n", type=_csv(int), help="sweep: sequence lengths, comma-separated (default 1024,2048,4096)")
    p.add_argument("--dtype", type=_csv(str), help="sweep: float16 and/or bfloat16, comma-separated")
    p.add_argument("--head-dim", type=_csv(int), help="sweep: 64 and/or 128, comma-separated")
    args = p.parse_args(argv)
    roots = [Path(r).resolve() for r in (args.root or [str(ROOT)])]
    if args.what == "first-call-child":
        first_call_child(roots[0])
        return 0
    if args.what == "sweep":
        if args.out is None:
            p.error("sweep needs --out FILE")
        if len(roots) != 1:
            p.error("sweep measures one package per run: give --root once")
        if args.dtype and not set(args.dtype) <= {"float16", "bfloat16"}:
            p.error(f"--dtype takes float16 and bfloat16, got {args.dtype}")
        if args.head_dim and not set(args.head_dim) <= set(HEADS):
            p.error(f"--head-dim takes {sorted(HEADS)}, got {args.head_dim}")
        if args.n and min(args.n) < 1:
            p.error(f"--n takes positive lengths, got {args.n}")
        try:
            result = sweep(roots[0], args.out, args.quick, args.n, args.dtype, args.head_dim)
        except SweepError as exc:
            print(f"launch_overhead.py sweep: {exc}; nothing written", file=sys.stderr)
            return 1
        print(json.dumps({"sweep": result}, indent=1))
        return 0
    result = host(roots, args.calls) if args.what == "host" else {str(r): first_call(r) for r in roots}
    print(json.dumps({args.what: result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
