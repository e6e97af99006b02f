"""The Gluon Hopper forward (kernels/gluon/forward.py) and the router over every backend
(kernels/attention.py): on an sm90 GPU against float64, elsewhere the reasons the Gluon kernel
declines and the errors its launcher and the router raise."""

from __future__ import annotations

import math
import re

import pytest
import torch

import kernels
from kernels import attention, flash, launch, splitk
from kernels.gluon import common as gluon_common, dkdv as gluon_dkdv, dq as gluon_dq, forward as gluon_forward
from kernels.reference import reference_attention
from kernels.settings import SETTINGS

from helpers import DEVICE, ON_HOPPER, max_err, rand, tolerance, torch_lowp_attention

# (B, H, H_KV, N_Q, N_K): ragged lengths on both sides, Nq != Nk, GQA and MQA, one row, one key.
SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 3, 3, 7, 100),
    (1, 2, 2, 63, 257),
    (2, 4, 2, 100, 63),
    (1, 4, 1, 257, 130),
    (2, 2, 2, 128, 128),
    (1, 2, 2, 1000, 1000),
    (1, 1, 1, 129, 4096),
]
PASSES = ("forward", "dkdv", "dq")


def lse_reference(q, k, causal, scale):
    """log2-sum-exp2 of each row's scaled scores, in float64 (the kernel's lse convention)."""
    if q.shape[1] != k.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if causal:
        keep = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return torch.logsumexp(s, dim=-1) / math.log(2)


def spy_launchers(monkeypatch) -> list:
    """Wrap every launcher the router calls; returns the list of (pass, kernel) they record, in
    call order, so a test sees which kernel ran each pass."""
    ran = []
    for module, name, tag in (
        (flash, "flash_forward", ("forward", "pointer")),
        (splitk, "splitk_forward", ("forward", "splitk")),
        (gluon_forward, "hopper_forward", ("forward", "gluon")),
        (flash, "flash_dkdv", ("dkdv", "pointer")),
        (gluon_dkdv, "hopper_dkdv", ("dkdv", "gluon")),
        (flash, "flash_dq", ("dq", "pointer")),
        (gluon_dq, "hopper_dq", ("dq", "gluon")),
    ):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _tag=tag, **kw: ran.append(_tag) or _real(*a, **kw))
    return ran


def float64_grads(q, k, v, do, causal, scale=None):
    """The output and dq, dk, dv in float64, and PyTorch's own low-precision ones (the yardstick)."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference_attention(q64, k64, v64, causal=causal, scale=scale)
    ref.backward(do.double())
    ql, kl, vl = (t.detach().clone().requires_grad_() for t in (q, k, v))
    low = torch_lowp_attention(ql, kl, vl, causal, scale)
    low.backward(do)
    return (ref.detach(), q64.grad, k64.grad, v64.grad), (low.detach(), ql.grad, kl.grad, vl.grad)


def check_against_float64(got, q, k, v, do, causal, scale=None):
    """``got`` = (out, dq, dk, dv) within twice PyTorch's own error of float64 autograd."""
    want, low = float64_grads(q, k, v, do, causal, scale)
    for name, g, w, yard in zip(("out", "dq", "dk", "dv"), got, want, low):
        assert g.shape == w.shape and g.dtype == q.dtype
        assert not g.isnan().any(), f"{name}: an element was never written (outputs start as NaN)"
        err, tol = max_err(g, w), tolerance(q.dtype, w, max_err(yard, w))
        assert err <= tol, f"{name}: max abs error {err:.3e} > {tol:.3e}"
    return want


@pytest.mark.hopper
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("head_dim", gluon_common.HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("schedule", gluon_forward.SCHEDULES)
def test_forward_matches_float64(shape, head_dim, dtype, causal, schedule):
    B, H, H_KV, NQ, NK = shape
    q, k, v = rand(B, H, NQ, head_dim, dtype=dtype), rand(B, H_KV, NK, head_dim, dtype=dtype), \
        rand(B, H_KV, NK, head_dim, dtype=dtype)
    scale = head_dim**-0.5
    o, lse, _ = gluon_forward.hopper_forward(q, k, v, causal, scale, schedule=schedule)
    ref = reference_attention(q.double(), k.double(), v.double(), causal=causal, scale=scale)
    torch_err = max_err(torch_lowp_attention(q, k, v, causal, scale), ref)
    assert not o.isnan().any(), "an output element was never written"
    assert max_err(o, ref) <= tolerance(dtype, ref, torch_err)
    # lse feeds the backward: fp32 statistics, so it agrees with float64 to fp32 round-off
    # of a sum over up to N_K terms of 16-bit scores.
    assert (lse.double() - lse_reference(q, k, causal, scale)).abs().max().item() <= 1e-3


@pytest.mark.hopper
def test_fresh_inputs_each_call_give_fresh_outputs():
    # The same launch twice on different data: a cached or stale result would match the first.
    q, k, v = (rand(2, 2, 300, 128, dtype=torch.float16) for _ in range(3))
    o1 = gluon_forward.hopper_attention(q, k, v)
    q2 = rand(2, 2, 300, 128, dtype=torch.float16)
    o2 = gluon_forward.hopper_attention(q2, k, v)
    ref2 = reference_attention(q2, k, v)
    assert max_err(o2, ref2) < max_err(o1, ref2)


@pytest.mark.hopper
@pytest.mark.parametrize("schedule", gluon_forward.SCHEDULES)
def test_direct_launches_compute_each_call(schedule, monkeypatch):
    # After the first call, launches go through the compiled kernel's own entry (launch.DIRECT):
    # every later call, on fresh data and a NaN-filled output, must still match float64. The
    # forward gets a launcher of its own here, so its cache holds this test's launches alone.
    assert launch.DIRECT.enabled, "the direct launch is off (KERNELS_DIRECT_LAUNCH=0?)"
    direct = launch.DirectLauncher(enabled=True, current_device=torch.cuda.current_device)
    monkeypatch.setattr(gluon_forward, "DIRECT", direct)
    for causal in (False, True):
        for _ in range(3):
            q, k, v = (rand(1, 2, 300, 64, dtype=torch.float16) for _ in range(3))
            o, _, _ = gluon_forward.hopper_forward(q, k, v, causal, 0.125, schedule=schedule)
            ref = reference_attention(q.double(), k.double(), v.double(), causal=causal, scale=0.125)
            torch_err = max_err(torch_lowp_attention(q, k, v, causal, 0.125), ref)
            assert not o.isnan().any(), "an output element was never written"
            assert max_err(o, ref) <= tolerance(torch.float16, ref, torch_err)
    # One compiled entry per mask, still enabled: the second and third calls of each took it.
    assert direct.enabled and len(direct) == 2, "no launch took the direct path"


def test_descriptor_specialisation_keys_differ():
    # Two descriptors that Triton would compile differently (block shape, dtype) or that describe
    # other memory (shape, strides) must never share a direct-launch entry.
    from types import SimpleNamespace

    def desc(dtype=torch.float16, block=(64, 128), shape=(4096, 128), strides=(128, 1)):
        return SimpleNamespace(base=torch.empty(0, dtype=dtype), block_shape=list(block), layout="L",
                               shape=list(shape), strides=list(strides))
    keys = {launch.specialization((), (), (d,)) for d in
            (desc(), desc(torch.bfloat16), desc(block=(128, 128)), desc(shape=(8192, 128)), desc(strides=(256, 1)))}
    assert len(keys) == 5


def test_declines_with_a_reason_off_hopper():
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float16, device="cpu")
    if ON_HOPPER:
        q = q.cuda()
        assert gluon_forward.hopper_problem(q.float(), q.float(), q.float()) is not None  # fp32
        assert gluon_forward.hopper_problem(q[..., :40].contiguous(), q[..., :40].contiguous(),
                                            q[..., :40].contiguous()) is not None  # D = 40
        assert "contiguous" in gluon_forward.hopper_problem(q.transpose(1, 2), q, q)
    else:
        reason = gluon_forward.hopper_problem(q, q, q)
        assert reason  # interpreter, no Gluon, not CUDA or not sm90: each says so
        with pytest.raises(ValueError, match="hopper_attention"):
            gluon_forward.hopper_attention(q, q, q)


@pytest.mark.hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
# Grids of at least one program per SM: smaller ones take the split-K path first.
@pytest.mark.parametrize("shape", [(1, 8, 4, 4096, 4100), (1, 4, 4, 4111, 4096)], ids=lambda s: "x".join(map(str, s)))
def test_flash_attention_dispatches_and_backward_runs_on_its_lse(shape, causal, monkeypatch):
    # Long enough for flash_attention to pick the Gluon forward and both Gluon backward kernels;
    # the backward rebuilds P from the forward's lse, so wrong statistics show up in the gradients.
    B, H, H_KV, NQ, NK = shape
    q = rand(B, H, NQ, 128, dtype=torch.float16, requires_grad=True)
    k = rand(B, H_KV, NK, 128, dtype=torch.float16, requires_grad=True)
    v = rand(B, H_KV, NK, 128, dtype=torch.float16, requires_grad=True)
    assert gluon_forward.auto_applies(q, k, v, 128**-0.5)
    _, _, kernel = attention.attention_forward(q.detach(), k.detach(), v.detach(), causal, 128**-0.5, "ieee")
    assert kernel == "gluon"
    plan = kernels.plan(q, k, v, causal=causal, backward=True)
    assert (plan.forward, plan.dkdv, plan.dq) == ("gluon", "gluon", "gluon"), plan.why
    ran = spy_launchers(monkeypatch)
    out = kernels.flash_attention(q, k, v, causal=causal)
    do = torch.randn_like(out)
    out.backward(do)
    assert ran == [("forward", "gluon"), ("dkdv", "gluon"), ("dq", "gluon")], ran
    check_against_float64((out, q.grad, k.grad, v.grad), q, k, v, do, causal)


@pytest.mark.hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("backend", kernels.BACKENDS)
def test_every_backend_matches_float64_and_its_plan(backend, causal, monkeypatch):
    # A shape all four run: N = 4096 reaches the Gluon kernels' length rule; one head for "splitk"
    # so the grid leaves SMs idle and a split is meaningful.
    H = 1 if backend == "splitk" else 2
    q, k, v = (rand(1, H, 4096, 64, dtype=torch.float16, requires_grad=True) for _ in range(3))
    gluon = "gluon" if SETTINGS.gluon else "pointer"  # what "auto" runs where the Gluon rule holds
    expected = {
        "pointer": ("pointer", "pointer", "pointer"),
        "splitk": ("splitk", "pointer", "pointer"),
        "gluon": ("gluon", "gluon", "gluon"),
        # B * H = 2 query-tile rows leave most SMs idle: the forward splits where the GPU's SM
        # count says so; the backward follows the Gluon rule whichever forward ran.
        "auto": ("splitk" if splitk.auto_splits(q, k) > 1 else gluon, gluon, gluon),
    }[backend]
    plan = kernels.plan(q, k, v, causal=causal, backward=True, backend=backend)
    assert (plan.forward, plan.dkdv, plan.dq) == expected, plan.why
    assert (plan.splits > 1) == (plan.forward == "splitk") and plan.fallback is None
    assert set(plan.why) == set(PASSES) and all(plan.why.values())
    ran = spy_launchers(monkeypatch)
    out = kernels.flash_attention(q, k, v, causal=causal, backend=backend)
    do = torch.randn_like(out)
    out.backward(do)
    assert ran == list(zip(PASSES, expected)), f"plan said {expected}, ran {ran}"
    check_against_float64((out, q.grad, k.grad, v.grad), q, k, v, do, causal)


class FlashAttentionModule(torch.nn.Module):
    """The smallest model around kernels.flash_attention: what torch.compile sees in a real one."""

    def __init__(self, causal: bool):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v):
        return kernels.flash_attention(q, k, v, causal=self.causal)


@pytest.mark.hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_torch_compile_keeps_one_graph_and_matches_eager(causal):
    # fullgraph=True: a graph break anywhere in flash_attention (or its backward) is an error.
    module = FlashAttentionModule(causal)
    compiled = torch.compile(module, fullgraph=True)
    q, k, v = (rand(1, 2, 4096, 64, dtype=torch.float16) for _ in range(3))
    do = torch.randn_like(q)

    def fwd_bwd(fn):
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
        out = fn(qg, kg, vg)
        out.backward(do)
        return out.detach(), qg.grad, kg.grad, vg.grad

    eager = fwd_bwd(module)
    want, low = float64_grads(q, k, v, do, causal)
    for _ in range(2):  # the second call runs the compiled graph without tracing
        got = fwd_bwd(compiled)
        for name, g, e, w, yard in zip(("out", "dq", "dk", "dv"), got, eager, want, low):
            assert g.shape == e.shape and g.dtype == e.dtype and not g.isnan().any(), name
            tol = tolerance(torch.float16, w, max_err(yard, w))
            assert max_err(g, e) <= tol, f"{name}: compiled vs eager {max_err(g, e):.3e} > {tol:.3e}"
            assert max_err(g, w) <= tol, f"{name}: compiled vs float64 {max_err(g, w):.3e} > {tol:.3e}"


def test_backend_choice_is_checked():
    # On any machine: a backend that does not exist names the ones that do; "gluon" on fp32 says
    # why it cannot run, in the words of the kernel's own scope check.
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float32, device=DEVICE)
    why = gluon_forward.hopper_problem(q, q, q)
    assert why and (not ON_HOPPER or "float32" in why)
    for call in (lambda b: attention.attention_forward(q, q, q, False, 0.1, "ieee", backend=b),
                 lambda b: kernels.flash_attention(q, q, q, backend=b),
                 lambda b: kernels.plan(q, q, q, backend=b)):
        with pytest.raises(ValueError, match=re.escape(f"backend must be one of {kernels.BACKENDS}, got 'cuda'")):
            call("cuda")
        with pytest.raises(ValueError, match=re.escape(f"backend='gluon' cannot run here: {why}")):
            call("gluon")  # fp32: outside its scope
    assert not gluon_forward.auto_applies(q, q, q, 0.1)
