"""The Gluon dK/dV kernel (kernels/gluon/dkdv.py): on an sm90 GPU against float64 autograd,
elsewhere the reasons it declines and the errors its launcher raises."""

from __future__ import annotations

import re

import pytest
import torch

from kernels import flash
from kernels.gluon import common as gluon_common, dkdv as gluon_dkdv, dq as gluon_dq, forward as gluon_forward
from kernels.reference import reference_attention

from helpers import ON_HOPPER, max_err, rand, tolerance, torch_lowp_attention

# (B, H, H_KV, N_Q, N_K): one row, one key, ragged lengths on both sides (not multiples of the
# 64-row query tiles or the 128-key blocks), Nq < Nk and Nq > Nk (causal: key blocks no query
# sees), GQA and MQA (several query heads per program), exact multiples.
SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 3, 3, 7, 100),
    (1, 2, 2, 63, 257),
    (2, 4, 2, 100, 63),
    (1, 4, 1, 257, 130),
    (2, 2, 2, 128, 128),
    (1, 4, 4, 1000, 1030),
    (1, 2, 2, 129, 700),
    (2, 3, 3, 130, 257),  # Nq = 2 (mod 4): the lse/delta rows of every head but the first need the padding
]


def inputs(B, H, H_KV, NQ, NK, head_dim, dtype, causal):
    """q, k, v, dO, and the forward's lse and delta = rowsum(dO * O) as the backward gets them."""
    q = rand(B, H, NQ, head_dim, dtype=dtype)
    k, v = rand(B, H_KV, NK, head_dim, dtype=dtype), rand(B, H_KV, NK, head_dim, dtype=dtype)
    do = rand(B, H, NQ, head_dim, dtype=dtype)
    scale = head_dim**-0.5
    o, lse, _ = flash.flash_forward(q, k, v, causal, scale, "ieee")
    delta = (o.float() * do.float()).sum(-1).contiguous()
    return q, k, v, do, lse, delta, scale


def reference_grads(q, k, v, do, causal, scale):
    """dK, dV in float64, and PyTorch's own low-precision dK, dV (the error yardstick)."""
    q64, k64, v64 = (t.double().requires_grad_(True) for t in (q, k, v))
    reference_attention(q64, k64, v64, causal=causal, scale=scale).backward(do.double())
    ql, kl, vl = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    torch_lowp_attention(ql, kl, vl, causal, scale).backward(do)
    return (k64.grad, v64.grad), (kl.grad, vl.grad)


@pytest.mark.hopper
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("head_dim", gluon_common.HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("schedule", gluon_dkdv.SCHEDULES)
def test_dkdv_matches_float64(shape, head_dim, dtype, causal, schedule):
    q, k, v, do, lse, delta, scale = inputs(*shape, head_dim, dtype, causal)
    dk, dv = gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, causal, scale, schedule=schedule)
    (ref_dk, ref_dv), (low_dk, low_dv) = reference_grads(q, k, v, do, causal, scale)
    for name, got, ref, low in (("dk", dk, ref_dk, low_dk), ("dv", dv, ref_dv, low_dv)):
        assert got.shape == ref.shape and got.dtype == dtype
        assert not got.isnan().any(), f"{name}: an element was never written (outputs start as NaN)"
        err, tol = max_err(got, ref), tolerance(dtype, ref, max_err(low, ref))
        assert err <= tol, f"{name}: max abs error {err:.3e} > {tol:.3e}"


@pytest.mark.hopper
@pytest.mark.parametrize("stages", [1, 3, 4])
def test_ring_depth_does_not_change_the_result(stages):
    # One stage: the producer waits for both consumers on every tile; more: it runs ahead.
    q, k, v, do, lse, delta, scale = inputs(1, 4, 2, 300, 260, 64, torch.float16, True)
    want = gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, True, scale)
    got = gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, True, scale, stages=stages)
    for a, b in zip(got, want):
        assert torch.equal(a, b)  # same products in the same order: bit-identical


@pytest.mark.hopper
def test_fresh_inputs_each_call_give_fresh_outputs():
    # The same launch twice on different data: a cached or stale result would match the first.
    first = inputs(2, 2, 2, 300, 300, 128, torch.float16, False)
    dk1, _ = gluon_dkdv.hopper_dkdv(*first[:6], False, first[6])
    second = inputs(2, 2, 2, 300, 300, 128, torch.float16, False)
    dk2, _ = gluon_dkdv.hopper_dkdv(*second[:6], False, second[6])
    q, k, v, do = second[:4]
    (ref_dk, _), _ = reference_grads(q, k, v, do, False, second[6])
    assert max_err(dk2, ref_dk) < max_err(dk1, ref_dk)


@pytest.mark.hopper
def test_launcher_checks_its_arguments():
    q, k, v, do, lse, delta, scale = inputs(1, 2, 2, 64, 64, 64, torch.float16, False)
    with pytest.raises(ValueError, match="lse"):
        gluon_dkdv.hopper_dkdv(q, k, v, do, lse[..., :-1], delta, False, scale)
    with pytest.raises(ValueError, match="delta"):
        gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta.double(), False, scale)
    with pytest.raises(ValueError, match="schedule"):
        gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, False, scale, schedule="pingpong")
    with pytest.raises(ValueError, match="stages"):
        gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, False, scale, stages=0)
    with pytest.raises(TypeError, match="causal"):
        gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, 1, scale)
    with pytest.raises(TypeError, match="lse"):
        gluon_dkdv.hopper_dkdv(q, k, v, do, lse.tolist(), delta, False, scale)
    with pytest.raises(TypeError, match="scale"):
        gluon_dkdv.hopper_dkdv(q, k, v, do, lse, delta, False, "0.125")
    with pytest.raises(ValueError, match="contiguous"):
        gluon_dkdv.hopper_dkdv(q, k, v, do.transpose(1, 2).contiguous().transpose(1, 2), lse, delta, False, scale)
    assert "do has shape" in gluon_dkdv.hopper_bwd_problem(q, k, v, do[:, :1])
    assert "float16" in gluon_dkdv.hopper_bwd_problem(q.float(), k.float(), v.float())
    assert "head dim" in gluon_dkdv.hopper_bwd_problem(q[..., :40].contiguous(), k[..., :40].contiguous(),
                                                       v[..., :40].contiguous())


def test_declines_with_a_reason_off_hopper():
    if ON_HOPPER:
        pytest.skip("on Hopper the kernel runs: test_launcher_checks_its_arguments covers its refusals")
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float16, device="cpu")
    lse = torch.zeros(1, 2, 8, dtype=torch.float32)
    reason = gluon_dkdv.hopper_bwd_problem(q, q, q, q)
    assert reason  # interpreter, no Gluon, not CUDA or not sm90: each says so
    assert reason == gluon_forward.hopper_problem(q, q, q)  # the forward's scope, one sentence for both
    with pytest.raises(ValueError, match="hopper_dkdv: " + re.escape(reason)):
        gluon_dkdv.hopper_dkdv(q, q, q, q, lse, lse, False, 0.125)


@pytest.mark.parametrize("launcher", [gluon_dkdv.hopper_dkdv, gluon_dq.hopper_dq], ids=lambda f: f.__name__)
def test_launchers_name_a_bad_statistic_or_scale_anywhere(launcher, monkeypatch):
    """The argument checks after the scope check, reached on any machine by declaring the
    scope fine: a list for lse or a string for scale is a TypeError naming it, not a crash
    inside the launcher."""
    # Both launchers run dkdv.check_backward_args, which asks dkdv.hopper_bwd_problem.
    monkeypatch.setattr(gluon_dkdv, "hopper_bwd_problem", lambda *a, **kw: None)
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float16)
    stat = torch.zeros(1, 2, 8, dtype=torch.float32)
    with pytest.raises(TypeError, match=f"{launcher.__name__}: lse must be a torch.Tensor"):
        launcher(q, q, q, q, stat.tolist(), stat, False, 0.125)
    with pytest.raises(TypeError, match="scale"):
        launcher(q, q, q, q, stat, stat, False, "0.125")
    with pytest.raises(ValueError, match="delta must be a contiguous float32"):
        launcher(q, q, q, q, stat, stat.double(), False, 0.125)
