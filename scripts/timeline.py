#!/usr/bin/env python3
"""Measure what each warp of the Gluon Hopper kernel does over time, with Proton's in-kernel
timestamps, and write ``<out>/timeline.<gpu>.json`` (the data behind post 5's timeline).

    python scripts/timeline.py --commit $(git rev-parse HEAD) --out $OUT [--raw $OUT]

Needs an sm90 GPU and a Triton with Proton (3.6). The kernel is compiled with ``PROFILE=True``
(``kernels/gluon/forward.py``): each scope (wait for K, QK^T, softmax, ...) writes a cycle counter when it
opens and closes. Records cost cycles, so the instrumented kernel is slower than the real one; the
script times both and says by how much in ``provenance.proton.note``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":  # run as a script: the packages sit at the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# One wave: B * H * cdiv(N, 128) = 128 programs on a 132-SM H100, every program resident at once,
# so the programs traced run beside 127 others as in a real launch.
SHAPE = dict(B=1, H=8, N=2048)
HEAD_DIM = 128
SCHEDULES = ("serial", "pingpong")
CTAS_KEPT = (0, 64)  # programs whose events are written: one of the first, one from the middle
LAUNCHES = 2  # traced launches; the last one is kept (the first warms the L2 and the clocks)
WARPS_SAMPLED = "0,4,8"  # the first warp of each partition: consumer 0, consumer 1, producer
ROLES = {range(0, 4): "consumer 0", range(4, 8): "consumer 1", range(8, 12): "producer"}


def role_of(warp: int) -> str:
    for warps, role in ROLES.items():
        if warp in warps:
            return role
    raise ValueError(f"warp {warp} is outside the kernel's 3 partitions")


def parse_trace(trace: dict) -> list[dict]:
    """Proton's chrome trace -> [{lane, cta, warp, scope, start, end}] with times in SM cycles.

    Proton names each lane by its core (SM), CTA and warp. It writes cycle counts as
    microseconds at a nominal 1000 MHz ("Frequency (MHz)" in each event), so ts * 1000 is
    cycles; each SM counts its own cycles, so times compare only within one program."""
    events = []
    for ev in trace.get("traceEvents", []):
        if ev.get("ph") != "X":
            continue
        lane = f"{ev.get('pid', '')} {ev.get('tid', '')}"
        cta = re.search(r"CTA\s*(\d+)", lane)
        warp = re.search(r"warp\s*(\d+)", lane, re.IGNORECASE)
        if not (cta and warp):
            raise ValueError(f"cannot read the CTA and warp from a trace lane: {lane!r}")
        mhz = float(ev.get("args", {}).get("Frequency (MHz)", 1000.0))
        start = float(ev["ts"]) * mhz  # cycles: Proton wrote cycles / mhz as microseconds
        events.append(dict(lane=lane, cta=int(cta.group(1)), warp=int(warp.group(1)), scope=ev["name"],
                           start=start, end=start + float(ev["dur"]) * mhz))
    if not events:
        raise ValueError("the trace holds no timed events")
    return events


LAUNCH_GAP = 1e6  # cycles: one program runs for ~1e5; Proton lays launches out further apart


def last_launch(events: list[dict]) -> list[dict]:
    """The events of the last launch: Proton places launches one after another on the time axis,
    separated by gaps far longer than the kernel."""
    events = sorted(events, key=lambda e: e["start"])
    cut = 0
    for i in range(1, len(events)):
        if events[i]["start"] - max(e["end"] for e in events[cut:i]) > LAUNCH_GAP:
            cut = i
    return events[cut:]


def trace_one(schedule: str, q, k, v, mode, workdir: Path, raw_dir: str | None):
    """Run the instrumented kernel LAUNCHES times inside a Proton session; returns the last
    launch's events and its output. The trace's first events are copied to ``raw_dir`` before it is
    read (the whole trace is tens of MB)."""
    import torch
    import triton.profiler as proton

    from kernels.gluon import forward as gluon_forward

    scale = q.shape[-1] ** -0.5
    name = str(workdir / f"timeline-{schedule}")
    proton.start(name, data="trace", backend="instrumentation", mode=mode)
    try:
        for _ in range(LAUNCHES):
            o, _, _ = gluon_forward.hopper_forward(q, k, v, False, scale, schedule=schedule, profile=True)
            torch.cuda.synchronize()
    finally:
        proton.finalize()
    path = Path(name + ".chrome_trace")
    trace = json.loads(path.read_text())
    if raw_dir:
        Path(raw_dir).mkdir(parents=True, exist_ok=True)
        sample = {**trace, "traceEvents": trace.get("traceEvents", [])[:400]}
        (Path(raw_dir) / f"{path.stem}.sample.json").write_text(json.dumps(sample, indent=1))
    return last_launch(parse_trace(trace)), o


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for timeline.<gpu>.json")
    parser.add_argument("--commit", default=None, help="git commit to record (default: read from the repo)")
    parser.add_argument("--raw", default=None, help="folder to copy the start of Proton's raw traces into")
    parser.add_argument("--all-warps", action="store_true", help="record every warp, not one per partition")
    args = parser.parse_args(argv)

    import torch
    import triton
    import triton.profiler as proton

    from kernels.gluon import forward as gluon_forward
    from perfdata import schema as benchdata
    from scripts import benchmark

    B, H, N, D = SHAPE["B"], SHAPE["H"], SHAPE["N"], HEAD_DIM
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.float16) for _ in range(3))
    problem = gluon_forward.hopper_problem(q, k, v)
    if problem:
        print(f"timeline: the Gluon kernel cannot run here: {problem}", file=sys.stderr)
        return 2
    scale = D ** -0.5
    # clock32: a 32-bit cycle counter, cheaper to read than 64 bits (a kernel this short cannot
    # wrap it); time_shift: Proton subtracts the cycles its own records took. The buffer lives in
    # global memory because the kernel leaves too little shared memory for one.
    sampling = dict(sampling_strategy="selective", sampling_options=WARPS_SAMPLED) if not args.all_warps else {}
    mode = proton.mode.Default(optimizations="clock32,time_shift", buffer_type="global", **sampling)
    records, notes, plain_us = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for schedule in SCHEDULES:
            plain = gluon_forward.hopper_forward(q, k, v, False, scale, schedule=schedule)[0]
            plain_ms = triton.testing.do_bench(
                lambda: gluon_forward.hopper_forward(q, k, v, False, scale, schedule=schedule), return_mode="median")
            clock_mhz = torch.cuda.clock_rate()  # the SM clock now, just after timing (NVML)
            events, traced_out = trace_one(schedule, q, k, v, mode, Path(tmp), args.raw)
            if not torch.equal(plain, traced_out):  # the records must not change what is computed
                raise RuntimeError(f"timeline: the instrumented {schedule} kernel's output differs")
            ctas = sorted({e["cta"] for e in events})
            spans = [max(e["end"] for e in events if e["cta"] == c) - min(e["start"] for e in events if e["cta"] == c)
                     for c in ctas]
            plain_cycles = plain_ms * 1e-3 * clock_mhz * 1e6
            plain_us[schedule] = round(plain_ms * 1e3, 1)
            print(f"{schedule}: {len(events)} events from {len(ctas)} CTAs, warps "
                  f"{sorted({e['warp'] for e in events})}; plain launch {plain_ms * 1e3:.1f} us = "
                  f"{plain_cycles:.0f} cycles at {clock_mhz} MHz; traced programs span "
                  f"{statistics.median(spans):.0f} cycles (median), {max(spans):.0f} (max)", flush=True)
            notes.append(f"{schedule}: the whole uninstrumented launch takes {plain_ms * 1e3:.1f} us, about "
                         f"{plain_cycles:.0f} cycles at the {clock_mhz} MHz SM clock read after timing; an "
                         f"instrumented program spans {statistics.median(spans):.0f} cycles from its first "
                         f"record to its last (median over the {len(ctas)} programs)")
            # Proton's time shift subtracts the records' own cost, which can leave a very short
            # scope with no length at all: such scopes are dropped and counted.
            empty = [e for e in events if e["end"] <= e["start"]]
            events = [e for e in events if e["end"] > e["start"]]
            if empty:
                notes.append(f"{schedule}: {len(empty)} scopes of no length after Proton's time shift dropped")
            for cta in CTAS_KEPT:
                mine = [e for e in events if e["cta"] == cta]
                if not mine:
                    raise RuntimeError(f"timeline: no events for CTA {cta} (kept CTAs: {ctas[:10]}...)")
                t0 = min(e["start"] for e in mine)
                for e in mine:
                    records.append({
                        "suite": "timeline",
                        "case": f"timeline/float16/B{B}H{H}/N{N}x{N}/D{D}/full/{schedule}",
                        "provider": f"gluon-{schedule}", "direction": "fwd",
                        "shape": {"B": B, "H": H, "Hkv": H, "Nq": N, "Nk": N, "D": D},
                        "dtype": "float16", "causal": False, "status": "ok", "unit": "cycles",
                        "schedule": schedule, "cta": cta, "warp": e["warp"], "role": role_of(e["warp"]),
                        "scope": e["scope"], "start": round(e["start"] - t0, 1), "end": round(e["end"] - t0, 1),
                    })
    settings = benchmark.Settings(commit=args.commit, rounds=1)
    prov = benchmark.provenance(settings)
    prov["proton"] = {
        "mode": str(mode), "clock": "each SM's own cycle counter (32-bit); times are cycles from the program's "
                                    "first record, comparable within one program only",
        "warps": "every warp" if args.all_warps else f"warps {WARPS_SAMPLED} of each program (the first of each partition)",
        "note": "; ".join(notes),
        "plain_launch_us": plain_us,  # the uninstrumented launch per schedule, do_bench median
    }
    doc = {"schema": benchdata.SCHEMA_VERSION, "suite": "timeline", "provenance": prov, "records": records}
    path = Path(args.out) / f"timeline.{benchdata.slug(prov['gpu'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path} ({len(records)} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
