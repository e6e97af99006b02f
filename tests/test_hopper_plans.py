"""The Gluon launchers' launch plans (kernels/gluon/common.py: ``LaunchPlan``, ``PlanCache``,
``rebind``) and their direct launch (kernels/launch.py).

A plan caches, per shape, strides, dtype, device and switch, everything a launch needs but the
data pointers. What could go wrong: a plan or a compiled-kernel entry reused for inputs it was
not built for (another shape, dtype, stride, alignment), or a descriptor still pointing at the
first call's tensor. On any machine (no GPU: the kernel is a stand-in that records its launches)
these tests check what each launch is handed; on an sm90 GPU they check the results against
float64, twice per shape on fresh tensors with NaN-filled outputs.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import kernels
from kernels import launch
from kernels.gluon import common as gluon_common, dkdv as gluon_dkdv, dq as gluon_dq, forward as gluon_forward

from helpers import rand
from test_hopper import check_against_float64

needs_gluon = pytest.mark.skipif(gluon_common.GLUON_IMPORT_ERROR is not None, reason="this Triton has no Gluon API")


# ----------------------------------------------------------------------------- CPU: a recording stand-in


class FakeCompiled:
    """Stands in for Triton's CompiledKernel: ``compiled[grid](*args)`` records the launch."""

    def __init__(self, log):
        self.log = log

    def __getitem__(self, grid):
        return lambda *args: self.log.append(("direct", grid, args))


class RecordingKernel:
    """A Gluon kernel's signature (its real ``params``) with a launch that records its arguments."""

    def __init__(self, real):
        self.params, self.log = real.params, []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.log.append(("triton", grid, args, kwargs))
            return FakeCompiled(self.log)
        return run


@pytest.fixture
def recorded(monkeypatch):
    """Each Gluon launcher with fresh plan caches, a fresh direct launcher, its kernel replaced by a
    ``RecordingKernel`` and (dK/dV, dQ) the scope check declared fine, so the launch path runs on
    CPU tensors. Returns {"fwd" | "dkdv" | "dq": the RecordingKernel} and the direct launcher."""
    direct = launch.DirectLauncher(enabled=True, current_device=lambda: 0)
    fakes = {}
    for module, tag, name in ((gluon_forward, "fwd", "hopper_fwd_kernel"), (gluon_dkdv, "dkdv", "hopper_dkdv_kernel"),
                              (gluon_dq, "dq", "hopper_dq_kernel")):
        fakes[tag] = RecordingKernel(getattr(module, name))
        monkeypatch.setattr(module, name, fakes[tag])
        monkeypatch.setattr(module, "PLANS", gluon_common.PlanCache())
        monkeypatch.setattr(module, "DIRECT", direct)
    monkeypatch.setattr(gluon_dkdv, "hopper_bwd_problem", lambda *a, **kw: None)
    return fakes, direct


def launched_args(entry) -> tuple:
    """The positional arguments of one recorded launch, Triton's path or the direct one."""
    return entry[2]


def assert_descriptors_over(args, tensors, blocks):
    """The launch's first arguments are descriptors over exactly ``tensors`` (this call's memory),
    equal in every field to descriptors built from scratch (the pre-plan launch path)."""
    for got, t, rows in zip(args, tensors, blocks):
        fresh = gluon_common.descriptor(t, rows) if t.dim() == 2 else gluon_common.row_descriptor(t)
        assert got.base.data_ptr() == t.data_ptr() and got.base.dtype == t.dtype
        assert (list(got.shape), list(got.strides), list(got.block_shape)) == \
            (list(fresh.shape), list(fresh.strides), list(fresh.block_shape))
        assert got.layout == fresh.layout and got.padding == fresh.padding


def fwd_inputs(B=1, H=2, H_KV=2, NQ=100, NK=130, D=64, dtype=torch.float16):
    return (torch.randn(B, H, NQ, D).to(dtype), torch.randn(B, H_KV, NK, D).to(dtype),
            torch.randn(B, H_KV, NK, D).to(dtype))


@needs_gluon
def test_forward_plan_is_built_once_and_rebound_each_call(recorded):
    fakes, direct = recorded
    log = fakes["fwd"].log
    calls = [fwd_inputs() for _ in range(3)]
    outs = [gluon_forward.hopper_forward(q, k, v, False, 0.125) for q, k, v in calls]
    assert len(gluon_forward.PLANS) == 1 and len(direct) == 1
    assert [e[0] for e in log] == ["triton", "direct", "direct"]  # Triton's path once, then the entry
    for entry, (q, k, v), (o, lse, _) in zip(log, calls, outs):
        args = launched_args(entry)
        block_n = gluon_forward.TILES[64][0]
        assert_descriptors_over(args, (q.view(-1, 64), k.view(-1, 64), v.view(-1, 64)),
                                (gluon_common.ROWS, block_n, block_n))
        assert args[3] is o and args[4] is lse  # this call's outputs, not the first call's
        assert args[5:13] == (*o.stride()[:3], 2, 1, 100, 130, 0.125 * gluon_common.LOG2E)
    # The direct entry also gets every constexpr, in the kernel's parameter order.
    names = [p.name for p in gluon_forward.hopper_fwd_kernel.params if p.is_constexpr]
    assert len(launched_args(log[1])) == 13 + len(names)
    assert log[0][3]["SCHEDULE"] == gluon_forward.default_schedule(64, False)
    # The plan keeps no caller's memory alive: its templates point at empty meta tensors.
    plan = next(iter(gluon_forward.PLANS._plans.values()))
    assert all(t.base.device.type == "meta" and t.base.numel() == 0 for t in plan.templates)


@needs_gluon
@pytest.mark.parametrize("change", ["dtype", "length", "heads", "gqa", "stride", "causal", "scale", "schedule",
                                    "stages", "output alignment"])
def test_forward_never_reuses_a_stale_plan_or_entry(recorded, change, monkeypatch):
    fakes, direct = recorded
    log = fakes["fwd"].log
    q, k, v = fwd_inputs()
    kw = dict(causal=False, scale=0.125, schedule=None, stages=None)
    gluon_forward.hopper_forward(q, k, v, kw["causal"], kw["scale"])
    if change == "dtype":
        q, k, v = fwd_inputs(dtype=torch.bfloat16)
    elif change == "length":
        q, k, v = fwd_inputs(NQ=101)
    elif change == "heads":
        q, k, v = fwd_inputs(H=4, H_KV=4)
    elif change == "gqa":
        q, k, v = fwd_inputs(H=2, H_KV=1)
    elif change == "stride":  # same shape, a size-1 batch dim with another stride: still contiguous
        q = q.as_strided(q.shape, (7 * q.stride(0), *q.stride()[1:]))
        assert q.is_contiguous()
    elif change == "output alignment":  # Triton specialises pointers on 16-byte alignment
        real = gluon_forward.new_output
        monkeypatch.setattr(gluon_forward, "new_output",
                            lambda shape, **kw: real((math.prod(shape) + 2,), **kw)[2:].view(shape))
    else:
        kw.update({"causal": dict(causal=True), "scale": dict(scale=0.25), "schedule": dict(schedule="pipelined"),
                   "stages": dict(stages=4)}[change])
    for _ in range(2):
        o, lse, _ = gluon_forward.hopper_forward(q, k, v, kw["causal"], kw["scale"], schedule=kw["schedule"],
                                                 stages=kw["stages"])
    # The change got a launch through Triton (a new compiled-kernel entry), then the direct one.
    assert [e[0] for e in log] == ["triton", "triton", "direct"], change
    assert len(direct) == 2
    args = launched_args(log[-1])
    D = q.shape[-1]
    block_n = gluon_forward.TILES[D][0]
    assert_descriptors_over(args, (q.view(-1, D), k.view(-1, D), v.view(-1, D)), (gluon_common.ROWS, block_n, block_n))
    assert args[3] is o and args[4] is lse
    B, H, NQ, _ = q.shape
    assert args[5:13] == (*o.stride()[:3], H, H // k.shape[1], NQ, k.shape[2], kw["scale"] * gluon_common.LOG2E)
    assert len(gluon_forward.PLANS) == (1 if change == "output alignment" else 2)


def bwd_inputs(B=1, H=2, H_KV=2, NQ=102, NK=130, D=64, dtype=torch.float16):
    q, k, v = fwd_inputs(B, H, H_KV, NQ, NK, D, dtype)
    return q, k, v, torch.randn_like(q), torch.randn(B, H, NQ), torch.randn(B, H, NQ)


@needs_gluon
@pytest.mark.parametrize("tag", ["dkdv", "dq"])
def test_backward_plans_rebind_and_key_on_every_input(recorded, tag):
    fakes, direct = recorded
    log = fakes[tag].log
    launcher = gluon_dkdv.hopper_dkdv if tag == "dkdv" else gluon_dq.hopper_dq
    module = gluon_dkdv if tag == "dkdv" else gluon_dq
    calls = [bwd_inputs() for _ in range(2)] + [bwd_inputs(NQ=103), bwd_inputs(dtype=torch.bfloat16)]
    calls.append(bwd_inputs())
    lse_strided = calls[-1][4].as_strided(calls[-1][4].shape, (99, *calls[-1][4].stride()[1:]))
    calls[-1] = (*calls[-1][:4], lse_strided, calls[-1][5])  # lse with another (size-1 dim) stride
    for q, k, v, do, lse, delta in calls:
        out = launcher(q, k, v, do, lse, delta, True, 0.125)
        D, NQ, NK = q.shape[-1], q.shape[2], k.shape[2]
        args = launched_args(log[-1])
        if tag == "dkdv":
            stride = -(-NQ // 4) * 4
            # Nq = 102, 103: the statistics are copied into 16-byte aligned rows; compare the layout only.
            padded = [args[4].base, args[5].base]
            assert all(p.numel() == q.shape[1] * stride for p in padded)
            assert_descriptors_over(args[:4], (q.view(-1, D), k.view(-1, D), v.view(-1, D), do.view(-1, D)),
                                    (gluon_common.ROWS,) * 4)
            assert_descriptors_over(args[4:6], padded, (None, None))
            assert args[6] is out[0] and args[7] is out[1]
            assert args[8:15] == (2, 2, NQ, NK, stride, 0.125 * gluon_common.LOG2E, 0.125)
        else:
            block_n = gluon_dq.TILES[D][0]
            assert_descriptors_over(args[:4], (q.view(-1, D), do.view(-1, D), k.view(-1, D), v.view(-1, D)),
                                    (gluon_common.ROWS, gluon_common.ROWS, block_n, block_n))
            assert args[4] is out and args[5] is lse and args[6] is delta
            assert args[7:13] == (2, 2, NQ, NK, 0.125 * gluon_common.LOG2E, 0.125)
    # Plans: the first shape (twice), Nq = 103, bf16, the strided lse: four.
    assert len(module.PLANS) == 4
    assert [e[0] for e in log] == ["triton", "direct", "triton", "triton", "triton"]


@needs_gluon
@pytest.mark.parametrize("launcher", [gluon_dkdv.hopper_dkdv, gluon_dq.hopper_dq], ids=lambda f: f.__name__)
def test_a_cached_plan_still_refuses_bad_arguments(recorded, launcher):
    """A cached plan stands for arguments that passed the checks; anything else still meets them."""
    q, k, v, do, lse, delta = bwd_inputs(NQ=128)
    launcher(q, k, v, do, lse, delta, False, 0.125, stages=2)
    with pytest.raises(ValueError, match="stages must be a positive int"):
        launcher(q, k, v, do, lse, delta, False, 0.125, stages=True)  # refused, though True == 1 as a key
    launcher(q, k, v, do, lse, delta, False, 0.125, stages=1)
    with pytest.raises(ValueError, match="stages must be a positive int"):
        launcher(q, k, v, do, lse, delta, False, 0.125, stages=True)
    with pytest.raises(TypeError, match="causal must be a bool"):
        launcher(q, k, v, do, lse, delta, 0, 0.125, stages=2)  # 0 == False
    with pytest.raises(ValueError, match="lse must be a contiguous float32"):
        launcher(q, k, v, do, lse.half(), delta, False, 0.125, stages=2)
    buf = torch.zeros(q.numel() + 8, dtype=q.dtype)
    shifted = buf[2:2 + q.numel()].view(q.shape)  # 4 bytes past a 16-byte boundary
    with pytest.raises(ValueError, match="16-byte aligned"):
        launcher(shifted, k, v, do, lse, delta, False, 0.125, stages=2)


@needs_gluon
def test_every_gluon_kernel_takes_the_direct_entry():
    """The direct launcher caches a kernel only if its constexprs all follow the runtime
    arguments the launcher passes; otherwise every call silently takes Triton's path."""
    for kernel, n_args in ((gluon_forward.hopper_fwd_kernel, 3 + 2 + 8), (gluon_dkdv.hopper_dkdv_kernel, 6 + 2 + 7),
                           (gluon_dq.hopper_dq_kernel, 4 + 3 + 6)):
        assert launch.constexpr_params(kernel, n_args) is not None, kernel


@needs_gluon
def test_rebind_checks_dtype_and_alignment():
    t = torch.zeros(256, 64, dtype=torch.float16)
    tmpl = gluon_common.template(gluon_common.descriptor(t, 64))
    other = torch.ones(256, 64, dtype=torch.float16)
    desc = gluon_common.rebind(tmpl, other)
    assert desc.base is other and tmpl.base.device.type == "meta" and desc.layout is tmpl.layout
    with pytest.raises(ValueError, match="float16 descriptor cannot take a torch.bfloat16"):
        gluon_common.rebind(tmpl, other.bfloat16())
    with pytest.raises(ValueError, match="16-byte aligned"):
        gluon_common.rebind(tmpl, torch.zeros(256 * 64 + 1, dtype=torch.float16)[1:].view(256, 64))


def test_plan_cache_is_bounded():
    cache = gluon_common.PlanCache(max_entries=3)
    for n in range(7):
        assert cache.get(("k", n)) is None
        cache.put(("k", n), n)
        assert cache.get(("k", n)) == n
    assert len(cache) <= 3


def test_tensor_key_separates_what_a_plan_depends_on():
    t = torch.zeros(1, 2, 8, 64, dtype=torch.float16)
    keys = {gluon_common.tensor_key(x) for x in (
        t, t.clone(), t.bfloat16(), torch.zeros(1, 2, 9, 64, dtype=torch.float16),
        t.as_strided(t.shape, (5, *t.stride()[1:])), torch.nn.Parameter(t))}
    assert len(keys) == 5  # the clone shares the original's key: only the data differs
    with pytest.raises(AttributeError):
        gluon_common.tensor_key([1.0])


# ----------------------------------------------------------------------------- GPU: results, twice per shape


def fwd_bwd(q, k, v, do, causal):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = kernels.flash_attention(q, k, v, causal=causal, backend="gluon")
    out.backward(do)
    return out.detach(), q.grad, k.grad, v.grad


@pytest.mark.hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2, 4, 2, 1000, 1024), (1, 2, 2, 130, 257)], ids=lambda s: "x".join(map(str, s)))
def test_second_call_on_fresh_tensors_matches_float64(shape, dtype, causal, monkeypatch):
    """Two calls of one shape on different tensors: the second runs the cached plans through the
    compiled kernels' own entries (asserted) and must match float64 as the first does. Outputs
    start as NaN (the suite sets KERNELS_POISON_OUTPUTS), so an unwritten element fails. The
    Gluon launchers get caches of their own here, so the counts are this test's alone."""
    B, H, H_KV, NQ, NK = shape
    assert launch.DIRECT.enabled, "the direct launch is off (KERNELS_DIRECT_LAUNCH=0?)"
    direct = launch.DirectLauncher(enabled=True, current_device=torch.cuda.current_device)
    modules = (gluon_forward, gluon_dkdv, gluon_dq)
    for module in modules:
        monkeypatch.setattr(module, "DIRECT", direct)
        monkeypatch.setattr(module, "PLANS", gluon_common.PlanCache())
    results, hits = [], {}
    for _ in range(2):
        q, k, v = rand(B, H, NQ, 64, dtype=dtype), rand(B, H_KV, NK, 64, dtype=dtype), rand(B, H_KV, NK, 64, dtype=dtype)
        do = rand(B, H, NQ, 64, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a direct-launch fallback warning fails the test
            got = fwd_bwd(q, k, v, do, causal)
        check_against_float64(got, q, k, v, do, causal)
        # One plan per kernel and one compiled entry each, after the first call and the second.
        assert [len(m.PLANS) for m in modules] == [1, 1, 1] and len(direct) == 3 and direct.enabled
        if not results:  # count the launches through each stored entry from here on
            for key, (compiled, runner, consts) in list(direct._compiled.items()):
                direct._compiled[key] = (compiled, counted(runner, hits, key[0]), consts)
        results.append(got)
    assert hits == {"gluon-fwd": 1, "gluon-dkdv": 1, "gluon-dq": 1}, "the second call did not take every entry"
    assert not torch.equal(results[0][0], results[1][0])


def counted(runner, hits: dict, name: str):
    def run(*args):
        hits[name] = hits.get(name, 0) + 1
        return runner(*args)
    return run


@pytest.mark.hopper
def test_changed_shape_dtype_or_stride_gets_its_own_plan():
    """A sequence that revisits a shape after others (dtype, length, heads, a stride change on a
    size-1 dim, GQA): every call matches float64, so no call ran on another's plan."""
    variants = [
        ((1, 2, 2, 300, 300), torch.float16, None),
        ((1, 2, 2, 300, 300), torch.bfloat16, None),
        ((1, 2, 2, 301, 300), torch.float16, None),
        ((1, 4, 4, 300, 300), torch.float16, None),
        ((1, 4, 2, 300, 300), torch.float16, None),
        ((1, 2, 2, 300, 300), torch.float16, "stride"),
        ((1, 2, 2, 300, 300), torch.float16, None),
    ]
    for (B, H, H_KV, NQ, NK), dtype, change in variants:
        for causal in (False, True):
            q = rand(B, H, NQ, 128, dtype=dtype)
            if change == "stride":
                q = q.as_strided(q.shape, (3 * q.stride(0), *q.stride()[1:]))  # B = 1: still contiguous
                assert q.is_contiguous() and q.stride(0) != q[0].numel()
            k, v = rand(B, H_KV, NK, 128, dtype=dtype), rand(B, H_KV, NK, 128, dtype=dtype)
            do = rand(B, H, NQ, 128, dtype=dtype)
            check_against_float64(fwd_bwd(q, k, v, do, causal), q, k, v, do, causal)


@pytest.mark.hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gluon_direct_path_equals_tritons_path(causal, monkeypatch):
    """With the direct launch off (KERNELS_DIRECT_LAUNCH=0's setting) every Gluon launch goes
    through Triton's own path with the same rebound descriptors: the results are bit-identical."""
    q, k, v, do = (rand(2, 2, 1000, 64, dtype=torch.float16) for _ in range(4))
    monkeypatch.setattr(launch.DIRECT, "enabled", False)
    want = fwd_bwd(q, k, v, do, causal)
    monkeypatch.setattr(launch.DIRECT, "enabled", True)
    for _ in range(3):  # the first may compile through Triton; the others take the entry
        got = fwd_bwd(q, k, v, do, causal)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    assert launch.DIRECT.enabled


# ----------------------------------------------------------------------------- the measurement script


def test_sweep_grid_and_refusal_without_a_gpu(tmp_path):
    """scripts/launch_overhead.py sweep: the full grid is N 1k/2k/4k x fp16/bf16 x D 64/128 x causal
    or not, --quick its fp16 N 1k/2k part; without a GPU it exits 1 and writes nothing."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))
    try:
        import launch_overhead as lo
    finally:
        sys.path.pop(0)
    full, quick = lo.sweep_cases(False), lo.sweep_cases(True)
    assert {(c["N"], c["dtype"], c["D"], c["causal"]) for c in full} == {
        (n, dt, d, c) for n in (1024, 2048, 4096) for dt in ("float16", "bfloat16") for d in (64, 128)
        for c in (False, True)}
    assert len(full) == 24 and len(quick) == 8 and all(c in full for c in quick)
    assert {c["N"] for c in quick} == {1024, 2048} and {c["dtype"] for c in quick} == {"float16"}
    if torch.cuda.is_available():
        return
    out = tmp_path / "sweep.json"
    res = subprocess.run([sys.executable, str(root / "scripts" / "launch_overhead.py"), "sweep", "--quick",
                          "--out", str(out)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert res.returncode == 1 and "nothing written" in res.stderr and not out.exists()
    assert not list(tmp_path.iterdir())
