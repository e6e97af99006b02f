"""The benchmark pipeline end to end on the CPU, and the data format's guards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfdata import schema as benchdata

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "benchmark.py"
DATA = ROOT / "docs" / "data"


def run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def interpreted_run(tmp_path_factory):
    from kernels._runtime import interpreter_problem

    if interpreter_problem():
        pytest.skip(interpreter_problem())
    out = tmp_path_factory.mktemp("bench")
    res = run("--interpret", "--suite", "seed,production,ablation,warpspec", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    return out, res


def test_interpret_mode_writes_valid_files(interpreted_run):
    out, res = interpreted_run
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == ["ablation.cpu-interpreter.json", "production.cpu-interpreter.json", "seed.cpu-interpreter.json"]
    for f in out.glob("*.json"):
        doc = benchdata.load(f)
        assert all(r["status"] == "ok" for r in doc["records"]), [r for r in doc["records"] if r["status"] != "ok"]
        assert {"gpu", "torch", "triton", "date", "git_commit"} <= doc["provenance"].keys()
    assert "eta" in res.stdout  # a progress line per case
    # Tensor descriptors need a GPU: the warpspec suite says so and writes nothing.
    assert "warpspec: nothing to run on this machine" in res.stdout


def test_records_pool_interleaved_rounds(interpreted_run):
    out, _ = interpreted_run
    doc = benchdata.load(out / "production.cpu-interpreter.json")
    for r in doc["records"]:
        assert r["p20"] <= r["p50"] <= r["p80"] and len(r["round_p50"]) >= 1


def test_ablation_records_carry_their_prediction(interpreted_run):
    from kernels import ablation

    out, _ = interpreted_run
    doc = benchdata.load(out / "ablation.cpu-interpreter.json")
    steps = sorted({r["step"] for r in doc["records"]})
    assert steps == list(range(len(ablation.RUNGS)))
    for r in doc["records"]:
        rung = ablation.RUNGS[r["step"]]
        assert r["provider"] == rung.name and r["label"] == rung.label
        assert r["predicted_speedup"] == (rung.predict_causal if r["causal"] else rung.predict_full)
        assert r["config"]["BLOCK_M"] > 0  # the tile that actually ran


def test_interpret_needs_explicit_out():
    res = run("--interpret", "--suite", "seed")
    assert res.returncode != 0 and "--out" in res.stderr


@pytest.mark.skipif(not __import__("kernels").INTERPRET, reason="checks the no-GPU message")
def test_no_gpu_gives_clear_message():
    res = run("--suite", "seed", env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode != 0 and "no CUDA GPU" in res.stderr


def test_help():
    res = run("--help")
    assert res.returncode == 0 and "--suite" in res.stdout and "--quick" in res.stdout


def test_committed_data_is_valid():
    files = sorted(DATA.glob("*.json"))
    assert files, "docs/data holds no benchmark files"
    for f in files:
        doc = benchdata.load(f)
        assert doc["provenance"]["gpu"].startswith("NVIDIA"), f"{f.name} is not from a GPU run"


def test_corrupt_and_partial_files_fail_loudly(tmp_path, interpreted_run):
    out, _ = interpreted_run
    good = json.loads((out / "seed.cpu-interpreter.json").read_text())
    truncated = tmp_path / "seed.x.json"
    truncated.write_text(json.dumps(good)[:500])
    with pytest.raises(benchdata.BenchDataError, match="not valid JSON"):
        benchdata.load(truncated)
    no_prov = dict(good)
    del no_prov["provenance"]
    with pytest.raises(benchdata.BenchDataError, match="provenance"):
        benchdata.validate(no_prov)
    bad_rec = json.loads(json.dumps(good))
    bad_rec["records"][0]["p50"] = None
    with pytest.raises(benchdata.BenchDataError, match="p20/p50/p80"):
        benchdata.validate(bad_rec)
    with pytest.raises(benchdata.BenchDataError, match="cannot read"):
        benchdata.load(tmp_path / "missing.json")


def test_write_atomic_keeps_old_file_on_invalid_data(tmp_path, interpreted_run):
    out, _ = interpreted_run
    target = tmp_path / "seed.h100.json"
    good = json.loads((out / "seed.cpu-interpreter.json").read_text())
    benchdata.write_atomic(target, good)
    before = target.read_text()
    with pytest.raises(benchdata.BenchDataError):
        benchdata.write_atomic(target, {**good, "records": []})
    assert target.read_text() == before
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_slug():
    assert benchdata.slug("NVIDIA H100 80GB HBM3") == "h100"
    assert benchdata.slug("NVIDIA H200") == "h200"


# ----------------------------------------------------------------------------- in process

def test_import_has_no_side_effects():
    code = ("import os, sys; sys.path.insert(0, 'scripts'); before = dict(os.environ); import benchmark; "
            "assert 'kernels' not in sys.modules, 'importing benchmark imported kernels'; "
            "assert dict(os.environ) == before, 'importing benchmark changed the environment'; print('clean')")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "clean", res.stderr[-2000:]


@pytest.fixture
def bench_module():
    import kernels

    if not kernels.INTERPRET:
        pytest.skip("the in-process pipeline runs the interpreter; this process compiles for the GPU")
    if kernels._runtime.interpreter_problem():
        pytest.skip(kernels._runtime.interpreter_problem())
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import benchmark
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return benchmark


def test_suite_runs_in_process(bench_module, tmp_path):
    settings = bench_module.Settings(quick=True, interpret=True, commit="abc1234")
    prov = bench_module.provenance(settings)
    assert prov["git_commit"] == "abc1234" and prov["rounds"] == 1
    path = bench_module.run_suite("seed", settings, tmp_path, prov)
    doc = benchdata.load(path)
    vec = [r for r in doc["records"] if r["provider"] == "vectorized"]
    assert vec and all("compiler" in r for r in vec)  # the reporting launcher made the checked call
    assert {r["provider"] for r in doc["records"]} == set(next(bench_module.seed_cases(True, True))["providers"])


def test_failed_suite_never_overwrites_good_data(bench_module, tmp_path, monkeypatch):
    settings = bench_module.Settings(quick=True, interpret=True)
    prov = bench_module.provenance(settings)
    path = bench_module.run_suite("seed", settings, tmp_path, prov)
    before = path.read_bytes()

    def broken(suite, c, name, fn, direction, settings, launchers):
        rec, _ = real(suite, c, name, fn, direction, settings, launchers)
        rec.update(status="error", reason="RuntimeError: simulated")
        return rec, None

    real = bench_module.prepare
    monkeypatch.setattr(bench_module, "prepare", broken)
    with pytest.raises(RuntimeError, match="failed unexpectedly"):
        bench_module.run_suite("seed", settings, tmp_path, prov)
    assert path.read_bytes() == before
