"""dQ added from inside the Gluon dK/dV kernel (hopper_bwd.hopper_dkdv_dq, DQ_ATOMIC): on an sm90
GPU against float64 autograd, on any machine the checks of flash._flash_backward's "atomic" choice."""

from __future__ import annotations

import pytest
import torch

from kernels import flash, hopper, hopper_bwd

from conftest import DEVICE, HOPPER_ONLY, ON_HOPPER, max_err, rand
from test_hopper_bwd import inputs, reference_grads
from test_hopper_dq import SHAPES, check_dq, reference_dq

gpu_only = HOPPER_ONLY


@gpu_only
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("head_dim", hopper.HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_atomic_dq_matches_float64(shape, head_dim, dtype, causal):
    q, k, v, do, lse, delta, scale = inputs(*shape, head_dim, dtype, causal)
    dq, dk, dv = hopper_bwd.hopper_dkdv_dq(q, k, v, do, lse, delta, causal, scale)
    check_dq(dq, q, k, v, do, causal, scale)
    # dK and dV of the same launch: the dQ step must not disturb them (bit-identical to the kernel without it).
    want_dk, want_dv = hopper_bwd.hopper_dkdv(q, k, v, do, lse, delta, causal, scale)
    assert torch.equal(dk, want_dk) and torch.equal(dv, want_dv)


@gpu_only
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_with_atomic_dq_is_within_twice_the_pointer_error(causal):
    # Through flash._flash_backward with a strided dO, against the pointer dQ kernel's own error.
    q, k, v, do, _, _, scale = inputs(1, 4, 2, 333, 300, 128, torch.bfloat16, causal)
    o, lse, _ = flash._flash_forward(q, k, v, causal, scale, "ieee")
    do_strided = do.transpose(1, 2).contiguous().transpose(1, 2)
    dq, dk, dv = flash._flash_backward(do_strided, q, k, v, o, lse, causal, scale, "ieee", dq_backend="atomic")
    pointer_dq, _, _ = flash._flash_backward(do, q, k, v, o, lse, causal, scale, "ieee", dq_backend="pointer")
    ref, _ = reference_dq(q, k, v, do, causal, scale)
    assert not dq.isnan().any()
    assert max_err(dq, ref) <= 2 * max_err(pointer_dq, ref) + torch.finfo(q.dtype).eps * ref.abs().max().item()
    (ref_dk, ref_dv), _ = reference_grads(q, k, v, do, causal, scale)
    assert max_err(dk, ref_dk) < 0.05 * ref_dk.abs().max().item() and max_err(dv, ref_dv) < 0.05 * ref_dv.abs().max().item()


def test_atomic_dq_backend_is_checked():
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float32, device=DEVICE)
    lse = q[..., 0].contiguous()
    with pytest.raises(ValueError, match="dq_backend"):
        flash._flash_backward(q, q, q, q, q, lse, False, 0.1, "ieee", dq_backend="atomics")
    with pytest.raises(ValueError, match="atomic.*pointer dK/dV"):
        flash._flash_backward(q, q, q, q, q, lse, False, 0.1, "ieee", dq_backend="atomic", dkdv_backend="pointer")
    with pytest.raises(ValueError, match="atomic.*tiles"):
        flash._flash_backward(q, q, q, q, q, lse, False, 0.1, "ieee", dq_backend="atomic",
                              tiles={"dq": (32, 32, 4, 1)})


def test_atomic_dq_declines_with_a_reason_off_hopper():
    if ON_HOPPER:
        pytest.skip("on Hopper the kernel runs: test_atomic_dq_matches_float64 covers it")
    q = torch.zeros(1, 2, 8, 64, dtype=torch.float16, device="cpu")
    lse = torch.zeros(1, 2, 8, dtype=torch.float32)
    reason = hopper_bwd.hopper_bwd_problem(q, q, q, q)
    assert reason
    with pytest.raises(ValueError, match="hopper_dkdv: "):
        flash._flash_backward(q, q, q, q, q, lse, False, 0.125, "ieee", dq_backend="atomic")


def test_default_backward_never_runs_the_atomic_dq(monkeypatch):
    # The default dispatch is unchanged: "atomic" only when asked for.
    monkeypatch.setattr(hopper_bwd, "hopper_dkdv_dq", lambda *a, **kw: pytest.fail("atomic dQ ran by default"))
    B, H, N, D = 1, 2, 16, 32
    q, k, v, do = (rand(B, H, N, D) for _ in range(4))
    o, lse, _ = flash._flash_forward(q, k, v, False, D**-0.5, "ieee", backend="pointer")
    dq, _, _ = flash._flash_backward(do, q, k, v, o, lse, False, D**-0.5, "ieee")
    assert not dq.isnan().any()
