"""The benchmark data format: what scripts/benchmark.py writes and the site reads.

Standard library only, so the GPU box that runs the benchmarks needs nothing more
than torch and triton. One JSON file per suite and GPU:
``docs/data/<suite>.<gpu-slug>.json`` = {"schema", "suite", "provenance", "records"}.
The profile and timeline suites (counters, and events inside one kernel) have validators of
their own; ``validate`` dispatches on the suite.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1
SUITES = ("seed", "ladder", "production", "ablation", "warpspec", "hopper", "noise")
STATUSES = ("ok", "wrong", "oom", "unsupported", "compile-error", "error")

PROVENANCE_KEYS = {
    "gpu": str, "sm_count": int, "driver": str, "cuda": str, "torch": str, "triton": str,
    "git_commit": str, "date": str, "mode": str, "ceilings": dict,
}
CEILING_KEYS = ("copy_gbps", "matmul_fp16_tflops", "matmul_fp32_tflops")
# Optional: "flash_dispatch", one sentence saying which kernel flash_attention ran (files from
# before it chose between kernels have none); "commit_note", why git_commit was corrected.
# FlashAttention-4, when the benchmark looked for it: {"status": "ok", "version", "cutlass_dsl", "site"}
# or {"status": "unsupported", "reason"} (files written before it was a provider have no entry).
FA4_STATUSES = ("ok", "unsupported")
RECORD_KEYS = {
    "suite": str, "case": str, "provider": str, "direction": str, "shape": dict, "dtype": str,
    "causal": bool, "status": str, "unit": str,
}
SHAPE_KEYS = ("B", "H", "Hkv", "Nq", "Nk", "D")
TIMING_KEYS = ("p20", "p50", "p80")


class BenchDataError(ValueError):
    """A data file that is missing, corrupt, partial or of the wrong shape."""


def slug(gpu_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; anything else -> a filename-safe slug."""
    m = re.search(r"\b([A-Z]\d{2,3}[A-Z]?)\b", gpu_name.upper())
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "device"


def _fail(path, msg):
    raise BenchDataError(f"{path}: {msg}")


def _records(doc: dict, path, keys: dict, suite: str):
    """(where, record) for each record, after the checks every suite shares: a non-empty list of
    objects with ``keys`` of the right types, this file's suite, a known status, a valid shape."""
    records = doc.get("records")
    if not isinstance(records, list) or not records:
        _fail(path, "records must be a non-empty list")
    for i, rec in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(rec, dict):
            _fail(path, f"{where} is not an object")
        for key, typ in keys.items():
            if not isinstance(rec.get(key), typ):
                _fail(path, f"{where}.{key} missing or not {typ.__name__}")
        if rec["suite"] != suite:
            _fail(path, f"{where}.suite {rec['suite']!r} differs from the file's")
        if rec["status"] not in STATUSES:
            _fail(path, f"{where}.status {rec['status']!r} not in {STATUSES}")
        for key in SHAPE_KEYS:
            if not isinstance(rec["shape"].get(key), int) or rec["shape"][key] < 0:
                _fail(path, f"{where}.shape.{key} missing or not a non-negative int")
        yield where, rec


def validate(doc: dict, path: str = "<data>") -> dict:
    if not isinstance(doc, dict):
        _fail(path, "top level must be an object")
    if doc.get("suite") == PROFILE_SUITE:
        return validate_profile(doc, path)
    if doc.get("suite") == TIMELINE_SUITE:
        return validate_timeline(doc, path)
    if doc.get("schema") != SCHEMA_VERSION:
        _fail(path, f"schema must be {SCHEMA_VERSION}, got {doc.get('schema')!r}")
    if doc.get("suite") not in SUITES:
        _fail(path, f"suite must be one of {SUITES}, got {doc.get('suite')!r}")
    prov = _provenance(doc, path, PROVENANCE_KEYS)
    for key in CEILING_KEYS:
        val = prov["ceilings"].get(key)
        if val is not None and not (isinstance(val, (int, float)) and val > 0):
            _fail(path, f"provenance.ceilings.{key} must be a positive number or null")
    _validate_fa4(prov.get("fa4"), path)
    _validate_shards(prov, path)
    for where, rec in _records(doc, path, RECORD_KEYS, doc["suite"]):
        if rec["direction"] not in ("fwd", "bwd"):
            _fail(path, f"{where}.direction must be fwd or bwd")
        if rec["status"] == "ok":
            vals = [rec.get(k) for k in TIMING_KEYS]
            if not all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in vals):
                _fail(path, f"{where}: an ok record needs positive p20/p50/p80")
            if not vals[0] <= vals[1] <= vals[2]:
                _fail(path, f"{where}: p20 <= p50 <= p80 violated")
        elif not rec.get("reason"):
            _fail(path, f"{where}: status {rec['status']} needs a reason")
        if "kernel" in rec:
            _validate_kernel(rec["kernel"], rec["direction"], f"{path}: {where}.kernel")
    return doc


# Optional on a record (files from before the router named its kernels have none): "kernel", which
# of our kernels ran each pass, {"forward": name, "dkdv": name, "dq": name (backward records),
# "why": {pass: sentence}}; names are the router's ("pointer", "splitk", "gluon") or, for
# providers that are one kernel, that kernel ("basic", "vectorized", "ablation", "warpspec").
def _validate_kernel(kernel, direction: str, where: str) -> None:
    if not isinstance(kernel, dict):
        raise BenchDataError(f"{where} must be an object")
    passes = ("forward", "dkdv", "dq") if direction == "bwd" else ("forward",)
    for name in passes:
        if not isinstance(kernel.get(name), str) or not kernel[name]:
            raise BenchDataError(f"{where}.{name} missing or not a non-empty string")
    if not isinstance(kernel.get("why", {}), dict):
        raise BenchDataError(f"{where}.why must be an object")


def _provenance(doc: dict, path: str, keys: dict) -> dict:
    """The document's provenance block, checked to hold ``keys`` with their types."""
    prov = doc.get("provenance")
    if not isinstance(prov, dict):
        _fail(path, "missing provenance block")
    for key, typ in keys.items():
        if not isinstance(prov.get(key), typ):
            _fail(path, f"provenance.{key} missing or not {typ.__name__}")
    return prov


def _validate_fa4(fa4, path) -> None:
    if fa4 is None:
        return
    if not isinstance(fa4, dict) or fa4.get("status") not in FA4_STATUSES:
        _fail(path, f"provenance.fa4 must be an object with status in {FA4_STATUSES}")
    needed = ("version",) if fa4["status"] == "ok" else ("reason",)
    for key in needed:
        if not (isinstance(fa4.get(key), str) and fa4[key]):
            _fail(path, f"provenance.fa4.{key} missing: a {fa4['status']} FlashAttention-4 entry needs it")


def _validate_shards(prov: dict, path) -> None:
    """A shard file names its place (``shard``); a merged file, how many shards it came from."""
    shard = prov.get("shard")
    if shard is not None:
        if not (isinstance(shard, dict) and isinstance(shard.get("index"), int) and isinstance(shard.get("count"), int)
                and 1 <= shard["index"] <= shard["count"]):
            _fail(path, "provenance.shard must hold ints index and count with 1 <= index <= count")
        if not (isinstance(shard.get("cases"), list) and shard["cases"]
                and all(isinstance(c, str) for c in shard["cases"])):
            _fail(path, "provenance.shard.cases must be the non-empty list of the suite's case names")
    if "shards" in prov:
        runs = prov.get("shard_runs")
        if not (isinstance(prov["shards"], int) and prov["shards"] >= 1 and isinstance(runs, list)
                and len(runs) == prov["shards"]):
            _fail(path, "provenance.shards must be a positive int with one shard_runs entry per shard")


# The profile suite (scripts/ncu_profile.py): Nsight Compute counters per kernel launch, not timings,
# so it has a validator of its own. Each ok record carries ``measured`` (the quantities below,
# a number or None when this ncu had no metric for it) and ``model`` (the traffic model's bytes).
PROFILE_SUITE = "profile"
PROFILE_PROVENANCE_KEYS = {
    **{k: t for k, t in PROVENANCE_KEYS.items() if k != "ceilings"},
    "ncu": str, "clock_control": str, "metric_sources": dict, "metrics_dropped": list,
}
PROFILE_RECORD_KEYS = {k: t for k, t in RECORD_KEYS.items() if k != "unit"} | {"group": str}
PROFILE_MEASURED_KEYS = ("duration_ns", "dram_read_bytes", "dram_write_bytes", "l2_bytes", "tensor_pct", "xu_pct",
                         "occupancy_pct", "sm_hz", "dram_hz")
PROFILE_MODEL_KEYS = ("requested_bytes", "compulsory_bytes", "flops")


def validate_profile(doc: dict, path: str = "<data>") -> dict:
    """Check a profile-suite document; raise BenchDataError naming the first problem."""
    if doc.get("schema") != SCHEMA_VERSION:
        _fail(path, f"schema must be {SCHEMA_VERSION}, got {doc.get('schema')!r}")
    prov = _provenance(doc, path, PROFILE_PROVENANCE_KEYS)
    if prov["clock_control"] not in ("none", "base"):
        _fail(path, f"provenance.clock_control must be 'none' or 'base', got {prov['clock_control']!r}")
    for where, rec in _records(doc, path, PROFILE_RECORD_KEYS, PROFILE_SUITE):
        if rec["status"] != "ok":
            if not rec.get("reason"):
                _fail(path, f"{where}: status {rec['status']} needs a reason")
            continue
        measured, model = rec.get("measured"), rec.get("model")
        if not isinstance(measured, dict) or not isinstance(model, dict):
            _fail(path, f"{where}: an ok record needs 'measured' and 'model' objects")
        for key in PROFILE_MEASURED_KEYS:
            if key not in measured:
                _fail(path, f"{where}.measured.{key} missing (null when not collected)")
            val = measured[key]
            if val is not None and not (isinstance(val, (int, float)) and math.isfinite(val) and val >= 0):
                _fail(path, f"{where}.measured.{key} must be a non-negative number or null, got {val!r}")
        if not measured["duration_ns"]:
            _fail(path, f"{where}: an ok record needs a positive measured.duration_ns")
        for key in PROFILE_MODEL_KEYS:
            if not (isinstance(model.get(key), int) and model[key] > 0):
                _fail(path, f"{where}.model.{key} must be a positive int")
    return doc


# The timeline suite (Proton's intra-kernel instrumentation): one record per (case, program, warp,
# scope) event, with its start and end from that program's first event, in ns or in the SM's clock
# cycles (``unit``, one for the whole file). Events, not timings, so it too has a validator of its
# own. provenance.proton says how the trace was taken: Proton's mode, which clock the times come
# from, and a note (how the instrumented kernel compares with the real one); optionally ``warps``,
# which warps of each program were recorded.
TIMELINE_SUITE = "timeline"
TIMELINE_UNITS = ("ns", "cycles")
TIMELINE_PROVENANCE_KEYS = {**PROVENANCE_KEYS, "proton": dict}
PROTON_KEYS = ("mode", "clock", "note")
TIMELINE_ROLES = ("consumer 0", "consumer 1", "producer")
TIMELINE_EVENT_KEYS = {"schedule": str, "role": str, "scope": str}


def _count(value) -> bool:
    """A non-negative int that is not a bool (True would pass isinstance(x, int))."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_timeline(doc: dict, path: str = "<data>") -> dict:
    """Check a timeline-suite document; raise BenchDataError naming the first problem."""
    if doc.get("schema") != SCHEMA_VERSION:
        _fail(path, f"schema must be {SCHEMA_VERSION}, got {doc.get('schema')!r}")
    prov = _provenance(doc, path, TIMELINE_PROVENANCE_KEYS)
    for key in PROTON_KEYS:
        if not (isinstance(prov["proton"].get(key), str) and prov["proton"][key]):
            _fail(path, f"provenance.proton.{key} missing or not a non-empty str")
    if not isinstance(prov["proton"].get("warps", ""), str):
        _fail(path, "provenance.proton.warps, when given, must say in a str which warps were recorded")
    schedules, roles, units = {}, {}, {}  # case -> schedule; (case, cta, warp) -> role; one unit per file
    for where, rec in _records(doc, path, RECORD_KEYS, TIMELINE_SUITE):
        if rec["status"] != "ok":
            if not rec.get("reason"):
                _fail(path, f"{where}: status {rec['status']} needs a reason")
            continue
        if rec["unit"] not in TIMELINE_UNITS:
            _fail(path, f"{where}.unit must be one of {TIMELINE_UNITS}, got {rec['unit']!r}")
        if units.setdefault("file", rec["unit"]) != rec["unit"]:
            _fail(path, f"{where}.unit {rec['unit']!r} differs from the file's first event's, {units['file']!r}")
        for key, typ in TIMELINE_EVENT_KEYS.items():
            if not (isinstance(rec.get(key), typ) and rec[key]):
                _fail(path, f"{where}.{key} missing or not a non-empty {typ.__name__}")
        for key in ("cta", "warp"):
            if not _count(rec.get(key)):
                _fail(path, f"{where}.{key} must be a non-negative int, got {rec.get(key)!r}")
        if rec["role"] not in TIMELINE_ROLES:
            _fail(path, f"{where}.role {rec['role']!r} not in {TIMELINE_ROLES}")
        start, end = rec.get("start"), rec.get("end")
        if not (_time(start) and _time(end)):
            _fail(path, f"{where}: start and end must be finite numbers, got {start!r} and {end!r}")
        if not 0 <= start < end:
            _fail(path, f"{where}: needs 0 <= start < end, got start {start} and end {end}")
        if schedules.setdefault(rec["case"], rec["schedule"]) != rec["schedule"]:
            _fail(path, f"{where}: case {rec['case']!r} has two schedules, "
                        f"{schedules[rec['case']]!r} and {rec['schedule']!r}")
        warp = (rec["case"], rec["cta"], rec["warp"])
        if roles.setdefault(warp, rec["role"]) != rec["role"]:
            _fail(path, f"{where}: warp {rec['warp']} of program {rec['cta']} in {rec['case']!r} has two roles, "
                        f"{roles[warp]!r} and {rec['role']!r}")
    return doc


def load(path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise BenchDataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchDataError(f"{path}: not valid JSON (truncated or corrupt?): {e}") from None
    return validate(doc, str(path))


def load_suite(data_dir, suite: str) -> list[dict]:
    """Every GPU's file for ``suite`` in ``data_dir`` (sorted by GPU), validated."""
    files = sorted(Path(data_dir).glob(f"{suite}.*.json"))
    return [load(f) for f in files]


def write_atomic(path, doc: dict) -> None:
    """Validate, then write via a temp file and rename: a crash never leaves half a file."""
    validate(doc, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
