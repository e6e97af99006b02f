#!/usr/bin/env python3

"""Profile the flash forward kernel and post 4's ablation steps with Nsight Compute.

    python scripts/ncu_profile.py                    # on a GPU box with ncu: docs/data/profile.<gpu>.json
    python scripts/ncu_profile.py --out /tmp/p --raw-dir /tmp/p/raw   # also keep ncu's reports and logs
    python scripts/ncu_profile.py --list             # the cases and the ncu command; runs nothing
    python scripts/ncu_profile.py --interpret --ncu FAKE --out /tmp/p   # CPU pipeline test (tests/test_profile.py)

Needs torch, triton, the standard library and the ``ncu`` command line profiler. Per
profiled launch it records DRAM and L2 bytes, tensor-pipe and special-function (XU)
pipe utilisation, achieved occupancy, duration and the SM and DRAM clocks, beside the
bytes the traffic model (`perfdata.traffic`) says the kernel requests.

How: the script re-invokes itself with ``--child`` under ``ncu``. The child warms each
case up (compilation, autotuning), checks its output against float64, and launches it
once more between cudaProfilerStart and cudaProfilerStop; ncu runs with
``--profile-from-start off`` and a kernel-name filter, so only that launch is profiled.
The child writes a manifest of what it launched; the parent reads ncu's raw CSV and
refuses to pair rows with cases unless count, kernel name, grid and block all agree.
The output file is written via a temp file and a rename: a failed run writes nothing.
Named ncu_profile.py, not profile.py: a script's folder comes first on sys.path, and a
scripts/profile.py there hid the standard library's profile module from cProfile (FlashAttention-4
imports it), so every FA4 import in scripts/benchmark.py failed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL_FILTER = "regex:_flash_fwd_kernel"  # ncu --kernel-name: the forward kernel, not SDPA's or a copy's
KERNEL_NAME = re.compile(r"_flash_fwd_kernel")
LOWP_TOL = 5e-3  # fp16 output error allowed, relative to max |reference| (as scripts/benchmark.py)

# What the page needs, each from the first of its candidate metrics that this ncu knows, with the
# unit it must have after conversion to base units (None: a count, any unit). Hopper runs wgmma on
# the tensor pipe's "gmma" sub-pipe, so the gmma cycles come first; older names are the fallbacks.
QUANTITIES = {
    "duration_ns": (("gpu__time_duration.sum",), "nsecond"),
    "dram_read_bytes": (("dram__bytes_read.sum",), "byte"),
    "dram_write_bytes": (("dram__bytes_write.sum",), "byte"),
    "l2_bytes": (("lts__t_bytes.sum",), "byte"),
    "l2_hit_pct": (("lts__t_sector_hit_rate.pct",), "%"),
    "l1_bytes": (("l1tex__t_bytes.sum",), "byte"),
    "shared_wavefronts": (("l1tex__data_pipe_lsu_wavefronts_mem_shared.sum",), None),
    "tensor_pct": (("sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
                    # Hopper (ncu 2025+): cycles the tensor pipe was busy; the gmma *instruction* count
                    # below is no utilisation (one wgmma keeps the pipe busy for many cycles).
                    "sm__pipe_tensor_cycles_active_realtime.avg.pct_of_peak_sustained_active",
                    "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",
                    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"), "%"),
    "xu_pct": (("sm__pipe_xu_cycles_active.avg.pct_of_peak_sustained_active",
                "sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active"), "%"),
    "fma_pct": (("sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active",), "%"),
    "alu_pct": (("sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active",), "%"),
    "xu_warp_instructions": (("sm__inst_executed_pipe_xu.sum",), None),
    "occupancy_pct": (("sm__warps_active.avg.pct_of_peak_sustained_active",), "%"),
    "sm_hz": (("sm__cycles_elapsed.avg.per_second",), "hz"),
    "dram_hz": (("dram__cycles_elapsed.avg.per_second",), "hz"),
}
REQUESTED_METRICS = tuple(dict.fromkeys(m for names, _ in QUANTITIES.values() for m in names))
# Without them a record says nothing: a run that cannot collect these stops before profiling.
ESSENTIAL = ("duration_ns", "dram_read_bytes", "dram_write_bytes")
# Used when ncu cannot list its metrics: names every Nsight Compute since 2020 has on sm_70 and later.
CORE_METRICS = ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum",
                "sm__warps_active.avg.pct_of_peak_sustained_active", "sm__cycles_elapsed.avg.per_second",
                "dram__cycles_elapsed.avg.per_second")

# ncu prints SI-prefixed units unless --print-units base is honoured; everything is converted to
# byte, nsecond, hz or % here. Nsight Compute's byte prefixes are decimal (Kbyte = 1000 bytes).
UNIT_SCALE = {
    "byte": ("byte", 1), "kbyte": ("byte", 1e3), "mbyte": ("byte", 1e6), "gbyte": ("byte", 1e9),
    "tbyte": ("byte", 1e12),
    "nsecond": ("nsecond", 1), "ns": ("nsecond", 1), "usecond": ("nsecond", 1e3), "us": ("nsecond", 1e3),
    "msecond": ("nsecond", 1e6), "ms": ("nsecond", 1e6), "second": ("nsecond", 1e9), "s": ("nsecond", 1e9),
    "hz": ("hz", 1), "khz": ("hz", 1e3), "mhz": ("hz", 1e6), "ghz": ("hz", 1e9),
    "cycle/second": ("hz", 1), "cycle/msecond": ("hz", 1e3), "cycle/usecond": ("hz", 1e6),
    "cycle/nsecond": ("hz", 1e9),
    "%": ("%", 1),
}


class ProfileError(RuntimeError):
    """ncu could not run, or its output cannot be matched to the cases with confidence."""


# ----------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    group: str  # "flash": kernels.flash_attention; "ablation": one step of kernels.ablation
    provider: str  # "flash", or the ablation step's name
    B: int
    H: int
    N: int
    D: int
    causal: bool
    dtype: str = "float16"

    @property
    def name(self) -> str:
        return f"profile/{self.dtype}/B{self.B}H{self.H}/N{self.N}x{self.N}/D{self.D}/" \
               f"{'causal' if self.causal else 'full'}/fwd"


def flash_cases(quick: bool, interpret: bool = False) -> list[Case]:
    """`flash_attention` at the production shapes post 3 discusses (8 launches; 2 when quick)."""
    batch, shapes, lengths = 4, [(16, 128), (32, 64)], [4096, 8192]
    if quick or interpret:
        shapes, lengths = shapes[:1], lengths[:1]
    if interpret:
        batch, shapes, lengths = 1, [(2, 16)], [64]
    return [Case("flash", "flash", batch, h, n, d, causal)
            for h, d in shapes for n in lengths for causal in (False, True)]


def ablation_cases(quick: bool, step_names, interpret: bool = False) -> list[Case]:
    """Every step of post 4's ablation at its D=128 shape, full and causal (16 launches; 8 when quick)."""
    batch, heads, n, d = (1, 2, 64, 16) if interpret else (4, 16, 8192, 128)
    return [Case("ablation", name, batch, heads, n, d, causal)
            for causal in ((False,) if quick or interpret else (False, True)) for name in step_names]


# ----------------------------------------------------------------------------- pure functions (tested on CPU)

def find_ncu(explicit: str | None = None, which=shutil.which, pattern_glob=glob.glob) -> str:
    """The ncu executable: ``explicit``, else PATH, else the newest CUDA or Nsight Compute install."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ProfileError(f"--ncu {explicit!r} is not an executable file")
        return explicit
    found = which("ncu")
    if found:
        return found
    candidates = pattern_glob("/usr/local/cuda*/bin/ncu") + pattern_glob("/opt/nvidia/nsight-compute*/ncu") \
        + pattern_glob("/opt/nvidia/nsight-compute/*/ncu")
    if not candidates:
        raise ProfileError("ncu not found on PATH, in /usr/local/cuda*/bin or /opt/nvidia/nsight-compute*; "
                           "pass --ncu PATH")
    # Version numbers sort numerically, so cuda-12.10 comes after cuda-12.9.
    return max(candidates, key=lambda p: [int(x) for x in re.findall(r"\d+", p)])


def parse_ncu_version(text: str) -> str:
    """'Version 2025.3.1.0 (build 36398880) (public-release)' -> '2025.3.1.0'."""
    m = re.search(r"Version\s+(\d+(?:\.\d+)+)", text)
    if not m:
        raise ProfileError(f"cannot read ncu's version from {text.strip()[:200]!r}")
    return m.group(1)


_METRIC_TOKEN = re.compile(r"^([a-z][a-z0-9]*__[a-z0-9_]+(?:\.[a-z0-9_]+)*)\b")


def parse_metric_listing(text: str) -> set[str]:
    """The metric names in ``ncu --query-metrics`` output: base names (default mode) or full
    names with their roll-ups and sub-metrics (``--query-metrics-mode suffix``). A line holding
    only a suffix (".sum") is read as belonging to the base name above it."""
    names, base = set(), None
    for line in text.splitlines():
        token = line.strip().split(" ")[0] if line.strip() else ""
        m = _METRIC_TOKEN.match(token)
        if m:
            names.add(m.group(1))
            base = m.group(1).split(".")[0]
        elif base and re.fullmatch(r"(?:\.[a-z0-9_]+)+", token):
            names.add(base + token)
    return names


def select_metrics(requested, available: set[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): a name is kept if ncu listed it, or listed its base name and no suffixed
    names for that base (a base-name listing cannot say which suffixes exist)."""
    if not available:
        raise ValueError("select_metrics: the metric listing is empty; ncu listed no metrics")
    dotted_bases = {a.split(".")[0] for a in available if "." in a}
    kept, dropped = [], []
    for name in requested:
        base = name.split(".")[0]
        ok = name in available or (base in available and base not in dotted_bases)
        (kept if ok else dropped).append(name)
    return kept, dropped


def metric_sources(kept) -> dict:
    """quantity -> the metric it will be read from (the first kept candidate), or None."""
    return {q: next((m for m in names if m in kept), None) for q, (names, _) in QUANTITIES.items()}


def parse_number(text: str) -> float | None:
    """'1,234,567.5' -> 1234567.5; 'n/a', '' or anything else non-numeric -> None."""
    text = (text or "").strip().replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def to_base(value: float | None, unit: str) -> tuple[float | None, str]:
    """A value in ncu's unit -> (value, base unit); units not in UNIT_SCALE pass through."""
    base, scale = UNIT_SCALE.get((unit or "").strip().lower(), ((unit or "").strip(), 1))
    return (None if value is None else value * scale), base


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text or ""))


def parse_raw_csv(text: str) -> list[dict]:
    """Rows of ``ncu --import R --csv --page raw``, sorted by launch ID. Each: id, kernel, grid and
    block (int tuples), metrics {name: (value in base units or None, base unit)}.

    The raw page is one header row of column names, one row of units (its ID cell empty), then
    one row per profiled launch. Lines before the header (ncu's ==PROF== messages) are skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        raise ProfileError("no ncu raw CSV header (a line starting with \"ID\") in: " + text.strip()[:300])
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header, body = rows[0], [row for row in rows[1:] if any(cell.strip() for cell in row)]
    for required in ("ID", "Kernel Name", "Grid Size", "Block Size"):
        if required not in header:
            raise ProfileError(f"ncu raw CSV has no {required!r} column; columns: {header[:12]}")
    col = {name: i for i, name in enumerate(header)}
    units = [""] * len(header)
    if body and not body[0][col["ID"]].strip():
        units, body = body[0] + [""] * (len(header) - len(body[0])), body[1:]
    # A metric column is named after the metric; should a version put its unit in the header
    # ("dram__bytes_read.sum [byte]"), the unit is taken from there when the units row has none.
    metric_cols = []
    for i, name in enumerate(header):
        m = re.fullmatch(r"\s*(\S+__\S+?)\s*(?:[\[(]([^\])]*)[\])])?\s*", name)
        if m:
            metric_cols.append((i, m.group(1), units[i].strip() or (m.group(2) or "")))
    out = []
    for row in body:
        if len(row) != len(header):
            raise ProfileError(f"ncu raw CSV row has {len(row)} cells for {len(header)} columns: {row[:6]}")
        launch_id = parse_number(row[col["ID"]])
        if launch_id is None:
            raise ProfileError(f"ncu raw CSV row without a launch ID: {row[:6]}")
        metrics = {name: to_base(parse_number(row[i]), unit) for i, name, unit in metric_cols}
        out.append({"id": int(launch_id), "kernel": row[col["Kernel Name"]],
                    "grid": _ints(row[col["Grid Size"]]), "block": _ints(row[col["Block Size"]]),
                    "metrics": metrics})
    return sorted(out, key=lambda r: r["id"])


def quantities(metrics: dict, sources: dict) -> tuple[dict, list[str]]:
    """({quantity: value or None}, problems): each quantity read from its source metric, None if the
    metric is missing, has no value, or arrived in a unit other than the expected one."""
    values, problems = {}, []
    for q, (_, unit) in QUANTITIES.items():
        source = sources.get(q)
        value = None
        if source is not None:
            got, got_unit = metrics.get(source, (None, ""))
            if got is not None and unit is not None and got_unit.lower() != unit:
                problems.append(f"{source} came in {got_unit!r}, expected {unit!r}")
                got = None
            value = got
        values[q] = value
    return values, problems


def pair_rows(launched: list[dict], rows: list[dict]) -> list[tuple[dict, dict]]:
    """Pair the child's profiled launches (manifest order) with ncu's rows (ID order). Raises
    ProfileError unless the counts agree and every pair has the expected kernel, grid and block:
    a pairing that is off by one would put every measurement beside the wrong case."""
    if len(launched) != len(rows):
        raise ProfileError(f"the child profiled {len(launched)} launches but ncu reports {len(rows)}")
    for entry, row in zip(launched, rows):
        if not KERNEL_NAME.search(row["kernel"]):
            raise ProfileError(f"ncu row {row['id']} is kernel {row['kernel']!r}, not the flash forward kernel")
        want_grid, want_block = tuple(entry["grid"]), tuple(entry["block"])
        if row["grid"] != want_grid or row["block"] != want_block:
            raise ProfileError(f"ncu row {row['id']} has grid {row['grid']} block {row['block']}; case "
                               f"{entry['case']} {entry['provider']} launched grid {want_grid} block {want_block}")
    return list(zip(launched, rows))


def model_bytes(case: Case, config: dict, skip_future: bool) -> dict:
    """The traffic model's bytes for the tile that ran. Steps that do not skip the tiles past the
    diagonal load every K/V tile even when causal, so the model counts them as full."""
    from perfdata import traffic

    t = traffic.flash(case.N, case.N, case.D, elem_bytes=2, heads=case.B * case.H,
                      causal=case.causal and skip_future, block_m=config["BLOCK_M"], block_n=config["BLOCK_N"])
    return {"requested_bytes": t.bytes_total, "requested_read_bytes": t.bytes_read,
            "requested_write_bytes": t.bytes_written, "compulsory_bytes": t.compulsory_bytes,
            "flops": traffic.attention_flops(case.N, case.N, case.D, heads=case.B * case.H, causal=case.causal)}


def error_record(case: Case, status: str, reason: str) -> dict:
    return {"suite": "profile", "group": case.group, "case": case.name, "provider": case.provider,
            "direction": "fwd", "shape": _shape(case), "dtype": case.dtype, "causal": case.causal,
            "status": status, "reason": reason[:400]}


def _shape(case: Case) -> dict:
    return {"B": case.B, "H": case.H, "Hkv": case.H, "Nq": case.N, "Nk": case.N, "D": case.D}


def ok_record(case: Case, entry: dict, row: dict, sources: dict, collected) -> dict:
    """One profiled launch as a record of the profile suite; ``collected``: the metrics asked of ncu,
    kept raw beside the named quantities."""
    measured, problems = quantities(row["metrics"], sources)
    rec = error_record(case, "ok", "")
    rec.update(reason=None, config=entry["config"], step=entry.get("step"), label=entry.get("label"),
               max_err=entry["max_err"], tol=entry["tol"], ncu_id=row["id"], grid=list(row["grid"]),
               block=list(row["block"]), measured=measured,
               ncu={name: {"value": v, "unit": u} for name, (v, u) in sorted(row["metrics"].items())
                    if name in collected},
               model=model_bytes(case, entry["config"], entry["skip_future"]))
    if problems:
        rec["unit_problems"] = problems
    if measured["duration_ns"] is None or measured["duration_ns"] <= 0:
        return error_record(case, "error", "ncu reported no duration for this launch")
    return rec


# ----------------------------------------------------------------------------- the child (runs under ncu)

def run_child(spec_path: str) -> int:
    """Warm up, check and profile each case of the spec; append one manifest line per case."""
    import torch

    import kernels
    from kernels import ablation

    spec = json.loads(Path(spec_path).read_text())
    manifest, device = Path(spec["manifest"]), spec["device"]
    torch.manual_seed(0)
    for raw in spec["cases"]:
        case = Case(**raw)
        entry = {"case": case.name, "provider": case.provider, "status": "ok", "profiled": False}
        try:
            shape = (case.B, case.H, case.N, case.D)
            q, k, v = (torch.randn(shape, device=device, dtype=getattr(torch, case.dtype)) for _ in range(3))
            step = "autotuned" if case.group == "flash" else case.provider
            # The autotuned step launches exactly what flash_attention launches (same tuning key):
            # it reports the tile the autotuner picked, which the traffic model needs.
            _, _, config = ablation.ablation_launch(q, k, v, causal=case.causal, step=step)
            if case.group == "flash":
                def launch():
                    return kernels.flash_attention(q, k, v, causal=case.causal)
            else:
                def launch():
                    return ablation.ablation_attention(q, k, v, causal=case.causal, step=case.provider)
            for _ in range(spec["warmup"]):
                out = launch()
            if device == "cuda":
                torch.cuda.synchronize()
            ref = kernels.reference_attention(q[0, 0].double(), k[0, 0].double(), v[0, 0].double(),
                                              causal=case.causal).double()
            err = (out[0, 0].double() - ref).abs().max().item()
            tol = LOWP_TOL * max(1.0, ref.abs().max().item())
            del out, ref
            r = ablation.rung(step)
            entry.update(config={key: config[key] for key in sorted(config)}, max_err=err, tol=tol,
                         step=ablation.RUNG_NAMES.index(step) if case.group == "ablation" else None,
                         label=r.label if case.group == "ablation" else None,
                         skip_future=r.switches.get("SKIP_FUTURE", True),
                         grid=[math.ceil(case.N / config["BLOCK_M"]), case.B * case.H, 1],
                         # The interpreter has no warps; 4 is Triton's default, for the pipeline test.
                         block=[config.get("num_warps", 4) * 32, 1, 1])
            if not err <= tol:  # NaN fails too
                entry.update(status="wrong", reason=f"max abs error {err:.3g} > tolerance {tol:.3g}")
            elif device == "cuda":
                # ncu saves and restores device memory around each replay pass: hand the allocator's
                # cached blocks (the reference's score matrix among them) back first.
                torch.cuda.empty_cache()
                torch.cuda.profiler.start()
                try:
                    launch()
                    torch.cuda.synchronize()
                finally:
                    torch.cuda.profiler.stop()
                entry["profiled"] = True
            else:  # the pipeline test: no profiler range to open, the stand-in ncu reads the manifest
                launch()
                entry["profiled"] = True
        except Exception as exc:  # noqa: BLE001 - recorded; the next case still runs
            entry.update(status="error", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        with manifest.open("a") as f:  # one line per case, flushed: a timeout keeps what finished
            f.write(json.dumps(entry) + "\n")
        print(f"[child] {case.name} {case.provider}: {entry['status']}", flush=True)
    return 0


# ----------------------------------------------------------------------------- the parent

@dataclass(frozen=True)
class Settings:
    out: Path
    raw_dir: Path | None
    ncu: str | None
    clock_control: str
    budget_s: float
    quick: bool
    warmup: int
    commit: str | None
    chip: str | None
    interpret: bool = False


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="folder for profile.<gpu>.json (default docs/data)")
    p.add_argument("--raw-dir", default=None, help="keep ncu's reports, raw CSVs and logs here")
    p.add_argument("--ncu", default=None, help="path to ncu (default: PATH, then CUDA and Nsight installs)")
    p.add_argument("--clock-control", default="none", choices=("none", "base"),
                   help="ncu --clock-control; none (default) leaves clocks to the GPU, as in the timed benchmark")
    p.add_argument("--budget-s", type=float, default=540.0, help="stop starting work after this many seconds")
    p.add_argument("--quick", action="store_true", help="2 flash and 8 ablation launches instead of 8 and 16")
    p.add_argument("--warmup", type=int, default=2, help="unprofiled calls per case before the profiled one")
    p.add_argument("--commit", default=None, help="git commit to record (default: read from the repo)")
    p.add_argument("--chip", default=None, help="ncu --chip for the metric query (default: from the GPU)")
    p.add_argument("--list", action="store_true", help="print the cases and the ncu command, run nothing")
    p.add_argument("--interpret", action="store_true",
                   help="tiny sizes through Triton's CPU interpreter, with --ncu a stand-in: tests the pipeline")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1:
        p.error("--warmup must be at least 1 (the first call compiles and autotunes)")
    if args.budget_s <= 0:
        p.error("--budget-s must be positive")
    if args.interpret and not (args.ncu and args.out):
        p.error("--interpret needs --ncu (a stand-in profiler) and --out: its numbers must never reach docs/data")
    return args


def ncu_command(ncu: str, metrics, clock_control: str, launch_count: int, report: Path, child_argv) -> list[str]:
    return [ncu, "--target-processes", "all", "--profile-from-start", "off",
            "--kernel-name-base", "function", "--kernel-name", KERNEL_FILTER, "--launch-count", str(launch_count),
            "--metrics", ",".join(metrics), "--clock-control", clock_control, "--cache-control", "all",
            "--replay-mode", "kernel", "--export", str(report), "--force-overwrite", *child_argv]


def _run(cmd, timeout: float, env=None) -> tuple[int, str]:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (ncu and its child)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout))
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return 124, (out or "") + f"\n[ncu_profile.py] killed after {timeout:.0f} s"


def _chip() -> str | None:
    import torch

    return {(9, 0): "gh100", (8, 0): "ga100", (8, 9): "ad102", (10, 0): "gb100"}.get(torch.cuda.get_device_capability())


def query_metrics(ncu: str, chip: str | None, log) -> tuple[list[str], list[str], bool]:
    """(kept, dropped, checked): REQUESTED_METRICS filtered by what ncu lists for this chip. The
    full names with suffixes are asked for first; a listing that would drop an essential metric is
    not trusted (its format may differ from the one parsed here), and base names are asked next."""
    chip_args = ["--chip", chip] if chip else []
    bases = sorted({m.split(".")[0] for m in REQUESTED_METRICS})
    attempts = [[ncu, "--query-metrics", "--query-metrics-mode", "suffix", "--metrics", ",".join(bases), *chip_args],
                [ncu, "--query-metrics", *chip_args]]
    for cmd in attempts:
        rc, out = _run(cmd, 120, env={**os.environ, "LC_ALL": "C"})
        log(f"$ {' '.join(cmd)}\n{out}")
        listed = parse_metric_listing(out) if rc == 0 else set()
        if listed:
            kept, dropped = select_metrics(REQUESTED_METRICS, listed)
            if all(metric_sources(kept)[q] is not None for q in ESSENTIAL):
                return kept, dropped, True
    print("# ncu could not list its metrics; profiling with the core set only", flush=True)
    return list(CORE_METRICS), [m for m in REQUESTED_METRICS if m not in CORE_METRICS], False


def run_ncu(run: str, cases: list[Case], metrics: list[str], settings: Settings, ncu: str, work: Path,
            timeout: float, log) -> tuple[int, str, list[str], Path]:
    """Run ``cases`` in one child under ncu: (exit code, output, metrics used, report path); ``run``
    names its files in ``work``. If ncu rejects a metric despite the listing, retry once without
    the metrics its errors name."""
    manifest, spec, report = work / f"{run}.manifest.jsonl", work / f"{run}.spec.json", work / run
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "LC_ALL": "C"}
    deadline = time.time() + timeout
    for attempt in range(2):
        manifest.unlink(missing_ok=True)
        spec.write_text(json.dumps({"cases": [asdict(c) for c in cases], "manifest": str(manifest),
                                    "warmup": settings.warmup, "device": "cpu" if settings.interpret else "cuda"}))
        cmd = ncu_command(ncu, metrics, settings.clock_control, len(cases), report,
                          [sys.executable, str(Path(__file__).resolve()), "--child", str(spec)])
        left = deadline - time.time()
        print(f"# {run}: {len(cases)} launches under ncu (allowed {left:.0f} s)", flush=True)
        t0 = time.time()
        rc, out = _run(cmd, left, env=env)
        log(f"$ {' '.join(cmd)}\n{out}")
        print(f"# {run}: ncu exited {rc} after {time.time() - t0:.0f} s", flush=True)
        errors = [line for line in out.splitlines() if "==ERROR==" in line]
        if rc == 0 or attempt == 1 or not any("metric" in line.lower() for line in errors) \
                or deadline - time.time() < 60:
            return rc, out, metrics, report.with_name(report.name + ".ncu-rep")
        named = [m for m in metrics if any(m.split(".")[0] in line for line in errors)]
        metrics = [m for m in metrics if m not in named] if named else list(CORE_METRICS)
        print(f"# {run}: ncu refused metrics ({errors[0][:160]}); retrying with {len(metrics)}", flush=True)
    raise AssertionError("unreachable")


def import_rows(ncu: str, report: Path, log) -> list[dict]:
    """ncu's raw page of ``report``, parsed (`parse_raw_csv`)."""
    env = {**os.environ, "LC_ALL": "C"}  # a decimal point and no locale-specific separators
    rc, text = _run([ncu, "--import", str(report), "--csv", "--page", "raw", "--print-units", "base"], 300, env)
    if rc != 0:  # an ncu without --print-units: the parser converts prefixed units itself
        rc, text = _run([ncu, "--import", str(report), "--csv", "--page", "raw"], 300, env)
    log(f"$ ncu --import {report} --csv --page raw\n{text}")
    if rc != 0:
        raise ProfileError(f"ncu --import failed (exit {rc}): {text.strip()[-300:]}")
    return parse_raw_csv(text)


def profile_group(run: str, cases: list[Case], metrics: list[str], settings: Settings, ncu: str, work: Path,
                  timeout: float, log) -> list[dict]:
    """Profile ``cases`` in one ncu run; one record per case (failures recorded, never raised)."""
    if timeout < 30:
        return [error_record(c, "error", "not profiled: the time budget ran out") for c in cases]
    rc, out, metrics, report = run_ncu(run, cases, metrics, settings, ncu, work, timeout, log)
    manifest = work / f"{run}.manifest.jsonl"
    entries = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.exists() else []
    by_case = {(e["case"], e["provider"]): e for e in entries}
    launched = [e for e in entries if e["profiled"]]
    errors = " | ".join(line for line in out.splitlines() if "==ERROR==" in line)
    failure, paired = None, {}
    if launched:
        try:
            pairs = pair_rows(launched, import_rows(ncu, report, log))
            paired = {(e["case"], e["provider"]): (e, row) for e, row in pairs}
        except ProfileError as exc:
            failure = f"ncu output not usable: {exc}"
    elif rc != 0:
        failure = f"ncu exited {rc}: " + (errors or out.strip()[-300:])
    sources = metric_sources(metrics)
    records = []
    for c in cases:
        entry = by_case.get((c.name, c.provider))
        if entry is None:
            records.append(error_record(c, "error", failure or f"the child never reached this case (ncu exit {rc})"))
        elif entry["status"] != "ok":
            records.append(error_record(c, entry["status"], entry["reason"]))
        elif failure is not None:
            records.append(error_record(c, "error", failure))
        else:
            records.append(ok_record(c, *paired[(c.name, c.provider)], sources, metrics))
    return records


def git_commit(commit: str | None) -> str:
    if commit:
        return commit
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(settings: Settings, ncu_version: str, kept, dropped, checked: bool) -> dict:
    import torch
    import triton

    import kernels

    if settings.interpret:
        gpu, sms, driver, cuda = "CPU (Triton interpreter)", 0, "none", "none"
    else:
        props = torch.cuda.get_device_properties(0)
        gpu, sms, cuda = props.name, props.multi_processor_count, torch.version.cuda or "unknown"
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            driver = "unknown"
    return {
        "gpu": gpu, "sm_count": sms, "driver": driver, "cuda": cuda, "torch": torch.__version__,
        "triton": triton.__version__,
        "git_commit": git_commit(settings.commit),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": kernels.mode_description(), "ncu": ncu_version, "clock_control": settings.clock_control,
        "cache_control": "all (caches flushed before each replay pass)", "replay_mode": "kernel",
        "kernel_filter": KERNEL_FILTER, "warmup_calls": settings.warmup,
        "metrics_checked": checked, "metrics_collected": list(kept), "metrics_dropped": list(dropped),
        "metric_sources": metric_sources(kept),
        "timing": "one launch per case profiled by Nsight Compute after warm-up; duration is ncu's "
                  "gpu__time_duration of that launch, clocks " +
                  ("left to the GPU (--clock-control none), as in the timed benchmark"
                   if settings.clock_control == "none" else "locked to base by ncu (--clock-control base)"),
    }


def write_doc(path: Path, doc: dict) -> Path:
    """Validate and write atomically. If ``path`` already holds more ok records than ``doc``, the new
    data goes beside it as ``*.json.new`` instead: a worse run never replaces a better one."""
    from perfdata import schema as benchdata

    ok = sum(r["status"] == "ok" for r in doc["records"])
    if path.exists():
        try:
            old_ok = sum(r["status"] == "ok" for r in benchdata.load(path)["records"])
        except benchdata.BenchDataError:
            old_ok = -1
        if old_ok > ok:
            path = path.with_name(path.name + ".new")
    benchdata.write_atomic(path, doc)
    return path


def summary_line(record: dict) -> str:
    """One record as the run's log prints it."""
    if record["status"] != "ok":
        return f"{record['case']} {record['provider']}: {record['status']}: {record['reason']}"
    m = record["measured"]
    dram = (m["dram_read_bytes"] or 0) + (m["dram_write_bytes"] or 0)
    return (f"{record['case']} {record['provider']}: {m['duration_ns'] / 1e6:.3f} ms, DRAM {dram / 1e9:.3f} GB, "
            f"tensor pipe {m['tensor_pct']}%, XU pipe {m['xu_pct']}%, SM clock {m['sm_hz']} Hz")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args.child)
    settings = Settings(out=Path(args.out or ROOT / "docs" / "data"),
                        raw_dir=Path(args.raw_dir) if args.raw_dir else None, ncu=args.ncu,
                        clock_control=args.clock_control, budget_s=args.budget_s, quick=args.quick,
                        warmup=args.warmup, commit=args.commit, chip=args.chip, interpret=args.interpret)
    if settings.interpret:
        if "kernels" in sys.modules and not sys.modules["kernels"].INTERPRET:
            sys.exit("ncu_profile.py: --interpret after kernels was imported in GPU mode; run it in a fresh process.")
        os.environ["TRITON_INTERPRET"] = "1"  # before kernels is imported: @triton.jit reads it then
    t_start = time.time()
    deadline = t_start + settings.budget_s
    from kernels.ablation import RUNG_NAMES

    # One ncu run per group: ncu writes its report when the child exits, so a run killed at the
    # deadline loses its own launches only. The Triton cache on disk carries compiled kernels and
    # autotuning results from one run to the next.
    steps = ablation_cases(settings.quick, RUNG_NAMES, settings.interpret)
    groups = {"flash": flash_cases(settings.quick, settings.interpret),
              "ablation-full": [c for c in steps if not c.causal], "ablation-causal": [c for c in steps if c.causal]}
    groups = {run: cases for run, cases in groups.items() if cases}
    if args.list:
        for cases in groups.values():
            for c in cases:
                print(f"{c.group:9} {c.provider:12} {c.name}")
        print("\n" + " ".join(ncu_command(settings.ncu or "ncu", REQUESTED_METRICS, settings.clock_control,
                                          max(map(len, groups.values())), Path("REPORT"),
                                          ["python", __file__, "--child", "SPEC"])))
        return 0

    import torch

    if not settings.interpret and not torch.cuda.is_available():
        sys.exit("ncu_profile.py: no CUDA GPU found; Nsight Compute profiles GPU kernels only.")
    try:
        ncu = find_ncu(settings.ncu)
        rc, version_text = _run([ncu, "--version"], 60)
        ncu_version = parse_ncu_version(version_text)
    except ProfileError as exc:
        sys.exit(f"ncu_profile.py: {exc}")
    print(f"# ncu {ncu_version} at {ncu}; clock control {settings.clock_control}", flush=True)

    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        work = settings.raw_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log_path = work / "ncu.log"

        def log(text):
            with log_path.open("a") as f:
                f.write(text.rstrip() + "\n\n")

        kept, dropped, checked = query_metrics(ncu, settings.chip or (None if settings.interpret else _chip()), log)
        print(f"# metrics: {len(kept)} collected, dropped (unknown to this ncu): {dropped or 'none'}", flush=True)
        kept_log = log_path if settings.raw_dir else "a temporary folder (pass --raw-dir to keep it)"
        missing = [q for q in ESSENTIAL if metric_sources(kept)[q] is None]
        if missing:
            sys.exit(f"ncu_profile.py: this ncu offers no metric for {missing}; its output is in {kept_log}")
        prov = provenance(settings, ncu_version, kept, dropped, checked)
        records = []
        for i, (run, cases) in enumerate(groups.items()):
            # A run may take 1.5 times an even share of what is left, so one that hangs leaves time for the rest.
            share = min(1.0, 1.5 / (len(groups) - i))
            records += profile_group(run, cases, kept, settings, ncu, work, (deadline - time.time()) * share, log)
        for r in records:
            print(summary_line(r), flush=True)
        ok = sum(r["status"] == "ok" for r in records)
        if ok == 0:
            sys.exit(f"ncu_profile.py: no case was profiled; nothing written. ncu's output is in {kept_log}")
        from perfdata import schema as benchdata

        doc = {"schema": benchdata.SCHEMA_VERSION, "suite": "profile", "provenance": prov, "records": records}
        gpu = "cpu-interpreter" if settings.interpret else benchdata.slug(prov["gpu"])
        path = write_doc(settings.out / f"profile.{gpu}.json", doc)
    print(f"# wrote {path}: {ok} of {len(records)} launches profiled, {time.time() - t_start:.0f} s", flush=True)
    return 0 if ok == len(records) else 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the kernels package sits at the root
    sys.exit(main())
