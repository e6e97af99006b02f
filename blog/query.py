"""Questions asked of the benchmark records: which ran, what pairs with what, which cases exist.

Everything here derives the grid from the records themselves (sizes, head dims, causal
or not, GPUs), so a benchmark run over another grid changes the answers instead of
emptying them. Standard library only, besides the data format in ``perfdata``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from perfdata import schema, traffic

from .theme import LABELS

DATA_DIR = Path(__file__).resolve().parent.parent / "docs" / "data"
RECORD_FIELDS = ("provider", "direction", "dtype", "causal", "case", "status", "suite")


def load(suite: str, data_dir: Path | None = None, *, required: bool = True) -> list[dict]:
    """Validated documents for ``suite``, one per GPU; a clear error if there are none, or an
    empty list if not ``required`` (a suite not measured yet). A corrupt file always raises."""
    suites = (*schema.SUITES, schema.PROFILE_SUITE, schema.TIMELINE_SUITE)
    if suite not in suites:
        raise ValueError(f"suite must be one of {suites}, got {suite!r}")
    folder = Path(data_dir) if data_dir is not None else DATA_DIR
    docs = schema.load_suite(folder, suite)
    if not docs and required:
        raise schema.BenchDataError(
            f"no {suite}.*.json in {folder}: run scripts/benchmark.py --suite {suite} on a GPU")
    return docs


def provenance_line(doc: dict) -> str:
    """GPU, versions, date and commit of one document, on one line."""
    p = doc["provenance"]
    return (f"{p['gpu']} · torch {p['torch']} · triton {p['triton']} · CUDA {p['cuda']} · "
            f"driver {p['driver']} · {p['date'][:10]} · commit {p['git_commit'][:7]}")


def gpu_label(doc: dict) -> str:
    """A short name for a document's GPU ('H100')."""
    return schema.slug(doc["provenance"]["gpu"]).upper()


def commit_note(docs: list[dict]) -> str | None:
    """One sentence when documents drawn together come from different commits, None when they agree:
    'H100 data: commit c14eddc, 2026-11-25; H200 data: commit 2fd1c1e, 2026-11-25 — different commits, ...'."""
    if len({d["provenance"]["git_commit"] for d in docs}) < 2:
        return None
    names = [gpu_label(d) for d in docs]
    if len(set(names)) < len(names):  # the same GPU twice (a profile beside timings): name the suites too
        names = [f"{name} {d['suite']}" for name, d in zip(names, docs)]
    parts = "; ".join(f"{name} data: commit {d['provenance']['git_commit'][:7]}, {d['provenance']['date'][:10]}"
                      for name, d in zip(names, docs))
    return f"{parts} — different commits, so the kernel code may differ between them."


def square(records: list[dict]) -> list[dict]:
    """Records with as many queries as keys: the production grid, without the decoding cases (Nq = 1)."""
    return [r for r in records if r["shape"]["Nq"] == r["shape"]["Nk"]]


def dispatch_note(docs: dict | list[dict]) -> str | None:
    """What the "flash" provider ran, as the benchmark recorded it, in one sentence per distinct
    rule for one document or several (a page says it once, for every GPU it draws); None when
    no document recorded a rule."""
    docs = [docs] if isinstance(docs, dict) else list(docs)
    by_rule: dict[str, list[str]] = {}
    for doc in docs:
        rule = (doc["provenance"].get("flash_dispatch") or "").strip().rstrip(".")
        if rule:
            by_rule.setdefault(rule, []).append(f"the {gpu_label(doc)} (commit {doc['provenance']['git_commit'][:7]})")
    if not by_rule:
        return None
    return " ".join(f"flash_attention on {' and '.join(where)} chose its kernel: {rule}."
                    for rule, where in by_rule.items())


def gluon_backward_passes(doc: dict) -> set[str]:
    """The backward passes ("dkdv", "dq") that ran as Gluon kernels where the router picks them, by the
    rule the benchmark recorded (older files name ``kernels/hopper_bwd.py`` / ``hopper_dq.py``,
    newer ones ``kernels/gluon/dkdv.py`` / ``gluon/dq.py``)."""
    rule = doc["provenance"].get("flash_dispatch") or ""
    return ({"dkdv"} if "hopper_bwd" in rule or "gluon/dkdv" in rule else set()) | (
        {"dq"} if "hopper_dq" in rule or "gluon/dq" in rule else set())


def timing_note(doc: dict) -> str:
    """How the benchmark timed this document's records, as it recorded it."""
    return doc["provenance"].get("timing") or "timing method not recorded"


def _field(record: dict, key: str):
    return record["shape"][key] if key in schema.SHAPE_KEYS else record.get(key)


def ok(records: list[dict], **match) -> list[dict]:
    """Records that ran cleanly and whose fields (or shape entries: B, H, Hkv, Nq, Nk, D) equal ``match``."""
    unknown = set(match) - set(schema.SHAPE_KEYS) - set(RECORD_FIELDS) - {"step", "warp_specialize"}
    if unknown:
        raise ValueError(f"cannot match on {sorted(unknown)}: use shape keys {schema.SHAPE_KEYS} or {RECORD_FIELDS}")
    return [r for r in records if r["status"] == "ok" and all(_field(r, k) == v for k, v in match.items())]


def median(doc: dict, provider: str, **match) -> float:
    """One record's median time (ms); KeyError, naming the case, if it did not run cleanly."""
    rs = ok(doc["records"], provider=provider, **match)
    if not rs:
        raise KeyError(f"no ok record for {provider} {match} in {doc['suite']}")
    return rs[0]["p50"]


def gpu_time(record: dict) -> float:
    """A record's GPU time (ms): the CUDA-graph replay median where it was measured (no host
    launch cost), else the plain median."""
    return record.get("graph_p50") or record["p50"]


def distinct(records: list[dict], *keys: str) -> list[tuple]:
    """The sorted distinct values of ``keys`` over ``records`` (fields or shape entries)."""
    return sorted({tuple(_field(r, k) for k in keys) for r in records})


def panels(records: list[dict]) -> list[tuple[int, bool]]:
    """The (head dim, causal) combinations present: larger head dims first, full before causal."""
    return sorted(distinct(records, "D", "causal"), key=lambda dc: (-dc[0], dc[1]))


def common_shape(records: list[dict]) -> dict:
    """The shape entries every record shares (say {'B': 4, 'Nq': 8192, ...}), for captions."""
    keys = [k for k in schema.SHAPE_KEYS if len(distinct(records, k)) == 1]
    return {k: records[0]["shape"][k] for k in keys}


def shape_caption(records: list[dict], skip=("Nk", "Hkv")) -> str:
    """'B=4, N=8192': what all records share, Nq shown as N (and Nk, Hkv when they differ)."""
    shape = common_shape(records)
    if shape.get("Nq") is not None and shape.get("Nq") != shape.get("Nk"):
        skip = tuple(k for k in skip if k != "Nk")
    return ", ".join(f"{'N' if k == 'Nq' else k}={v}" for k, v in shape.items() if k not in skip)


def ratio_summary(doc: dict, direction: str, vs: str, min_n: int = 4096) -> tuple[float, float]:
    """(min, max) of our TFLOP/s over ``vs``'s, same case, non-GQA, N >= min_n."""
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
    ratios = list(ratios_by_case(doc, direction, vs, min_n=min_n).values())
    if not ratios:
        raise KeyError(f"no comparable {direction} records against {vs} with N >= {min_n}")
    return min(ratios), max(ratios)


def ratios_by_case(doc: dict, direction: str, vs: str, *, min_n: int = 0) -> dict:
    """case -> our TFLOP/s / ``vs``'s, over cases where both ran (non-GQA, Nq = Nk)."""
    by_case = defaultdict(dict)
    for r in square(doc["records"]):
        if r["status"] == "ok" and r["direction"] == direction:
            by_case[r["case"]][r["provider"]] = r
    return {case: rs["flash"]["tflops"] / rs[vs]["tflops"] for case, rs in sorted(by_case.items())
            if "flash" in rs and vs in rs and rs["flash"]["shape"]["Nq"] >= min_n
            and rs["flash"]["shape"]["H"] == rs["flash"]["shape"]["Hkv"]}


def matmul_ceiling(doc: dict, dtype: str) -> float | None:
    """The measured matmul rate (TFLOP/s) for ``dtype`` on the document's GPU, None if not measured."""
    key = {"float32": "matmul_fp32_tflops", "float16": "matmul_fp16_tflops", "bfloat16": "matmul_fp16_tflops"}
    if dtype not in key:
        raise ValueError(f"no matmul ceiling for dtype {dtype!r}")
    return doc["provenance"]["ceilings"].get(key[dtype])


def roof_fractions(doc: dict, provider: str) -> dict[int, float]:
    """N -> achieved FLOP/s over the roof at that intensity (above 1: the cache served re-reads)."""
    if provider not in traffic.DESIGNS:
        raise ValueError(f"no traffic model for {provider!r}; models: {sorted(traffic.DESIGNS)}")
    c = doc["provenance"]["ceilings"]
    out = {}
    for r in ok(doc["records"], provider=provider):
        s = r["shape"]
        t = traffic.DESIGNS[provider](s["Nq"], s["Nk"], s["D"], elem_bytes=traffic.element_bytes(r["dtype"]),
                                      heads=s["B"] * s["H"])
        roof = min(c["copy_gbps"] * 1e9 * t.intensity, matmul_ceiling(doc, r["dtype"]) * 1e12)
        out[s["Nq"]] = t.flops / (r["p50"] * 1e-3) / roof
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- the ablation (post 4)

def ablation_cases(doc: dict) -> list[tuple[int, bool]]:
    """The (head dim, causal) cases the ablation ran, from its rung records."""
    return panels([r for r in doc["records"] if r.get("step") is not None])


def ablation_rows(doc: dict, d: int, causal: bool) -> list[dict]:
    """The rung records of one ablation case, in ladder order, each with ``measured_speedup``
    (over the previous rung) and ``predicted_tflops`` (previous measurement × prediction)."""
    rs = sorted((r for r in doc["records"] if r.get("step") is not None and r["shape"]["D"] == d
                 and r["causal"] == causal), key=lambda r: r["step"])
    if not rs:
        raise KeyError(f"no ablation rungs for D={d}, causal={causal}; cases: {ablation_cases(doc)}")
    out, prev = [], None
    for r in rs:
        good = r["status"] == "ok" and prev is not None and prev["status"] == "ok"
        out.append({**r, "measured_speedup": r["tflops"] / prev["tflops"] if good else None,
                    "predicted_tflops": prev["tflops"] * r["predicted_speedup"] if good else None})
        prev = r
    return out


def ablation_reference(doc: dict, provider: str, d: int, causal: bool) -> float | None:
    """TFLOP/s of a reference provider (cuDNN, FA2) in one ablation case, None if it did not run."""
    rs = ok(doc["records"], provider=provider, D=d, causal=causal)
    return rs[0]["tflops"] if rs else None


def round_spread(records: list[dict]) -> list[float]:
    """Per ok record timed in several rounds: slowest round median / fastest round median - 1."""
    return [max(r["round_p50"]) / min(r["round_p50"]) - 1 for r in records
            if r["status"] == "ok" and len(r.get("round_p50") or []) > 1]


# ----------------------------------------------------------------------------- warp specialisation (post 4)

_COMPILED_KEYS = ("registers", "shared_bytes", "ptx_lines", "ptx_wgmma", "ptx_ex2", "ptx_fma_f32", "ptx_mul_f32")


def _tile_key(config: dict) -> tuple:
    return tuple(sorted(config.items()))


def warpspec_pairs(doc: dict) -> list[dict]:
    """Each tile with the loop's ``warp_specialize`` flag off and on, per case.

    Pairs come from the records' ``config`` and ``warp_specialize`` fields. The benchmark
    writes those only for variants that ran, so a failed variant carries neither: within
    one case, a plain variant left without a twin is paired with the case's one failed
    variant if there is exactly one, and otherwise its twin is None.
    """
    by_case = defaultdict(list)
    for r in doc["records"]:
        by_case[r["case"]].append(r)
    out = []
    for case, rs in by_case.items():
        plain = {_tile_key(r["config"]): r for r in rs if r.get("warp_specialize") is False and r.get("config")}
        special = {_tile_key(r["config"]): r for r in rs if r.get("warp_specialize") is True and r.get("config")}
        failed = [r for r in rs if r["status"] != "ok" and "warp_specialize" not in r and r["provider"] not in LABELS]
        lonely = [key for key in plain if key not in special]
        if len(lonely) == 1 and len(failed) == 1:
            special[lonely[0]] = failed[0]
        for key, p in plain.items():
            ws = special.get(key)
            compiled = (p.get("compiler"), (ws or {}).get("compiler"))
            same = all(compiled) and all(compiled[0].get(k) == compiled[1].get(k) for k in _COMPILED_KEYS)
            refs = {prov: next((r["tflops"] for r in rs if r["provider"] == prov and r["status"] == "ok"), None)
                    for prov in ("flash", "sdpa-cudnn")}
            out.append(dict(case=case, D=p["shape"]["D"], causal=p["causal"], tile=p["config"], plain=p, ws=ws,
                            same_code=same, setmaxnreg=((ws or {}).get("compiler") or {}).get("ptx_setmaxnreg"),
                            flash=refs["flash"], cudnn=refs["sdpa-cudnn"]))
    return sorted(out, key=lambda x: (-x["D"], x["causal"], _tile_key(x["tile"])))


def profile_steps(prof: dict) -> dict:
    """(causal, step name) -> the profile record of each ablation step Nsight Compute measured."""
    return {(r["causal"], r["provider"]): r for r in prof["records"]
            if r["group"] == "ablation" and r["status"] == "ok"
            and None not in (r["measured"]["dram_read_bytes"], r["measured"]["dram_write_bytes"])}


def same_gpu_doc(docs: list[dict], gpu: str) -> dict:
    """The document measured on ``gpu`` if there is one, else the first."""
    return next((d for d in docs if d["provenance"]["gpu"] == gpu), docs[0])


# ----------------------------------------------------------------------------- the Gluon kernel (post 5)

def hopper_cases(doc: dict) -> list[tuple[int, bool]]:
    """The (head dim, causal) cases of the hopper suite."""
    return panels(doc["records"])


def separated(a: dict, b: dict) -> bool:
    """Whether two ok records' timing rounds do not overlap: every round median of one is below
    every round median of the other. Anything less is not a measured difference."""
    ra, rb = a.get("round_p50") or [a["p50"]], b.get("round_p50") or [b["p50"]]
    return max(ra) < min(rb) or max(rb) < min(ra)


def tflops_range(record: dict) -> tuple[float, float]:
    """(lowest, highest) TFLOP/s over an ok record's timing rounds."""
    rounds = record.get("round_p50") or [record["p50"]]
    return record["tflops"] * record["p50"] / max(rounds), record["tflops"] * record["p50"] / min(rounds)


def hopper_rows(doc: dict, d: int, causal: bool) -> list[dict]:
    """One case's records in the order they were run, each with ``vs_serial`` (its TFLOP/s over
    the default Gluon kernel's, None where either did not run), ``spread`` (its round spread)
    and ``beyond_noise`` (its rounds and the default's do not overlap)."""
    rs = [r for r in doc["records"] if r["shape"]["D"] == d and r["causal"] == causal]
    if not rs:
        raise KeyError(f"no hopper records for D={d}, causal={causal}; cases: {hopper_cases(doc)}")
    base = next((r for r in rs if r["provider"] == "gluon-serial" and r["status"] == "ok"), None)
    out = []
    for r in rs:
        good = base is not None and r["status"] == "ok"
        spread = round_spread([r])
        out.append({**r, "vs_serial": r["tflops"] / base["tflops"] if good else None,
                    "spread": spread[0] if spread else None,
                    "beyond_noise": separated(r, base) if good and r is not base else False})
    return out


# ----------------------------------------------------------------------------- the timeline (post 5)

# Rows of a program's timeline, top to bottom: the warp that feeds, then the two that compute.
TIMELINE_ROW_ORDER = ("producer", "consumer 0", "consumer 1")
SCOPE_KINDS = ("matmul", "softmax", "load", "wait", "other")


def scope_kind(scope: str) -> str:
    """What a scope name says its warp was doing: 'wait', 'matmul', 'softmax', 'load' or 'other'.

    Scope names are the kernel's instrumentation labels ("wait K", "QK^T", "PV", "softmax",
    "load K/V", ...); a new name falls in the first kind whose words it contains.
    """
    if not isinstance(scope, str):
        raise TypeError(f"scope must be a str, got {type(scope).__name__}")
    name = scope.lower()
    words = set(re.split(r"[^a-z0-9]+", name))
    if "wait" in words:
        return "wait"
    if "softmax" in name or "exp" in words:
        return "softmax"
    if name.startswith(("qk", "pv")) or words & {"mma", "wgmma", "matmul", "dot", "gemm"}:
        return "matmul"
    if words & {"load", "loads", "tma", "copy"}:
        return "load"
    return "other"


def _ok_events(doc: dict) -> list[dict]:
    if doc.get("suite") != schema.TIMELINE_SUITE:
        raise ValueError(f"expected a {schema.TIMELINE_SUITE} document, got suite {doc.get('suite')!r}")
    return [r for r in doc["records"] if r["status"] == "ok"]


def timeline_cases(doc: dict) -> list[dict]:
    """The traced cases in the order of the file: case, schedule, provider, shape, dtype, causal,
    and ``ctas``, the programs traced (sorted)."""
    cases: dict[str, dict] = {}
    for r in _ok_events(doc):
        c = cases.setdefault(r["case"], {k: r[k] for k in ("case", "schedule", "provider", "shape", "dtype", "causal")}
                             | {"ctas": set()})
        c["ctas"].add(r["cta"])
    return [{**c, "ctas": sorted(c["ctas"])} for c in cases.values()]


def timeline_unit(doc: dict) -> str:
    """The unit of a timeline's start and end times: 'ns' or 'cycles' (one per file)."""
    units = {r["unit"] for r in _ok_events(doc)}
    if len(units) != 1:
        raise ValueError(f"a timeline needs one time unit, got {sorted(units)}")
    return units.pop()


def timeline_events(doc: dict, case: str, cta: int | None = None) -> list[dict]:
    """The events of one case (of one program if ``cta`` is given), in row order (producer,
    consumer 0, consumer 1; warps in order), each warp's events by start time."""
    rs = [r for r in _ok_events(doc) if r["case"] == case and (cta is None or r["cta"] == cta)]
    if not rs:
        known = {c["case"]: c["ctas"] for c in timeline_cases(doc)}
        raise KeyError(f"no events for program {cta} of {case!r}; traced: {known}")
    return sorted(rs, key=lambda r: (TIMELINE_ROW_ORDER.index(r["role"]), r["warp"], r["cta"], r["start"]))


def timeline_warps(events: list[dict]) -> list[tuple[str, int]]:
    """The distinct (role, warp) of ``events``, in row order."""
    return sorted({(r["role"], r["warp"]) for r in events}, key=lambda rw: (TIMELINE_ROW_ORDER.index(rw[0]), rw[1]))


def _union(intervals) -> list[tuple[float, float]]:
    """Overlapping or touching intervals merged, sorted."""
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def _length(intervals) -> float:
    return sum(b - a for a, b in intervals)


def _intersection(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total length of the overlap of two merged, sorted interval lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def program_times(doc: dict, case: str) -> dict[int, float]:
    """Program (CTA) -> time from its first event to its last (in the file's unit), for one case."""
    out: dict[int, float] = {}
    for r in timeline_events(doc, case):
        out[r["cta"]] = max(out.get(r["cta"], 0.0), r["end"])
    return dict(sorted(out.items()))


def timeline_summary(doc: dict, case: str) -> dict[str, dict]:
    """Per role of one case, over its warps and programs: ``share`` (kind -> fraction of the
    warps' time, first event to last, spent in scopes of that kind; nested scopes of one kind
    count once), ``softmax_under_matmul`` (the fraction of its softmax time during which a warp
    of the other consumer was inside a matmul scope; None for the producer or without softmax)
    and ``warps`` (how many warp traces it sums)."""
    events = timeline_events(doc, case)
    per_warp: dict[tuple, list[dict]] = defaultdict(list)
    for r in events:
        per_warp[(r["role"], r["cta"], r["warp"])].append(r)
    matmul = defaultdict(list)  # (role, cta) -> matmul intervals of all its warps
    for (role, cta, _), rs in per_warp.items():
        matmul[(role, cta)] += [(r["start"], r["end"]) for r in rs if scope_kind(r["scope"]) == "matmul"]
    out: dict[str, dict] = {}
    for role in TIMELINE_ROW_ORDER:
        warps = {key: rs for key, rs in per_warp.items() if key[0] == role}
        if not warps:
            continue
        span = sum(max(r["end"] for r in rs) - min(r["start"] for r in rs) for rs in warps.values())
        share = {}
        for kind in SCOPE_KINDS:
            spent = sum(_length(_union((r["start"], r["end"]) for r in rs if scope_kind(r["scope"]) == kind))
                        for rs in warps.values())
            if spent:
                share[kind] = spent / span
        other = {"consumer 0": "consumer 1", "consumer 1": "consumer 0"}.get(role)
        softmax = hidden = 0.0
        for (_, cta, _), rs in warps.items():
            mine = _union((r["start"], r["end"]) for r in rs if scope_kind(r["scope"]) == "softmax")
            softmax += _length(mine)
            if other:
                hidden += _intersection(mine, _union(matmul[(other, cta)]))
        under = hidden / softmax if other and softmax and any(k[0] == other for k in per_warp) else None
        out[role] = {"share": share, "softmax_under_matmul": under, "warps": len(warps)}
    return out
