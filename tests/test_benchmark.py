"""The benchmark pipeline end to end on the CPU, and the data format's guards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kernels
from perfdata import schema as benchdata

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "benchmark.py"
DATA = ROOT / "docs" / "data"


def run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def interpreted_run(tmp_path_factory):
    from kernels.runtime import interpreter_problem

    if interpreter_problem():
        pytest.skip(interpreter_problem())
    out = tmp_path_factory.mktemp("bench")
    res = run("--interpret", "--suite", "seed,production,ablation,warpspec,hopper", "--out", str(out))
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
    assert "hopper: nothing to run on this machine" in res.stdout  # the Gluon kernel is sm90-only


def test_records_pool_interleaved_rounds(interpreted_run):
    out, _ = interpreted_run
    doc = benchdata.load(out / "production.cpu-interpreter.json")
    for r in doc["records"]:
        assert r["p20"] <= r["p50"] <= r["p80"] and len(r["round_p50"]) >= 1


def test_our_records_name_the_kernel_that_ran(interpreted_run):
    """Every record of ours says which kernel ran each pass (kernels.plan for the router); peers do not."""
    out, _ = interpreted_run
    doc = benchdata.load(out / "production.cpu-interpreter.json")
    assert doc["provenance"]["flash_dispatch"] == kernels.attention.RULE
    ours = [r for r in doc["records"] if r["provider"] == "flash"]
    assert ours and {r["direction"] for r in ours} == {"fwd", "bwd"}
    for r in ours:
        passes = ("forward", "dkdv", "dq") if r["direction"] == "bwd" else ("forward",)
        assert all(r["kernel"][p] == "pointer" for p in passes), r["kernel"]  # no Gluon under the interpreter
        assert set(r["kernel"]["why"]) == set(passes)
    assert not any("kernel" in r for r in doc["records"] if r["provider"] in ("eager", "sdpa"))
    seed = benchdata.load(out / "seed.cpu-interpreter.json")
    assert {r["kernel"]["forward"] for r in seed["records"] if r["provider"] == "basic"} == {"basic"}


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
    if kernels.runtime.interpreter_problem():
        pytest.skip(kernels.runtime.interpreter_problem())
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


# ----------------------------------------------------------------------------- FlashAttention-4, decoding, shards

FAKE_FA4 = '''
import torch

def flash_attn_func(q, k, v, softmax_scale=None, causal=False):
    """Attention on (B, N, H, D) tensors, as FlashAttention-4 takes them; returns (out, lse) like it."""
    for t in (q, k, v):
        assert t.is_contiguous(), "the benchmark must hand over (B, N, H, D) tensors without a copy"
    q, k, v = (t.transpose(1, 2).float() for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    s = q @ k.transpose(-1, -2) * softmax_scale
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    out = torch.softmax(s, dim=-1) @ v
    return out.transpose(1, 2), torch.logsumexp(s, dim=-1)
'''


@pytest.fixture
def fake_fa4_site(tmp_path, bench_module):
    """A folder laid out like `pip install --target`: the package sits in a folder that only the
    .pth file names, so importing it works only when the benchmark loads the folder with addsitedir."""
    site_dir = tmp_path / "fa4site"
    package = site_dir / "vendored" / "flash_attn" / "cute"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "interface.py").write_text(FAKE_FA4)
    (site_dir / "fake_fa4.pth").write_text("vendored\n")
    meta = site_dir / "flash_attn_4-9.9.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: flash-attn-4\nVersion: 9.9.1\n")
    saved_path = list(sys.path)
    yield site_dir
    sys.path[:] = saved_path
    for name in [m for m in sys.modules if m == "flash_attn" or m.startswith("flash_attn.")]:
        del sys.modules[name]
    bench_module.load_fa4.cache_clear()


def test_fa4_loads_through_its_pth_file_and_is_checked_in_both_directions(bench_module, fake_fa4_site):
    fa4 = bench_module.load_fa4(str(fake_fa4_site), (9, 0))
    assert fa4.info == {"status": "ok", "version": "9.9.1", "cutlass_dsl": "unknown", "site": str(fake_fa4_site)}
    settings = bench_module.Settings(interpret=True)
    case = dict(B=2, H=4, Hkv=2, Nq=24, Nk=24, D=16, dtype="float32", causal=True, providers=["fa4"], bwd=True)
    for direction in ("fwd", "bwd"):
        rec, call = bench_module.prepare("production", case, "fa4", fa4, direction, settings, {})
        assert rec["status"] == "ok" and rec["max_err"] <= rec["tol"], rec
        call()  # the timed call runs too (the fake asserts its inputs need no copy)


def test_fa4_that_cannot_run_is_recorded_as_unsupported_with_its_reason(bench_module, fake_fa4_site, tmp_path):
    assert "sm80" in bench_module.load_fa4(str(fake_fa4_site), (8, 0)).info["reason"]
    missing = bench_module.load_fa4(str(tmp_path / "nowhere"), (9, 0)).info
    assert missing["status"] == "unsupported" and "not a folder" in missing["reason"]
    (fake_fa4_site / "fake_fa4.pth").unlink()  # without the .pth file the package is not importable
    broken = bench_module.load_fa4(str(fake_fa4_site), (9, 0)).info
    assert broken["status"] == "unsupported" and "import" in broken["reason"]
    settings = bench_module.Settings(interpret=True)
    case = dict(B=1, H=2, Hkv=2, Nq=16, Nk=16, D=16, dtype="float16", causal=False, providers=["flash", "fa4"],
                bwd=False)
    records = bench_module.run_group("production", case, "fwd", bench_module.providers(settings), {}, settings)
    fa4 = next(r for r in records if r["provider"] == "fa4")
    assert fa4["status"] == "unsupported" and "no CUDA GPU" in fa4["reason"]
    assert next(r for r in records if r["provider"] == "flash")["status"] == "ok"
    prov = bench_module.provenance(settings)
    assert prov["fa4"] == {"status": "unsupported", "reason": "no CUDA GPU (Triton interpreter run)"}


def test_production_suite_has_fa4_after_cudnn_and_a_decode_case(bench_module):
    cases = list(bench_module.production_cases(False, False))
    square = [c for c in cases if c["Nq"] == c["Nk"]]
    assert all(c["providers"].index("fa4") == c["providers"].index("sdpa-cudnn") + 1
               for c in square if "sdpa-cudnn" in c["providers"])
    assert all("fa4" in c["providers"] for c in cases)
    decode = [c for c in cases if c["Nq"] != c["Nk"]]
    assert {c["Nk"] for c in decode} == {16384, 65536} and {c["Hkv"] for c in decode} == {8, 32}
    assert {c["dtype"] for c in decode} == {"float16", "bfloat16"}
    assert all(c["Nq"] == 1 and not c["bwd"] and not c["causal"] and "sdpa-cudnn" in c["providers"] for c in decode)


def test_shards_are_disjoint_and_cover_the_suite(bench_module):
    from perfdata import shards

    cases = list(bench_module.production_cases(False, False))
    names = [bench_module.case_name("production", c, "fwd") for c in cases]
    for count in (1, 2, 3, 5):
        picked = [shards.select(names, k, count) for k in range(1, count + 1)]
        assert sorted(n for part in picked for n in part) == sorted(names)
        assert len({n for part in picked for n in part}) == len(names)
        assert max(map(len, picked)) - min(map(len, picked)) <= 1


def test_sharded_interpreted_run_merges_into_the_whole_suite(tmp_path, interpreted_run):
    whole, _ = interpreted_run
    for k in (1, 2):
        res = run("--interpret", "--suite", "production", "--shard", f"{k}/2", "--out", str(tmp_path), "--commit", "c0ffee")
        assert res.returncode == 0, res.stderr[-2000:]
    parts = sorted(tmp_path.glob("production.cpu-interpreter.shard*of2.json"))
    assert [p.name for p in parts] == ["production.cpu-interpreter.shard1of2.json",
                                       "production.cpu-interpreter.shard2of2.json"]
    assert not (tmp_path / "production.cpu-interpreter.json").exists()  # a shard is never the suite's file
    res = run("--merge", *map(str, parts), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-2000:]
    merged = benchdata.load(tmp_path / "production.cpu-interpreter.json")
    reference = benchdata.load(whole / "production.cpu-interpreter.json")
    key = lambda doc: sorted((r["case"], r["provider"]) for r in doc["records"])  # noqa: E731
    assert key(merged) == key(reference)
    assert merged["provenance"]["shards"] == 2 and "shard" not in merged["provenance"]
    assert [run_["index"] for run_ in merged["provenance"]["shard_runs"]] == [1, 2]


def test_merge_refuses_shards_of_different_commits_and_keeps_the_old_file(tmp_path):
    from kernels.runtime import interpreter_problem

    if interpreter_problem():  # the shards come from interpreted runs (seen on the GPU box: NumPy 2.5)
        pytest.skip(interpreter_problem())
    for k, commit in ((1, "aaaa111"), (2, "bbbb222")):
        res = run("--interpret", "--suite", "production", "--shard", f"{k}/2", "--out", str(tmp_path), "--commit", commit)
        assert res.returncode == 0, res.stderr[-2000:]
    target = tmp_path / "production.cpu-interpreter.json"
    target.write_text("the good data from before\n")
    res = run("--merge", *map(str, sorted(tmp_path.glob("*.shard*of2.json"))), "--out", str(tmp_path))
    assert res.returncode != 0 and "git_commit" in res.stderr and "nothing written" in res.stderr
    assert target.read_text() == "the good data from before\n"


def test_bad_shard_argument_is_refused():
    res = run("--shard", "3/2", "--interpret", "--out", "/tmp/unused")
    assert res.returncode != 0 and "between 1 and N" in res.stderr
