"""The Gluon Hopper forward (kernels/hopper.py): on an sm90 GPU against float64, elsewhere the
reasons it declines and the error its launcher raises."""

from __future__ import annotations

import math

import pytest
import torch

from kernels import hopper
from kernels.reference import reference_attention

from conftest import HOPPER_ONLY, ON_HOPPER, max_err, rand, tolerance, torch_lowp_attention

gpu_only = HOPPER_ONLY

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


def lse_reference(q, k, causal, scale):
    """log2-sum-exp2 of each row's scaled scores, in float64 (the kernel's lse convention)."""
    if q.shape[1] != k.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if causal:
        keep = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~keep, float("-inf"))
    return torch.logsumexp(s, dim=-1) / math.log(2)


@gpu_only
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("head_dim", hopper.HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("schedule", hopper.SCHEDULES)
def test_forward_matches_float64(shape, head_dim, dtype, causal, schedule):
    B, H, H_KV, NQ, NK = shape
    q, k, v = rand(B, H, NQ, head_dim, dtype=dtype), rand(B, H_KV, NK, head_dim, dtype=dtype), \
        rand(B, H_KV, NK, head_dim, dtype=dtype)
    scale = head_dim**-0.5
    o, lse, _ = hopper.hopper_forward(q, k, v, causal, scale, schedule=schedule)
    ref = reference_attention(q.double(), k.double(), v.double(), causal=causal, scale=scale)
    torch_err = max_err(torch_lowp_attention(q, k, v, causal, scale), ref)
    assert not o.isnan().any(), "an output element was never written"
    assert max_err(o, ref) <= tolerance(dtype, ref, torch_err)
    # lse feeds the backward: fp32 statistics, so it agrees with float64 to fp32 round-off
    # of a sum over up to N_K terms of 16-bit scores.
    assert (lse.double() - lse_reference(q, k, causal, scale)).abs().max().item() <= 1e-3


@gpu_only
def test_fresh_inputs_each_call_give_fresh_outputs():
    # The same launch twice on different data: a cached or stale result would match the first.
    q, k, v = (rand(2, 2, 300, 128, dtype=torch.float16) for _ in range(3))
    o1 = hopper.hopper_attention(q, k, v)
    q2 = rand(2, 2, 300, 128, dtype=torch.float16)
    o2 = hopper.hopper_attention(q2, k, v)
    ref2 = reference_attention(q2, k, v)
    assert max_err(o2, ref2) < max_err(o1, ref2)


@gpu_only
@pytest.mark.parametrize("schedule", hopper.SCHEDULES)
def test_direct_launches_compute_each_call(schedule):
    # After the first call, launches go through the compiled kernel's own entry (flash._DIRECT):
    # every later call, on fresh data and a NaN-filled output, must still match float64.
    from kernels import flash

    assert flash._DIRECT.enabled, "the direct launch is off (KERNELS_DIRECT_LAUNCH=0?)"
    for causal in (False, True):
        for _ in range(3):
            q, k, v = (rand(1, 2, 300, 64, dtype=torch.float16) for _ in range(3))
            o, _, _ = hopper.hopper_forward(q, k, v, causal, 0.125, schedule=schedule)
            ref = reference_attention(q.double(), k.double(), v.double(), causal=causal, scale=0.125)
            torch_err = max_err(torch_lowp_attention(q, k, v, causal, 0.125), ref)
            assert not o.isnan().any(), "an output element was never written"
            assert max_err(o, ref) <= tolerance(torch.float16, ref, torch_err)
    assert any(key[0] == "gluon-fwd" for key in flash._DIRECT._compiled), "no launch took the direct path"


def test_descriptor_specialisation_keys_differ():
    # Two descriptors that Triton would compile differently (block shape, dtype) or that describe
    # other memory (shape, strides) must never share a direct-launch entry.
    from types import SimpleNamespace

    from kernels import flash

    def desc(dtype=torch.float16, block=(64, 128), shape=(4096, 128), strides=(128, 1)):
        return SimpleNamespace(base=torch.empty(0, dtype=dtype), block_shape=list(block), layout="L",
                               shape=list(shape), strides=list(strides))
    keys = {flash._specialization((), (), (d,)) for d in
            (desc(), desc(torch.bfloat16), desc(block=(128, 128)), desc(shape=(8192, 128)), desc(strides=(256, 1)))}
    assert len(keys) == 5


def test_declines_with_a_reason_off_hopper():
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float16, device="cpu")
    if ON_HOPPER:
        q = q.cuda()
        assert hopper.hopper_problem(q.float(), q.float(), q.float()) is not None  # fp32
        assert hopper.hopper_problem(q[..., :40].contiguous(), q[..., :40].contiguous(),
                                     q[..., :40].contiguous()) is not None  # D = 40
        assert "contiguous" in hopper.hopper_problem(q.transpose(1, 2), q, q)
    else:
        reason = hopper.hopper_problem(q, q, q)
        assert reason  # interpreter, no Gluon, not CUDA or not sm90: each says so
        with pytest.raises(ValueError, match="hopper_attention"):
            hopper.hopper_attention(q, q, q)


@gpu_only
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
# Grids of at least one program per SM: smaller ones take the split-K path first.
@pytest.mark.parametrize("shape", [(1, 8, 4, 4096, 4100), (1, 4, 4, 4111, 4096)], ids=lambda s: "x".join(map(str, s)))
def test_flash_attention_dispatches_and_backward_runs_on_its_lse(shape, causal, monkeypatch):
    # Long enough for flash_attention to pick the Gluon forward and the Gluon dK/dV kernel; the
    # backward rebuilds P from the forward's lse, so wrong statistics show up in the gradients.
    from kernels import flash, hopper_bwd

    calls = []
    real_dkdv = hopper_bwd.hopper_dkdv
    monkeypatch.setattr(hopper_bwd, "hopper_dkdv", lambda *a, **kw: calls.append(1) or real_dkdv(*a, **kw))

    B, H, H_KV, NQ, NK = shape
    q = rand(B, H, NQ, 128, dtype=torch.float16, requires_grad=True)
    k = rand(B, H_KV, NK, 128, dtype=torch.float16, requires_grad=True)
    v = rand(B, H_KV, NK, 128, dtype=torch.float16, requires_grad=True)
    assert hopper.auto_applies(q, k, v, 128**-0.5)
    _, _, (_, config) = flash._flash_forward(q.detach(), k.detach(), v.detach(), causal, 128**-0.5, "ieee")
    assert config == {"kernel": "gluon-hopper"}
    out = flash.flash_attention(q, k, v, causal=causal)
    do = torch.randn_like(out)
    out.backward(do)
    qd, kd, vd = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference_attention(qd, kd, vd, causal=causal)
    ref.backward(do.double())
    ql, kl, vl = (t.detach().requires_grad_() for t in (q, k, v))
    low = torch_lowp_attention(ql, kl, vl, causal, 128**-0.5)
    low.backward(do)
    for got, want, yard in ((out, ref, low), (q.grad, qd.grad, ql.grad), (k.grad, kd.grad, kl.grad),
                            (v.grad, vd.grad, vl.grad)):
        assert max_err(got, want) <= tolerance(torch.float16, want, max_err(yard, want))
    assert calls == [1], "the backward did not run the Gluon dK/dV kernel"


def test_backend_choice_is_checked():
    from kernels import flash

    q = torch.zeros(1, 2, 8, 64, dtype=torch.float32, device="cpu" if hopper.INTERPRET else "cuda")
    with pytest.raises(ValueError, match="backend"):
        flash._flash_forward(q, q, q, False, 0.1, "ieee", backend="cuda")
    with pytest.raises(ValueError, match="Gluon Hopper kernel cannot run here"):
        flash._flash_forward(q, q, q, False, 0.1, "ieee", backend="gluon")  # fp32: outside its scope
    assert not hopper.auto_applies(q, q, q, 0.1)
    with pytest.raises(ValueError, match="dkdv_backend"):
        flash._flash_backward(q, q, q, q, q, q[..., 0], False, 0.1, "ieee", dkdv_backend="cuda")
