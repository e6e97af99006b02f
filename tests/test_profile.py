"""scripts/ncu_profile.py on the CPU: ncu's output parsed from captured samples, the metric selection,
the pairing guards, the profile suite's validator, and the whole pipeline with a stand-in ncu."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perfdata import schema as benchdata

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ncu_profile.py"

_spec = importlib.util.spec_from_file_location("profile_script", SCRIPT)
profile = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = profile  # dataclasses look their module up while the class is built
_spec.loader.exec_module(profile)

# `ncu --import r.ncu-rep --csv --page raw --print-units base` (Nsight Compute 2025.x) on two Triton
# launches: a header row, a units row with an empty ID, then one row per launch. ncu writes
# thousands separators and "n/a" for a metric a launch could not collect. Launch IDs can arrive
# out of order when several processes are profiled; the parser sorts them.
RAW_CSV = textwrap.dedent('''\
    ==PROF== Connected to process 41873 (/usr/bin/python3.12)
    "ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","dram__bytes_read.sum","dram__bytes_write.sum","dram__cycles_elapsed.avg.per_second","gpu__time_duration.sum","lts__t_bytes.sum","sm__cycles_elapsed.avg.per_second","sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active","sm__pipe_xu_cycles_active.avg.pct_of_peak_sustained_active","sm__warps_active.avg.pct_of_peak_sustained_active"
    "","","","","","","","","","","","byte","byte","hz","nsecond","byte","hz","%","%","%"
    "1","41873","python3.12","127.0.0.1","_flash_fwd_kernel","1","7","(256, 1, 1)","(64, 64, 1)","0","9.0","2,214,592,512","134,479,872","2,619,127,516.67","4,123,456","18,456,789,504","1,755,012,345.12","61.27","22.40","12.49"
    "0","41873","python3.12","127.0.0.1","_flash_fwd_kernel","1","7","(256, 1, 1)","(32, 64, 1)","0","9.0","553,648,128","67,239,936","2,619,127,516.67","1,051,234","4,614,197,376","1,762,001,000.00","n/a","21.75","12.50"
''')

# The same launch as ncu prints it without --print-units base: SI-prefixed units per column.
PREFIXED_CSV = textwrap.dedent('''\
    "ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","dram__bytes_read.sum","gpu__time_duration.sum","sm__cycles_elapsed.avg.per_second"
    "","","","","","","","","","","","Mbyte","usecond","Ghz"
    "0","41873","python3.12","127.0.0.1","_flash_fwd_kernel","1","7","(256, 1, 1)","(32, 64, 1)","0","9.0","553.65","1,051.23","1.76"
''')

# `ncu --query-metrics --chip gh100` (base names, described) and `--query-metrics-mode suffix`
# (full names, one per line), abridged.
BASE_LISTING = textwrap.dedent('''\
    Device GH100
    ---------------------------------------------------------------------- ----------------------------------
    Metric Name                                                            Metric Description
    ---------------------------------------------------------------------- ----------------------------------
    dram__bytes_read                                                       # of bytes read from DRAM
    dram__bytes_write                                                      # of bytes written to DRAM
    gpu__time_duration                                                     total duration in nanoseconds
    sm__pipe_tensor_cycles_active                                          # of cycles where tensor pipe was active
''')
SUFFIX_LISTING = textwrap.dedent('''\
    Device GH100
    Metric Name                                                            Metric Description
    dram__bytes_read.sum                                                   # of bytes read from DRAM
    dram__bytes_read.sum.per_second                                        # of bytes read from DRAM per second
    gpu__time_duration.sum                                                 total duration in nanoseconds
    sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active         % of peak tensor pipe activity
''')


# ----------------------------------------------------------------------------- parsing

def test_raw_csv_rows_sorted_with_units_and_separators():
    rows = profile.parse_raw_csv(RAW_CSV)
    assert [r["id"] for r in rows] == [0, 1]
    first = rows[0]
    assert first["kernel"] == "_flash_fwd_kernel"
    assert first["grid"] == (32, 64, 1) and first["block"] == (256, 1, 1)
    assert first["metrics"]["dram__bytes_read.sum"] == (553648128.0, "byte")
    assert first["metrics"]["gpu__time_duration.sum"] == (1051234.0, "nsecond")
    assert first["metrics"]["sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active"] == (None, "%")
    assert rows[1]["metrics"]["sm__cycles_elapsed.avg.per_second"][0] == pytest.approx(1755012345.12)
    assert "Grid Size" not in first["metrics"]  # only metric columns (they contain "__")


def test_prefixed_units_are_converted_to_base_units():
    (row,) = profile.parse_raw_csv(PREFIXED_CSV)
    assert row["metrics"]["dram__bytes_read.sum"] == (pytest.approx(553.65e6), "byte")
    assert row["metrics"]["gpu__time_duration.sum"] == (pytest.approx(1051230.0), "nsecond")
    assert row["metrics"]["sm__cycles_elapsed.avg.per_second"] == (pytest.approx(1.76e9), "hz")


def test_units_in_the_header_and_blank_lines_are_understood():
    text = ('"ID","Kernel Name","Block Size","Grid Size","gpu__time_duration.sum [usecond]"\n'
            '"0","_flash_fwd_kernel","(256, 1, 1)","(32, 64, 1)","1,051.23"\n\n')
    (row,) = profile.parse_raw_csv(text)
    assert row["metrics"] == {"gpu__time_duration.sum": (pytest.approx(1051230.0), "nsecond")}


@pytest.mark.parametrize("text, match", [
    ("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission", "no ncu raw CSV header"),
    ('"ID","Kernel Name","Grid Size"\n"0","k","(1, 1, 1)"\n', "Block Size"),
    (RAW_CSV.rstrip() + ',"extra"\n', "cells for"),
    ('"ID","Kernel Name","Grid Size","Block Size"\n"x","k","(1, 1, 1)","(32, 1, 1)"\n', "without a launch ID"),
])
def test_raw_csv_that_cannot_be_read_fails_loudly(text, match):
    with pytest.raises(profile.ProfileError, match=match):
        profile.parse_raw_csv(text)


def test_numbers_and_units():
    assert profile.parse_number("1,234.5") == 1234.5
    assert profile.parse_number("n/a") is None and profile.parse_number("") is None
    assert profile.parse_number("inf") is None
    assert profile.to_base(2.0, "Kbyte") == (2000.0, "byte")
    assert profile.to_base(1.5, "cycle/nsecond") == (1.5e9, "hz")
    assert profile.to_base(3.0, "inst") == (3.0, "inst")  # unknown units pass through


def test_version():
    text = "NVIDIA (R) Nsight Compute Command Line Profiler\nCopyright (c) 2018-2025\nVersion 2025.3.1.0 (build 3639)"
    assert profile.parse_ncu_version(text) == "2025.3.1.0"
    with pytest.raises(profile.ProfileError, match="version"):
        profile.parse_ncu_version("bash: ncu: command not found")


# ----------------------------------------------------------------------------- metric selection

def test_listings_parse_base_and_full_names():
    assert "gpu__time_duration" in profile.parse_metric_listing(BASE_LISTING)
    assert "Metric" not in " ".join(profile.parse_metric_listing(BASE_LISTING))
    full = profile.parse_metric_listing(SUFFIX_LISTING)
    assert "dram__bytes_read.sum.per_second" in full and "Device" not in full
    # A listing that prints suffixes under their base name:
    nested = profile.parse_metric_listing("dram__bytes_write\n  .sum\n  .sum.per_second\n")
    assert {"dram__bytes_write", "dram__bytes_write.sum", "dram__bytes_write.sum.per_second"} <= nested


def test_selection_keeps_listed_names_and_drops_the_rest():
    wanted = ["dram__bytes_read.sum", "dram__bytes_read.avg.pct_of_peak_sustained_active",
              "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active", "gpu__time_duration.sum"]
    kept, dropped = profile.select_metrics(wanted, profile.parse_metric_listing(SUFFIX_LISTING))
    assert kept == ["dram__bytes_read.sum", "gpu__time_duration.sum"]
    assert dropped == wanted[1:3]  # a listed base with an unlisted suffix is dropped too
    kept, dropped = profile.select_metrics(wanted, profile.parse_metric_listing(BASE_LISTING))
    assert kept == ["dram__bytes_read.sum", "dram__bytes_read.avg.pct_of_peak_sustained_active",
                    "gpu__time_duration.sum"]
    with pytest.raises(ValueError, match="empty"):
        profile.select_metrics(wanted, set())


def test_query_distrusts_a_listing_without_the_essential_metrics(monkeypatch):
    # The suffix listing names only gpu__time_duration.max: a format this parser misread, or an
    # ncu without the DRAM counters. The base-name listing is asked next.
    replies = iter([(0, "Device GH100\ngpu__time_duration.max    duration\n"), (0, BASE_LISTING)])
    monkeypatch.setattr(profile, "_run", lambda cmd, timeout, env=None: next(replies))
    kept, dropped, checked = profile.query_metrics("ncu", "gh100", lambda text: None)
    assert checked and {"dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum"} <= set(kept)
    assert "lts__t_bytes.sum" in dropped
    replies = iter([(1, "==ERROR== unknown option"), (1, "==ERROR== unknown option")])
    monkeypatch.setattr(profile, "_run", lambda cmd, timeout, env=None: next(replies))
    kept, dropped, checked = profile.query_metrics("ncu", None, lambda text: None)
    assert not checked and kept == list(profile.CORE_METRICS)


def test_each_quantity_reads_its_first_available_metric():
    kept = [m for m in profile.REQUESTED_METRICS if "gmma" not in m]
    sources = profile.metric_sources(kept)
    assert sources["tensor_pct"] == "sm__pipe_tensor_cycles_active_realtime.avg.pct_of_peak_sustained_active"
    assert sources["xu_pct"] == "sm__pipe_xu_cycles_active.avg.pct_of_peak_sustained_active"
    assert profile.metric_sources(profile.REQUESTED_METRICS)["tensor_pct"].startswith("sm__pipe_tensor_op_gmma")
    assert profile.metric_sources([])["duration_ns"] is None
    # Every quantity the validator requires is one the script measures.
    assert set(benchdata.PROFILE_MEASURED_KEYS) <= set(profile.QUANTITIES)


def test_a_quantity_in_an_unexpected_unit_is_dropped_not_mislabelled():
    sources = profile.metric_sources(profile.REQUESTED_METRICS)
    metrics = {"gpu__time_duration.sum": (5.0, "nsecond"), "dram__bytes_read.sum": (7.0, "sector")}
    values, problems = profile.quantities(metrics, sources)
    assert values["duration_ns"] == 5.0 and values["dram_read_bytes"] is None and values["l2_bytes"] is None
    assert problems == ["dram__bytes_read.sum came in 'sector', expected 'byte'"]


def test_find_ncu_looks_in_install_folders():
    installs = {"/usr/local/cuda*/bin/ncu": ["/usr/local/cuda-12.9/bin/ncu", "/usr/local/cuda-12.10/bin/ncu"]}
    found = profile.find_ncu(None, which=lambda _: None, pattern_glob=lambda pat: installs.get(pat, []))
    assert found == "/usr/local/cuda-12.10/bin/ncu"
    assert profile.find_ncu(None, which=lambda _: "/bin/ncu", pattern_glob=lambda _: []) == "/bin/ncu"
    with pytest.raises(profile.ProfileError, match="not found"):
        profile.find_ncu(None, which=lambda _: None, pattern_glob=lambda _: [])
    with pytest.raises(profile.ProfileError, match="not an executable"):
        profile.find_ncu("/nonexistent/ncu")


# ----------------------------------------------------------------------------- pairing

def _launched():
    return [{"case": "c0", "provider": "flash", "grid": [32, 64, 1], "block": [256, 1, 1]},
            {"case": "c1", "provider": "flash", "grid": [64, 64, 1], "block": [256, 1, 1]}]


def test_pairing_matches_manifest_order_to_launch_ids():
    pairs = profile.pair_rows(_launched(), profile.parse_raw_csv(RAW_CSV))
    assert [(e["case"], row["id"]) for e, row in pairs] == [("c0", 0), ("c1", 1)]


def test_pairing_refuses_a_shifted_or_short_list():
    rows = profile.parse_raw_csv(RAW_CSV)
    with pytest.raises(profile.ProfileError, match="grid"):
        profile.pair_rows(_launched()[::-1], rows)  # off by one: every case beside the wrong row
    with pytest.raises(profile.ProfileError, match="2 launches but ncu reports 1"):
        profile.pair_rows(_launched(), rows[:1])
    other = copy.deepcopy(rows)
    other[0]["kernel"] = "cutlass_80_tensorop_gemm"
    with pytest.raises(profile.ProfileError, match="not the flash forward kernel"):
        profile.pair_rows(_launched(), other)


def test_records_carry_model_and_measurement():
    case = profile.Case("flash", "flash", 4, 16, 4096, 128, False)
    entry = {"config": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}, "max_err": 1e-4,
             "tol": 5e-3, "skip_future": True}
    rows = profile.parse_raw_csv(RAW_CSV)
    kept = [m for m in profile.REQUESTED_METRICS if "gmma" not in m]
    rec = profile.ok_record(case, entry, rows[0], profile.metric_sources(kept), kept)
    assert rec["measured"]["dram_read_bytes"] == 553648128.0 and rec["measured"]["tensor_pct"] is None
    from perfdata import traffic
    assert rec["model"]["requested_bytes"] == traffic.flash(4096, 4096, 128, elem_bytes=2, heads=64).bytes_total
    causal = profile.Case("ablation", "naive", 4, 16, 4096, 128, True)
    no_skip = profile.ok_record(causal, {**entry, "skip_future": False}, rows[0], profile.metric_sources(kept), kept)
    skip = profile.ok_record(causal, entry, rows[0], profile.metric_sources(kept), kept)
    assert no_skip["model"]["requested_bytes"] > 1.8 * skip["model"]["requested_bytes"]  # every K/V tile loaded
    assert no_skip["model"]["flops"] == skip["model"]["flops"]  # the convention counts useful work only
    benchdata.validate_profile(_doc([rec, no_skip]))


# ----------------------------------------------------------------------------- the suite's validator

def _doc(records):
    prov = {"gpu": "NVIDIA H100 80GB HBM3", "sm_count": 132, "driver": "580.1", "cuda": "13.0", "torch": "2.11",
            "triton": "3.6.0", "git_commit": "abc1234", "date": "2026-11-26T10:00:00Z", "mode": "CUDA GPU",
            "ncu": "2025.3.1.0", "clock_control": "none", "metric_sources": {}, "metrics_dropped": []}
    return {"schema": benchdata.SCHEMA_VERSION, "suite": "profile", "provenance": prov, "records": records}


def _good_record():
    case = profile.Case("flash", "flash", 4, 16, 4096, 128, False)
    measured = dict.fromkeys(profile.QUANTITIES, None) | {"duration_ns": 1.0e6, "dram_read_bytes": 5.0e8}
    rec = profile.error_record(case, "ok", "")
    rec.update(reason=None, measured=measured, model={"requested_bytes": 10, "compulsory_bytes": 5, "flops": 9})
    return rec


@pytest.mark.parametrize("breakage, match", [
    (lambda d: d["provenance"].pop("ncu"), "provenance.ncu"),
    (lambda d: d["provenance"].update(clock_control="locked"), "clock_control"),
    (lambda d: d["records"][0].pop("measured"), "'measured' and 'model'"),
    (lambda d: d["records"][0]["measured"].pop("xu_pct"), "xu_pct missing"),
    (lambda d: d["records"][0]["measured"].update(dram_read_bytes=-1.0), "dram_read_bytes"),
    (lambda d: d["records"][0]["measured"].update(duration_ns=None), "duration_ns"),
    (lambda d: d["records"][0]["model"].update(flops=0), "model.flops"),
    (lambda d: d["records"][0].update(status="error"), "needs a reason"),
    (lambda d: d.update(records=[]), "non-empty"),
])
def test_profile_validator_names_the_problem(breakage, match):
    doc = _doc([_good_record()])
    benchdata.validate(doc)  # the suite name dispatches to the profile validator
    breakage(doc)
    with pytest.raises(benchdata.BenchDataError, match=match):
        benchdata.validate(doc)


def test_a_worse_run_never_replaces_a_better_file(tmp_path):
    good = _doc([_good_record(), _good_record()])
    path = tmp_path / "profile.h100.json"
    assert profile.write_doc(path, good) == path
    worse = _doc([_good_record(), profile.error_record(profile.Case("flash", "flash", 4, 16, 4096, 128, True),
                                                       "error", "ncu exited 1")])
    assert profile.write_doc(path, worse) == tmp_path / "profile.h100.json.new"
    assert len(benchdata.load(path)["records"]) == 2 and benchdata.load(path)["records"][1]["status"] == "ok"


# ----------------------------------------------------------------------------- the pipeline, with a stand-in ncu

FAKE_NCU = '''\
import json, os, subprocess, sys
args = sys.argv[1:]
if "--version" in args:
    print("NVIDIA (R) Nsight Compute Command Line Profiler\\nVersion 2025.3.1.0 (build 1) (public-release)")
elif "--query-metrics" in args:
    # Knows every requested metric except the Hopper wgmma sub-pipe's.
    names = args[args.index("--metrics") + 1].split(",") if "--metrics" in args else []
    print("Device GH100\\nMetric Name   Metric Description")
    for full in os.environ["FAKE_NCU_KNOWS"].split(","):
        print(f"{full}    some description")
elif "--import" in args:
    report = json.loads(open(args[args.index("--import") + 1]).read())
    metrics = report["metrics"]
    print('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
          '"Device","CC",' + ",".join(f'"{m}"' for m in metrics))
    unit = lambda m: "nsecond" if m.startswith("gpu__time") else "byte" if "bytes" in m else (
        "hz" if m.endswith("per_second") else "%" if "pct" in m else "inst")
    print(",".join(['""'] * 11 + [f'"{unit(m)}"' for m in metrics]))
    for i, e in enumerate(report["launched"]):
        grid, block = e["grid"], e["block"]
        print(f'"{i}","1","python","host","_flash_fwd_kernel","1","7","({block[0]}, {block[1]}, {block[2]})",'
              f'"({grid[0]}, {grid[1]}, {grid[2]})","0","9.0",' + ",".join(f'"{1000 + i:,}"' for m in metrics))
else:
    export = args[args.index("--export") + 1]
    metrics = args[args.index("--metrics") + 1].split(",")
    child = args[args.index("--force-overwrite") + 1:]
    rc = subprocess.call(child)
    spec = json.loads(open(child[child.index("--child") + 1]).read())
    lines = open(spec["manifest"]).read().splitlines()
    launched = [e for e in map(json.loads, lines) if e["profiled"]]
    if os.environ.get("FAKE_NCU_LOSE_ONE"):
        launched = launched[1:]
    with open(export + ".ncu-rep", "w") as f:
        json.dump({"metrics": metrics, "launched": launched}, f)
    sys.exit(rc)
'''


@pytest.fixture(scope="module")
def fake_ncu(tmp_path_factory):
    from kernels.runtime import interpreter_problem

    if interpreter_problem():
        pytest.skip(interpreter_problem())
    path = tmp_path_factory.mktemp("ncu") / "ncu"
    path.write_text(f"#!{sys.executable}\n" + FAKE_NCU)
    path.chmod(0o755)
    return path


def _run_pipeline(fake_ncu, out, **env):
    known = ",".join(m for m in profile.REQUESTED_METRICS if "gmma" not in m)
    return subprocess.run([sys.executable, str(SCRIPT), "--interpret", "--ncu", str(fake_ncu), "--out", str(out),
                           "--raw-dir", str(out / "raw"), "--warmup", "1"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "FAKE_NCU_KNOWS": known, **env})


def test_pipeline_with_a_stand_in_ncu(fake_ncu, tmp_path):
    res = _run_pipeline(fake_ncu, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = benchdata.load(tmp_path / "profile.cpu-interpreter.json")
    from kernels import ablation

    records = doc["records"]
    assert [r["provider"] for r in records] == ["flash", "flash", *ablation.RUNG_NAMES]
    assert all(r["status"] == "ok" for r in records), [r.get("reason") for r in records]
    assert [r["ncu_id"] for r in records] == [0, 1, *range(len(ablation.RUNG_NAMES))]
    prov = doc["provenance"]
    assert prov["clock_control"] == "none" and prov["ncu"] == "2025.3.1.0"
    assert any("gmma" in m for m in prov["metrics_dropped"])
    assert prov["metric_sources"]["tensor_pct"] == "sm__pipe_tensor_cycles_active_realtime.avg.pct_of_peak_sustained_active"
    naive = next(r for r in records if r["provider"] == "naive")
    assert naive["config"]["BLOCK_M"] == 64 and naive["grid"] == [1, 2, 1] and naive["step"] == 0
    assert all(r["max_err"] <= r["tol"] for r in records)
    assert (tmp_path / "raw" / "ncu.log").exists()


def test_pipeline_refuses_to_guess_when_a_row_is_missing(fake_ncu, tmp_path):
    res = _run_pipeline(fake_ncu, tmp_path, FAKE_NCU_LOSE_ONE="1")
    assert res.returncode != 0
    assert "no case was profiled" in res.stderr
    assert not (tmp_path / "profile.cpu-interpreter.json").exists()
    assert "profiled 2 launches but ncu reports 1" in res.stdout


def test_list_and_argument_errors():
    res = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("ablation ") == 16 and "--clock-control none" in res.stdout
    assert "--profile-from-start off" in res.stdout
    res = subprocess.run([sys.executable, str(SCRIPT), "--interpret"], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "--interpret needs --ncu" in res.stderr
