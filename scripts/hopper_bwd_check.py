"""Check the Gluon dK/dV kernel (kernels/gluon/dkdv.py) against float64 and time it beside the
pointer dK/dV kernel, on an sm90 GPU; with --dq, the Gluon dQ kernel (kernels/gluon/dq.py)
beside the pointer dQ kernel instead.

    python3 scripts/hopper_bwd_check.py [--quick] [--dq] [--case-timeout S] [--out FILE]

A development probe (the site's numbers come from benchmark.py). Every case runs in a worker
process that the parent watches: a case that hangs (a barrier never completing) or crashes the
CUDA context is recorded as such, the worker is killed and a fresh one goes on with the next
case, so the script always ends. Correctness: fresh random inputs, o and lse from our forward,
delta = rowsum(dO * O), dK/dV from the Gluon kernel into NaN-filled buffers, against float64
autograd; the error must be at most 2x the pointer kernel's (or 2x PyTorch's own fp16/bf16
error, whichever is larger) plus one unit in the last place. Timing (do_bench medians): the
dK/dV kernels alone, then whole backward passes (delta + dK/dV + dQ) with either dK/dV kernel,
and SDPA's cuDNN backward. With --dq the same for dQ: the Gluon dQ into NaN-filled buffers against
float64 (at most 2x the pointer dQ kernel's error plus one unit in the last place); timing of
the dQ kernels alone (the Gluon one at both key tiles) and of whole backward passes with the Gluon
dK/dV and either dQ kernel, beside cuDNN. Prints a table last; writes JSON to --out, or
$OUT/bwd_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

# (B, H, H_KV, N_Q, N_K): ragged on both sides, Nq != Nk, GQA and MQA, one query row.
SHAPES = [
    (1, 4, 4, 1000, 1030),
    (2, 8, 2, 4096, 4096),
    (1, 4, 4, 4111, 4096),
    (2, 3, 3, 7, 100),
    (1, 4, 1, 257, 130),
    (1, 2, 2, 1, 300),
    (2, 2, 2, 128, 128),
    (1, 2, 2, 63, 257),
]
QUICK_SHAPES = SHAPES[:3]
# (B, H, N, D): the timing shapes, fp16 and bf16, full and causal.
TIMING = [(4, 16, 8192, 128), (4, 32, 8192, 64)]


# The Gluon dQ kernel's other key tile per head dim, (BLOCK_N, stages), timed beside
# kernels/gluon/dq.py's TILES: the deepest ring that fits (scripts/compile_hopper.py --kernel dq).
DQ_OTHER_TILE = {64: (64, 4), 128: (128, 2)}


def correctness_cases(quick: bool, dq: bool):
    """dK/dV (both schedules at fp16) or, with ``dq``, dQ alone: each compiles its own kernels."""
    for shape in QUICK_SHAPES if quick else SHAPES:
        for head_dim in (64, 128):
            for dtype in ("float16", "bfloat16"):
                for causal in (False, True):
                    schedules = ("overlap", "serial") if dtype == "float16" else ("overlap",)
                    yield {"kind": "check", "shape": shape, "D": head_dim, "dtype": dtype, "causal": causal,
                           "schedules": () if dq else schedules, "dq": dq}


def timing_cases(bf16: bool, dq: bool):
    for B, H, N, D in TIMING:
        for dtype in ("float16", "bfloat16") if bf16 else ("float16",):
            for causal in (False, True):
                yield {"kind": "time", "shape": (B, H, H, N, N), "D": D, "dtype": dtype, "causal": causal,
                       "dq": dq}


# ----------------------------------------------------------------------------- worker side


def _setup(case):
    import torch

    from kernels.attention import attention_forward

    B, H, H_KV, NQ, NK = case["shape"]
    D = case["D"]
    dtype = getattr(torch, case["dtype"])
    q = torch.randn(B, H, NQ, D, device="cuda").to(dtype)
    k = torch.randn(B, H_KV, NK, D, device="cuda").to(dtype)
    v = torch.randn(B, H_KV, NK, D, device="cuda").to(dtype)
    do = torch.randn(B, H, NQ, D, device="cuda").to(dtype)
    scale = D**-0.5
    o, lse, _ = attention_forward(q, k, v, case["causal"], scale, "ieee")
    delta = (o.float() * do.float()).sum(-1).contiguous()  # what the preprocess kernel computes
    return q, k, v, do, o, lse, delta, scale


def pointer_dkdv(q4, k4, v4, do4, lse, delta, causal, scale):
    """The pointer dK/dV kernel alone (``flash.flash_dkdv``, autotuned as the backward runs it)."""
    from kernels import flash

    return flash.flash_dkdv(q4, k4, v4, do4, lse, delta, causal, scale, "ieee")


def pointer_dq(q4, k4, v4, do4, lse, delta, causal, scale):
    """The pointer dQ kernel alone (``flash.flash_dq``, autotuned as the backward runs it)."""
    from kernels import flash

    return flash.flash_dq(q4, k4, v4, do4, lse, delta, causal, scale, "ieee")


def gluon_dkdv_pointer_dq_backward(do4, q4, k4, v4, o4, lse, causal, scale):
    """A whole backward pass (delta + dK/dV + dQ) with the Gluon dK/dV and the pointer dQ kernel;
    returns (dq, dk, dv) like ``attention_backward``."""
    from kernels import flash
    from kernels.gluon import dkdv as gluon_dkdv

    delta = flash.flash_preprocess(o4, do4)
    dk, dv = gluon_dkdv.hopper_dkdv(q4, k4, v4, do4.contiguous(), lse, delta, causal, scale)  # TMA reads whole rows
    return flash.flash_dq(q4, k4, v4, do4, lse, delta, causal, scale, "ieee"), dk, dv


def _err(a, b):
    return (a.double() - b.double()).abs().max().item()


def run_check(case):
    import torch
    import torch.nn.functional as F

    from kernels.gluon import dkdv as gluon_dkdv
    from kernels.reference import reference_attention

    q, k, v, do, o, lse, delta, scale = _setup(case)
    causal = case["causal"]
    # float64 autograd on batch 0 only (its gradients depend on batch 0 alone): memory.
    q0, k0, v0 = (t[:1].double().requires_grad_(True) for t in (q, k, v))
    reference_attention(q0, k0, v0, causal=causal, scale=scale).backward(do[:1].double())
    if case["dq"]:
        return check_dq(case, q, k, v, do, lse, delta, scale, q0.grad)
    ref = {"dk": k0.grad, "dv": v0.grad}
    # PyTorch's own low-precision backward (SDPA, any backend), the usual yardstick.
    qt, kt, vt = (t[:1].detach().clone().requires_grad_(True) for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    F.scaled_dot_product_attention(qt, kt.repeat_interleave(group, 1), vt.repeat_interleave(group, 1),
                                   is_causal=causal, scale=scale).backward(do[:1])
    torch_err = {"dk": _err(kt.grad, ref["dk"]), "dv": _err(vt.grad, ref["dv"])}
    pk, pv = pointer_dkdv(q, k, v, do, lse, delta, causal, scale)
    pointer_err = {"dk": _err(pk[:1], ref["dk"]), "dv": _err(pv[:1], ref["dv"])}
    ulp = {n: torch.finfo(q.dtype).eps * max(1.0, ref[n].abs().max().item()) for n in ref}
    tol = {n: 2 * max(pointer_err[n], torch_err[n]) + ulp[n] for n in ref}
    result = {"torch_err": torch_err, "pointer_err": pointer_err, "tol": tol, "schedules": {}}
    ok = True
    for schedule in case["schedules"]:
        dk, dv = gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, causal, scale, schedule=schedule)
        torch.cuda.synchronize()
        row = {"unwritten": int(dk.isnan().sum().item() + dv.isnan().sum().item()),
               "dk": _err(dk[:1], ref["dk"]), "dv": _err(dv[:1], ref["dv"]),
               # every batch, against the pointer kernel (no float64 there: memory)
               "dk_vs_pointer": _err(dk, pk), "dv_vs_pointer": _err(dv, pv)}
        row["ok"] = row["unwritten"] == 0 and row["dk"] <= tol["dk"] and row["dv"] <= tol["dv"]
        ok = ok and row["ok"]
        result["schedules"][schedule] = row
    result["ok"] = ok
    return result


def check_dq(case, q, k, v, do, lse, delta, scale, ref):
    """The Gluon dQ against ``ref`` (float64 dQ of batch 0): at most 2x the pointer dQ kernel's
    error plus one unit in the last place; PyTorch's own error is recorded beside it."""
    import torch
    import torch.nn.functional as F

    from kernels.gluon import dq as gluon_dq

    causal = case["causal"]
    qt = q[:1].detach().clone().requires_grad_(True)
    group = q.shape[1] // k.shape[1]
    F.scaled_dot_product_attention(qt, k[:1].repeat_interleave(group, 1), v[:1].repeat_interleave(group, 1),
                                   is_causal=causal, scale=scale).backward(do[:1])
    pq = pointer_dq(q, k, v, do, lse, delta, causal, scale)
    dq = gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale)
    torch.cuda.synchronize()
    result = {"torch_err": {"dq": _err(qt.grad, ref)}, "pointer_err": {"dq": _err(pq[:1], ref)}}
    ulp = torch.finfo(q.dtype).eps * max(1.0, ref.abs().max().item())
    result["tol"] = {"dq": 2 * result["pointer_err"]["dq"] + ulp}
    row = {"unwritten": int(dq.isnan().sum().item()), "dq": _err(dq[:1], ref),
           "dq_vs_pointer": _err(dq, pq)}  # every batch, against the pointer kernel (no float64 there: memory)
    row["ok"] = row["unwritten"] == 0 and row["dq"] <= result["tol"]["dq"]
    result.update(gluon_dq=row, ok=row["ok"])
    return result


def run_timing(case):
    from kernels.attention import attention_backward
    from kernels.gluon import dkdv as gluon_dkdv

    q, k, v, do, o, lse, delta, scale = _setup(case)
    causal = case["causal"]
    B, H, _, N, _ = case["shape"]
    D = case["D"]
    flops = 4.0 * B * H * N * N * D * (0.5 if causal else 1.0)  # the forward's, FA convention
    if case["dq"]:
        return time_dq(case, q, k, v, do, o, lse, delta, scale, flops)
    stages = gluon_dkdv.STAGES[D]
    other_stages = 3 if D == 128 else 4
    providers = {
        "pointer_dkdv": lambda: pointer_dkdv(q, k, v, do, lse, delta, causal, scale),
        "gluon_overlap": lambda: gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, causal, scale, schedule="overlap"),
        "gluon_serial": lambda: gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, causal, scale, schedule="serial"),
        f"gluon_stages{other_stages}": lambda: gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, causal, scale,
                                                                      stages=other_stages),
        "pointer_bwd": lambda: attention_backward(do, q, k, v, o, lse, causal, scale, "ieee", backend="pointer"),
        "flash_bwd": lambda: attention_backward(do, q, k, v, o, lse, causal, scale, "ieee"),
    }
    providers["cudnn_bwd"] = cudnn_backward(q, k, v, do, causal, scale)
    # The dK/dV kernels do 4 of the backward's 5 matmuls: 2.0x the forward's FLOPs; a whole
    # backward is 2.5x (the FA convention).
    work = {name: (2.5 if name.endswith("_bwd") else 2.0) * flops for name in providers}
    return dict(bench(providers, work), stages_default=stages)


def time_dq(case, q, k, v, do, o, lse, delta, scale, flops):
    """dQ kernels alone, and whole backward passes (delta + Gluon dK/dV + either dQ) beside cuDNN."""
    from kernels.attention import attention_backward
    from kernels.gluon import dq as gluon_dq

    causal = case["causal"]
    other_n, other_stages = DQ_OTHER_TILE[case["D"]]
    other_schedule = next(s for s in gluon_dq.SCHEDULES if s != gluon_dq.DEFAULT_SCHEDULE)
    providers = {
        "pointer_dq": lambda: pointer_dq(q, k, v, do, lse, delta, causal, scale),
        "gluon_dq": lambda: gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale),
        f"gluon_dq_n{other_n}": lambda: gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale,
                                                            block_n=other_n, stages=other_stages),
        f"gluon_dq_{other_schedule}": lambda: gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale,
                                                                 schedule=other_schedule),
        "pointer_dq_bwd": lambda: gluon_dkdv_pointer_dq_backward(do, q, k, v, o, lse, causal, scale),
        "gluon_dq_bwd": lambda: attention_backward(do, q, k, v, o, lse, causal, scale, "ieee", backend="gluon"),
        "cudnn_bwd": cudnn_backward(q, k, v, do, causal, scale),
    }
    # A dQ kernel does 3 of the backward's 5 matmuls (S and dP again, then dQ): 1.5x the
    # forward's FLOPs; a whole backward is 2.5x (the FA convention).
    work = {name: (2.5 if name.endswith("_bwd") else 1.5) * flops for name in providers}
    return dict(bench(providers, work), dq_tile_default=list(gluon_dq.TILES[case["D"]]),
                dq_tile_other=[other_n, other_stages], dq_schedule_default=gluon_dq.DEFAULT_SCHEDULE)


def cudnn_backward(q, k, v, do, causal, scale):
    """SDPA's cuDNN backward alone, as a callable: the forward runs once, on the first call."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qc, kc, vc = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    graph = {}

    def run():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            if "out" not in graph:
                graph["out"] = F.scaled_dot_product_attention(qc, kc, vc, is_causal=causal, scale=scale)
            return torch.autograd.grad(graph["out"], (qc, kc, vc), do, retain_graph=True)
    return run


def bench(providers, work):
    """do_bench medians per provider, in ms and TFLOP/s of ``work``; a failure is recorded, not fatal."""
    import triton

    result = {}
    for name, fn in providers.items():
        try:
            ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            result[name] = {"ms": ms, "tflops": work[name] / ms / 1e9}
        except Exception as exc:  # noqa: BLE001 - a provider that cannot run is recorded, not fatal
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ok"] = True
    return result


def run_warm(case):
    """Compile, without timing, every kernel ``run_timing`` launches for this case: each
    pointer candidate tile (the autotuner then finds them in Triton's cache and only times
    them), and the Gluon variants. Runs in parallel with other cases; timing never does."""
    from kernels import flash
    from kernels.attention import attention_backward
    from kernels.gluon import dkdv as gluon_dkdv
    from kernels.tiles import padded_head_dim

    q, k, v, do, o, lse, delta, scale = _setup(case)
    causal = case["causal"]
    D = q.shape[-1]
    head_dim = padded_head_dim(D)
    for tile in flash.candidate_tiles("dq", head_dim):
        flash.flash_dq(q, k, v, do, lse, delta, causal, scale, "ieee", tile=tile)
    if case["dq"]:
        from kernels.gluon import dq as gluon_dq

        gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale)
        other_n, other_stages = DQ_OTHER_TILE[D]
        gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale, block_n=other_n, stages=other_stages)
        for schedule in gluon_dq.SCHEDULES:
            gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale, schedule=schedule)
        attention_backward(do, q, k, v, o, lse, causal, scale, "ieee", backend="gluon")
        return {"ok": True}
    for tile in flash.candidate_tiles("dkdv", head_dim):
        flash.flash_dkdv(q, k, v, do, lse, delta, causal, scale, "ieee", tile=tile)
    for schedule in gluon_dkdv.SCHEDULES:
        gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, causal, scale, schedule=schedule)
    gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, causal, scale, stages=3 if D == 128 else 4)
    attention_backward(do, q, k, v, o, lse, causal, scale, "ieee")  # the preprocess kernel, the routed dQ
    return {"ok": True}


def worker(cases, start):
    import torch

    print(f"@@DEVICE {json.dumps(torch.cuda.get_device_name())}", flush=True)
    for index in range(start, len(cases)):
        case = cases[index]
        print(f"@@START {index}", flush=True)
        t0 = time.perf_counter()
        try:
            result = {"check": run_check, "time": run_timing, "warm": run_warm}[case["kind"]](case)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which starts a fresh worker
            print("@@RESULT " + json.dumps({"index": index, "status": "error",
                                            "error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
            return 3  # the CUDA context may be unusable: let the parent start a fresh process
        result.update(index=index, status="ok" if result["ok"] else "wrong", seconds=time.perf_counter() - t0)
        print("@@RESULT " + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------- parent side


def run_phase(cases, env_extra, case_timeout, deadline):
    """Run ``cases`` in worker processes; returns (one record per case, in order; the GPU's name)."""
    records, device, start = {}, None, 0
    while start < len(cases):
        if time.monotonic() > deadline:
            for i in range(start, len(cases)):
                records[i] = {"index": i, "status": "skipped", "error": "this phase's time ran out"}
            break
        cmd = [sys.executable, __file__, "--worker", "--start", str(start), "--phase-json", json.dumps(cases)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, **env_extra), start_new_session=True)
        lines = queue.Queue()  # a reader thread, so a silent worker never blocks the clock
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        current, case_started, tail = None, time.monotonic(), []
        while True:
            # Before the first case: start-up and the first compilations, so twice the time.
            limit = case_timeout if current is not None else 2 * case_timeout
            wait = min(case_started + limit, deadline) - time.monotonic()
            try:
                line = lines.get(timeout=max(wait, 0.0))
            except queue.Empty:
                os.killpg(proc.pid, signal.SIGKILL)
                if current is not None:
                    records[current] = {"index": current, "status": "timeout",
                                        "error": f"no result within {limit:.0f} s (a hang?)"}
                    print(summary_line(cases[current], records[current]), flush=True)
                    current = None
                break
            if line is None:  # the worker exited
                break
            if line.startswith("@@START"):
                current, case_started = int(line.split()[1]), time.monotonic()
            elif line.startswith("@@RESULT"):
                record = json.loads(line[len("@@RESULT "):])
                records[record["index"]] = record
                print(summary_line(cases[record["index"]], record), flush=True)
                current = None
            elif line.startswith("@@DEVICE"):
                device = json.loads(line.split(" ", 1)[1])
            else:
                tail = (tail + [line.rstrip()])[-20:]
        proc.wait()
        if current is not None:  # the worker died inside a case
            records[current] = {"index": current, "status": "crashed", "error": "\n".join(tail)[-800:]}
            print(summary_line(cases[current], records[current]), flush=True)
        done = [i for i in records if i >= start]
        if not done:  # it died before its first case: record that on the case it would have run
            records[start] = {"index": start, "status": "crashed", "error": "\n".join(tail)[-800:]}
            print(summary_line(cases[start], records[start]), flush=True)
            done = [start]
        start = max(done) + 1
    return [records.get(i, {"index": i, "status": "missing"}) for i in range(len(cases))], device


def run_sharded(cases, env_extra, case_timeout, deadline):
    """``run_phase`` with one worker per (D, causal) group of cases, the groups in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    groups = {}
    for index, case in enumerate(cases):
        groups.setdefault((case["D"], case["causal"]), []).append(index)
    with ThreadPoolExecutor(len(groups)) as pool:
        futures = [pool.submit(run_phase, [cases[i] for i in indices], env_extra, case_timeout, deadline)
                   for indices in groups.values()]
        results = [future.result() for future in futures]
    records, device = [None] * len(cases), None
    for indices, (group_records, group_device) in zip(groups.values(), results):
        device = device or group_device
        for i, record in zip(indices, group_records):
            records[i] = dict(record, index=i)
    return records, device


def case_name(case):
    B, H, H_KV, NQ, NK = case["shape"]
    return (f"{case['dtype'][:4]} B{B} H{H}/{H_KV} Nq{NQ} Nk{NK} D{case['D']} "
            f"{'causal' if case['causal'] else 'full'}")


def summary_line(case, record):
    name = case_name(case)
    if record.get("status") not in ("ok", "wrong"):
        return f"{name:44} {record.get('status').upper()}: {record.get('error', '')[:200]}"
    if case["kind"] == "warm":
        return f"{name:44} compiled in {record['seconds']:.0f} s"
    if case["kind"] == "check" and case["dq"]:
        row = record["gluon_dq"]
        return (f"{name:44} tol dq {record['tol']['dq']:.2e} (pointer {record['pointer_err']['dq']:.1e}, "
                f"torch {record['torch_err']['dq']:.1e}); gluon dq {row['dq']:.2e}"
                f"{' NaN=' + str(row['unwritten']) if row['unwritten'] else ''}{'' if row['ok'] else ' FAIL'}")
    if case["kind"] == "check":
        parts = []
        for schedule, row in record["schedules"].items():
            parts.append(f"{schedule}: dk {row['dk']:.2e} dv {row['dv']:.2e}"
                         f"{' NaN=' + str(row['unwritten']) if row['unwritten'] else ''}{'' if row['ok'] else ' FAIL'}")
        return (f"{name:44} tol dk {record['tol']['dk']:.2e} dv {record['tol']['dv']:.2e} "
                f"(pointer {record['pointer_err']['dk']:.1e}/{record['pointer_err']['dv']:.1e}, "
                f"torch {record['torch_err']['dk']:.1e}/{record['torch_err']['dv']:.1e}); " + "; ".join(parts))
    cells = []
    for name_, value in record.items():
        if isinstance(value, dict) and "ms" in value:
            cells.append(f"{name_} {value['ms']:.3f} ms ({value['tflops']:.0f})")
        elif isinstance(value, dict) and "error" in value:
            cells.append(f"{name_} ERROR {value['error'][:80]}")
    return f"{name:44} " + ", ".join(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="correctness on three shapes only")
    parser.add_argument("--dq", action="store_true",
                        help="check and time the Gluon dQ kernel (kernels/gluon/dq.py) instead of the dK/dV ones")
    parser.add_argument("--no-timing", action="store_true", help="correctness only")
    parser.add_argument("--bf16-timing", action="store_true", help="time bf16 too (fp16 only by default)")
    parser.add_argument("--case-timeout", type=float, default=90.0,
                        help="seconds one case may take before its worker is killed (default 90)")
    parser.add_argument("--total-timeout", type=float, default=420.0,
                        help="seconds for the whole script, 60%% of it for correctness; cases left when "
                             "a phase's time runs out are skipped (default 420)")
    parser.add_argument("--out", default=None, help="JSON output (default: $OUT/bwd_check.json if OUT is set)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--phase-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if args.worker:
        cases = json.loads(args.phase_json)
        for case in cases:
            case["shape"] = tuple(case["shape"])
        return worker(cases, args.start)

    import torch

    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        print("hopper_bwd_check: needs an sm90 (Hopper) GPU", file=sys.stderr)
        return 2
    started = time.monotonic()
    checks = list(correctness_cases(args.quick, args.dq))
    # Correctness: NaN-filled outputs everywhere, one fixed pointer tile (no autotuning: it would
    # compile every candidate for every shape); one worker per (D, causal), in parallel, so the
    # compilations (most of the time) use several CPU cores.
    check_records, device = run_sharded(checks, {"KERNELS_POISON_OUTPUTS": "1", "KERNELS_AUTOTUNE": "0"},
                                        args.case_timeout, started + 0.6 * args.total_timeout)
    timings, timing_records = [], []
    if not args.no_timing:
        timings = list(timing_cases(args.bf16_timing, args.dq))
        # Compile everything the timing launches first, in parallel; then time one case at a time,
        # plain outputs, the pointer kernels autotuned as flash_attention runs them.
        run_sharded([dict(case, kind="warm") for case in timings], {"KERNELS_POISON_OUTPUTS": "0"},
                    args.case_timeout, started + 0.75 * args.total_timeout)
        timing_records, device_t = run_phase(timings, {"KERNELS_POISON_OUTPUTS": "0"}, args.case_timeout,
                                             started + args.total_timeout)
        device = device or device_t

    what = "dQ" if args.dq else "dK/dV"
    print(f"\n{device}: Gluon {what} against float64 ({len(checks)} cases)")
    bad = 0
    for case, record in zip(checks, check_records):
        if record.get("status") != "ok":
            bad += 1
            print("  NOT OK:", summary_line(case, record))
    print(f"  {len(checks) - bad} ok, {bad} not ok")
    if timings and args.dq:
        print_dq_table(timings, timing_records)
    elif timings:
        print(f"\n{'case':44} {'ptr dkdv':>9} {'overlap':>9} {'serial':>9} {'stages':>9} {'ptr bwd':>9} "
              f"{'flash bwd':>9} {'cudnn':>9}  ms; serial/ptr dkdv, flash/cudnn bwd")
        for case, record, ms in timed_rows(timings, timing_records):
            stage_key = next(key for key in record if key.startswith("gluon_stages"))
            print(f"{case_name(case):44} {ms('pointer_dkdv'):9.3f} {ms('gluon_overlap'):9.3f} {ms('gluon_serial'):9.3f} "
                  f"{ms(stage_key):9.3f} {ms('pointer_bwd'):9.3f} {ms('flash_bwd'):9.3f} "
                  f"{ms('cudnn_bwd'):9.3f}  {ms('pointer_dkdv') / ms('gluon_serial'):.2f}x, "
                  f"{ms('cudnn_bwd') / ms('flash_bwd'):.2f}x")
    out = args.out or (os.path.join(os.environ["OUT"], "bwd_check.json") if os.environ.get("OUT") else None)
    if out:
        import triton
        with open(out, "w") as f:
            json.dump({"gpu": device, "torch": torch.__version__, "triton": triton.__version__,
                       "checks": [dict(case, **record) for case, record in zip(checks, check_records)],
                       "timings": [dict(case, **record) for case, record in zip(timings, timing_records)]},
                      f, indent=1)
        print(f"wrote {out}")
    return 1 if bad else 0


def timed_rows(timings, timing_records):
    """(case, record, ms) per timed case, ``ms(key)`` a provider's median (NaN if it has none);
    a case that did not time prints its summary line instead."""
    for case, record in zip(timings, timing_records):
        if record.get("status") != "ok":
            print(summary_line(case, record))
            continue
        yield case, record, lambda key, record=record: record.get(key, {}).get("ms", float("nan"))


def print_dq_table(timings, timing_records):
    from kernels.gluon import dq as gluon_dq

    other = next(s for s in gluon_dq.SCHEDULES if s != gluon_dq.DEFAULT_SCHEDULE)
    print(f"\n{'case':44} {'ptr dq':>9} {'gluon dq':>9} {'other N':>9} {other:>9} {'bwd ptr':>9} {'bwd gluon':>9} "
          f"{'cudnn':>9}  ms; ptr/gluon dq, cudnn/bwd with ptr dq, cudnn/bwd with gluon dq "
          f"(gluon dq: {gluon_dq.DEFAULT_SCHEDULE}, gluon/dq.py's TILES; other N: the other key tile)")
    for case, record, ms in timed_rows(timings, timing_records):
        other_n = next(key for key in record if key.startswith("gluon_dq_n"))
        print(f"{case_name(case):44} {ms('pointer_dq'):9.3f} {ms('gluon_dq'):9.3f} {ms(other_n):9.3f} "
              f"{ms('gluon_dq_' + other):9.3f} "
              f"{ms('pointer_dq_bwd'):9.3f} {ms('gluon_dq_bwd'):9.3f} {ms('cudnn_bwd'):9.3f}  "
              f"{ms('pointer_dq') / ms('gluon_dq'):.2f}x, {ms('cudnn_bwd') / ms('pointer_dq_bwd'):.2f}x, "
              f"{ms('cudnn_bwd') / ms('gluon_dq_bwd'):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
