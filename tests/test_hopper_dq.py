"""The Gluon dQ kernel (kernels/gluon/dq.py): on an sm90 GPU against float64 autograd, elsewhere
the reasons it declines, its launcher's refusals and the router's choice of dQ kernel
(kernels/attention.py)."""

from __future__ import annotations

import re

import pytest
import torch

import kernels
from kernels import attention, flash
from kernels.gluon import common as gluon_common, dkdv as gluon_dkdv, dq as gluon_dq, forward as gluon_forward
from kernels.reference import reference_attention

from helpers import DEVICE, ON_HOPPER, max_err, rand, tolerance, torch_lowp_attention
from test_hopper_bwd import inputs

# (B, H, H_KV, N_Q, N_K): one row and one key; ragged lengths on both sides (not multiples of the
# 128-row query blocks or of either key tile); Nq < Nk and Nq > Nk (causal: rows that see every
# key, blocks whose warpgroups stop at different tiles); GQA and MQA; exact multiples.
SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 3, 3, 7, 100),
    (1, 2, 2, 63, 257),
    (2, 4, 2, 100, 63),
    (1, 4, 1, 257, 130),
    (2, 2, 2, 128, 128),
    (1, 4, 4, 1000, 1030),
    (1, 2, 2, 1000, 7),
    (2, 4, 2, 257, 1000),
    (1, 2, 2, 129, 700),
    (2, 3, 3, 130, 257),
]


def reference_dq(q, k, v, do, causal, scale):
    """dQ in float64, and PyTorch's own low-precision dQ (the error yardstick)."""
    q64 = q.double().requires_grad_(True)
    reference_attention(q64, k.double(), v.double(), causal=causal, scale=scale).backward(do.double())
    ql = q.detach().clone().requires_grad_(True)
    torch_lowp_attention(ql, k, v, causal, scale).backward(do)
    return q64.grad, ql.grad


def check_dq(dq, q, k, v, do, causal, scale):
    ref, low = reference_dq(q, k, v, do, causal, scale)
    assert dq.shape == ref.shape and dq.dtype == q.dtype
    assert not dq.isnan().any(), "an element was never written (outputs start as NaN)"
    err, tol = max_err(dq, ref), tolerance(q.dtype, ref, max_err(low, ref))
    assert err <= tol, f"dq: max abs error {err:.3e} > {tol:.3e}"
    return err


@pytest.mark.hopper
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("head_dim", gluon_common.HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_dq_matches_float64(shape, head_dim, dtype, causal):
    q, k, v, do, lse, delta, scale = inputs(*shape, head_dim, dtype, causal)
    check_dq(gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale), q, k, v, do, causal, scale)


@pytest.mark.hopper
@pytest.mark.parametrize("head_dim", gluon_common.HEAD_DIMS)
@pytest.mark.parametrize("block_n", [64, 128])
@pytest.mark.parametrize("schedule", gluon_dq.SCHEDULES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_every_key_tile_and_schedule_is_right(head_dim, block_n, schedule, causal):
    # What the defaults do not pick runs too (the check script times it). D = 128 with 128 keys
    # spills registers: slower, still right.
    q, k, v, do, lse, delta, scale = inputs(1, 4, 2, 300, 333, head_dim, torch.float16, causal)
    dq = gluon_dq.hopper_dq(q, k, v, do, lse, delta, causal, scale, block_n=block_n, stages=2, schedule=schedule)
    check_dq(dq, q, k, v, do, causal, scale)


@pytest.mark.hopper
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_ring_depth_does_not_change_the_result(stages):
    # One stage: the producer waits for both consumers on every tile; more: it runs ahead.
    q, k, v, do, lse, delta, scale = inputs(1, 4, 2, 300, 260, 64, torch.float16, True)
    want = gluon_dq.hopper_dq(q, k, v, do, lse, delta, True, scale)
    got = gluon_dq.hopper_dq(q, k, v, do, lse, delta, True, scale, stages=stages)
    assert torch.equal(got, want)  # same products in the same order: bit-identical


@pytest.mark.hopper
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_with_gluon_dq_matches_float64(causal, monkeypatch):
    # Through attention.attention_backward, as flash_attention's backward calls it, with a strided
    # dO (the router hands TMA a contiguous copy) and both Gluon kernels.
    calls = []
    real_dq = gluon_dq.hopper_dq
    monkeypatch.setattr(gluon_dq, "hopper_dq", lambda *a, **kw: calls.append(1) or real_dq(*a, **kw))
    q, k, v, do, _, _, scale = inputs(1, 4, 2, 333, 300, 128, torch.bfloat16, causal)
    o, lse, _ = flash.flash_forward(q, k, v, causal, scale, "ieee")
    do_strided = do.transpose(1, 2).contiguous().transpose(1, 2)
    dq, dk, dv = attention.attention_backward(do_strided, q, k, v, o, lse, causal, scale, "ieee", backend="gluon")
    assert calls == [1], "the backward did not run the Gluon dQ kernel"
    check_dq(dq, q, k, v, do, causal, scale)
    pointer_dq, _, _ = attention.attention_backward(do, q, k, v, o, lse, causal, scale, "ieee", backend="pointer")
    assert calls == [1], "backend='pointer' ran the Gluon dQ kernel"
    ref, _ = reference_dq(q, k, v, do, causal, scale)
    # The brief's bar beside the yardstick above: no worse than twice the pointer kernel's error.
    assert max_err(dq, ref) <= 2 * max_err(pointer_dq, ref) + torch.finfo(q.dtype).eps * ref.abs().max().item()


@pytest.mark.hopper
def test_launcher_checks_its_arguments():
    q, k, v, do, lse, delta, scale = inputs(1, 2, 2, 64, 64, 64, torch.float16, False)
    with pytest.raises(ValueError, match="lse"):
        gluon_dq.hopper_dq(q, k, v, do, lse[..., :-1], delta, False, scale)
    with pytest.raises(ValueError, match="delta"):
        gluon_dq.hopper_dq(q, k, v, do, lse, delta.double(), False, scale)
    with pytest.raises(TypeError, match="lse"):
        gluon_dq.hopper_dq(q, k, v, do, lse.tolist(), delta, False, scale)
    with pytest.raises(ValueError, match="block_n"):
        gluon_dq.hopper_dq(q, k, v, do, lse, delta, False, scale, block_n=32)
    with pytest.raises(ValueError, match="stages"):
        gluon_dq.hopper_dq(q, k, v, do, lse, delta, False, scale, stages=0)
    with pytest.raises(ValueError, match="schedule"):
        gluon_dq.hopper_dq(q, k, v, do, lse, delta, False, scale, schedule="pingpong")
    with pytest.raises(TypeError, match="causal"):
        gluon_dq.hopper_dq(q, k, v, do, lse, delta, 1, scale)
    with pytest.raises(TypeError, match="scale"):
        gluon_dq.hopper_dq(q, k, v, do, lse, delta, False, "0.125")
    with pytest.raises(ValueError, match="contiguous"):
        gluon_dq.hopper_dq(q, k, v, do.transpose(1, 2).contiguous().transpose(1, 2), lse, delta, False, scale)
    with pytest.raises(ValueError, match="do not match"):
        gluon_dq.hopper_dq(q, k[:, :1].repeat(1, 3, 1, 1).contiguous(), v, do, lse, delta, False, scale)
    assert "do has shape" in gluon_dq.hopper_dq_problem(q, k, v, do[:, :1])
    assert "float16" in gluon_dq.hopper_dq_problem(q.float(), k.float(), v.float())


def test_declines_with_a_reason_off_hopper():
    if ON_HOPPER:
        pytest.skip("on Hopper the kernel runs: test_launcher_checks_its_arguments covers its refusals")
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float16, device="cpu")
    lse = torch.zeros(1, 2, 8, dtype=torch.float32)
    reason = gluon_dq.hopper_dq_problem(q, q, q, q)
    assert reason  # interpreter, no Gluon, not CUDA or not sm90: each says so
    assert reason == gluon_forward.hopper_problem(q, q, q)  # the forward's scope, one sentence for all three
    assert not gluon_dq.auto_applies(q, q, q, 0.125)
    with pytest.raises(ValueError, match="hopper_dq: " + re.escape(reason)):
        gluon_dq.hopper_dq(q, q, q, q, lse, lse, False, 0.125)
    with pytest.raises(ValueError, match=re.escape(f"backend='gluon' cannot run the backward here: {reason}")):
        attention.attention_backward(q, q, q, q, q, lse, False, 0.125, "ieee", backend="gluon")


def test_backward_backend_choice_is_checked():
    # On any machine: a backend that does not exist names the ones that do; "gluon" on fp32 says
    # why the backward cannot run it, in the words of the kernels' own scope check.
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float32, device=DEVICE)
    lse = q[..., 0].contiguous()
    why = gluon_dkdv.hopper_bwd_problem(q, q, q)
    assert why and (not ON_HOPPER or "float32" in why)
    with pytest.raises(ValueError, match=re.escape(f"backend must be one of {kernels.BACKENDS}, got 'cuda'")):
        attention.attention_backward(q, q, q, q, q, lse, False, 0.1, "ieee", backend="cuda")
    with pytest.raises(ValueError, match=re.escape(f"backend='gluon' cannot run the backward here: {why}")):
        attention.attention_backward(q, q, q, q, q, lse, False, 0.1, "ieee", backend="gluon")
    with pytest.raises(ValueError, match=re.escape(f"backend must be one of {kernels.BACKENDS}, got 'cuda'")):
        kernels.plan(q, q, q, backward=True, backend="cuda")


@pytest.mark.parametrize("applies", [False, True], ids=["pointer", "gluon"])
def test_default_backward_runs_the_gluon_dq_where_its_rule_applies(applies, monkeypatch):
    # backend="auto" runs the Gluon dQ kernel exactly where gluon_dq.auto_applies says, whatever
    # dK/dV runs, and plan says the same. Stand-ins for the rule and the kernel: this checks the
    # router, on any machine.
    calls = []
    monkeypatch.setattr(gluon_dkdv, "auto_applies", lambda *a: False)
    monkeypatch.setattr(gluon_dq, "auto_applies", lambda *a: applies)
    monkeypatch.setattr(gluon_dq, "hopper_dq", lambda q4, *a, **kw: calls.append(1) or torch.zeros_like(q4))
    B, H, N, D = 1, 2, 16, 32
    q, k, v, do = (rand(B, H, N, D) for _ in range(4))
    plan = kernels.plan(q, k, v, backward=True)
    assert (plan.dkdv, plan.dq) == ("pointer", "gluon" if applies else "pointer"), plan.why
    o, lse, kernel = attention.attention_forward(q, k, v, False, D**-0.5, "ieee", backend="pointer")
    assert kernel == "pointer"
    dq, dk, dv = attention.attention_backward(do, q, k, v, o, lse, False, D**-0.5, "ieee")
    assert calls == ([1] if applies else [])
    assert not dk.isnan().any() and not dv.isnan().any()
    assert (dq == 0).all() == applies  # the stand-in's zeros, or the pointer kernel's gradient
