"""A synthetic timeline document (the format of docs/data/timeline.<gpu>.json), for tests and for
trying the site's build before a real trace exists. Nothing here is measured.

    python tests/timeline_synthetic.py docs/data/timeline.h100.json [cycles]   # never commit that file

Each program has two consumer warpgroups (warps 0-3 and 4-7) and one producer warp (8). The
times follow a made-up cost per scope with a little jitter: enough to look like a trace and to
give the summaries something to compute, not a model of the kernel.
"""

from __future__ import annotations

import json
import random
import sys

# Made-up costs (ns) per scope; the names are kernels/hopper.py's.
COST = {"load K/V": 90.0, "wait empty": 60.0, "wait K": 40.0, "QK^T": 260.0, "softmax": 300.0, "wait V": 30.0,
        "PV": 240.0, "wait turn": 0.0, "wait K/V": 30.0, "PV + QK^T": 500.0, "epilogue": 350.0}
SCHEDULES = {"serial": "gluon-serial", "pingpong": "gluon-pingpong", "pipelined": "gluon-pipelined"}
PROVENANCE = {"gpu": "NVIDIA H100 80GB HBM3", "sm_count": 132, "driver": "0.0 (synthetic)", "cuda": "0.0",
              "torch": "0.0", "triton": "0.0", "git_commit": "0000000synthetic", "date": "2030-01-01T00:00:00Z",
              "mode": "synthetic: not measured", "ceilings": {},
              "proton": {"mode": "synthetic", "clock": "made up: no clock was read",
                         "note": "synthetic data for tests; the instrumented kernel was not run"}}


def _warp_events(rng, role, warps, scopes_per_tile, tiles, offset, gap):
    """The events of one role's warps: the same scope sequence for each warp, a few ns apart."""
    out = []
    for warp in warps:
        t = offset + rng.uniform(0, 8)
        for tile in range(tiles):
            for scope in scopes_per_tile(tile):
                length = COST[scope] * rng.uniform(0.85, 1.15) + (gap if scope == "wait turn" else 0)
                out.append((warp, role, scope, t, t + length))
                t += length + rng.uniform(1, 4)
        if role != "producer":
            out.append((warp, role, "epilogue", t, t + COST["epilogue"]))
    return out


def program(rng, schedule: str, tiles: int = 7) -> list[tuple]:
    """(warp, role, scope, start, end) of one program under ``schedule``."""
    producer = _warp_events(rng, "producer", [8], lambda t: ("wait empty", "load K/V"), tiles + 1, 0, 0)
    if schedule == "pingpong":
        # Each consumer waits its turn while the other multiplies, then multiplies during the other's softmax.
        def tile(t):
            return ("wait K/V", "wait turn", "PV + QK^T", "softmax")
        matmuls = COST["PV + QK^T"]
        c0 = _warp_events(rng, "consumer 0", range(4), tile, tiles, 150, matmuls - COST["softmax"])
        c1 = _warp_events(rng, "consumer 1", range(4, 8), tile, tiles, 150 + matmuls, matmuls - COST["softmax"])
    else:
        def tile(t):
            return ("wait K", "QK^T", "softmax", "wait V", "PV")
        c0 = _warp_events(rng, "consumer 0", range(4), tile, tiles, 150, 0)
        c1 = _warp_events(rng, "consumer 1", range(4, 8), tile, tiles, 170, 0)
    events = producer + c0 + c1
    first = min(e[3] for e in events)
    return [(w, role, scope, start - first, end - first) for w, role, scope, start, end in events]


def timeline_doc(schedules=("serial", "pingpong"), ctas=(0, 1), tiles: int = 7, seed: int = 0, unit: str = "ns",
                 warps=range(9)) -> dict:
    """The document: one case per schedule, ``ctas`` programs each, the events of ``warps`` only,
    times in ns or in cycles (of a made-up 1.755 GHz clock)."""
    rng = random.Random(seed)
    per_ns = {"ns": 1.0, "cycles": 1.755}[unit]
    records = []
    for schedule in schedules:
        case = f"timeline/float16/B1H4/N2048x2048/D128/full/{schedule}"
        for cta in ctas:
            events = [e for e in program(rng, schedule, tiles) if e[0] in warps]
            first = min(e[3] for e in events)
            for warp, role, scope, start, end in events:
                start, end = (start - first) * per_ns, (end - first) * per_ns
                records.append({"suite": "timeline", "case": case, "provider": SCHEDULES[schedule], "direction": "fwd",
                                "shape": {"B": 1, "H": 4, "Hkv": 4, "Nq": 2048, "Nk": 2048, "D": 128},
                                "dtype": "float16", "causal": False, "status": "ok", "unit": unit,
                                "schedule": schedule, "cta": cta, "warp": warp, "role": role, "scope": scope,
                                "start": round(start, 1), "end": round(end, 1)})
    return {"schema": 1, "suite": "timeline", "provenance": json.loads(json.dumps(PROVENANCE)), "records": records}


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["ns"], ["cycles"]):
        sys.exit(f"usage: {sys.argv[0]} OUT.json [ns|cycles]")
    with open(sys.argv[1], "w") as f:
        json.dump(timeline_doc(unit=(sys.argv[2:] or ["ns"])[0]), f, indent=1)
