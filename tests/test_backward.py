"""flash_attention's backward pass (dQ, dK, dV) against float64 autograd."""

from __future__ import annotations

import pytest
import torch

import kernels
from helpers import DTYPES, INTERPRET, max_err, rand, tolerance, torch_lowp_attention

N_ALL = [1, 7, 63, 100, 257]
D_ALL = [16, 40, 64, 80]
LEAD = (2,) if INTERPRET else (2, 3)


def grads(fn, q, k, v, do, **kw):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v, **kw)
    out.backward(do)
    return out, q.grad, k.grad, v.grad


def check_backward(q, k, v, causal, dtype):
    do = torch.randn_like(q, dtype=torch.float32).to(dtype)
    _, *ours = grads(kernels.flash_attention, q, k, v, do, causal=causal)
    _, *ref = grads(kernels.reference_attention, q.double(), k.double(), v.double(), do.double(), causal=causal)
    theirs = [None] * 3
    if dtype != torch.float32 and not INTERPRET:
        _, *theirs = grads(lambda a, b, c, causal: torch_lowp_attention(a, b, c, causal, None), q, k, v, do, causal=causal)
    for name, g, r, t in zip("qkv", ours, ref, theirs):
        assert g is not None and g.shape == r.shape and g.dtype == dtype
        assert not g.isnan().any(), f"d{name}: unwritten (NaN) elements"
        torch_err = None if t is None else max_err(t, r)
        if dtype == torch.float32:
            tol = 5e-5 * max(1.0, r.abs().max().item())  # gradients sum twice as many fp32 terms
        elif INTERPRET:
            tol = 2.0**-7 * max(1.0, r.abs().max().item())  # P and dS rounded to fp16 before each dot
        else:
            tol = tolerance(dtype, r, torch_err)
        err = max_err(g, r)
        assert err <= tol, f"d{name}: max abs error {err:.3e} > {tol:.3e} (PyTorch's own: {torch_err})"


def square_cases():
    for dtype in DTYPES:
        for n in N_ALL:
            for d in D_ALL:
                if INTERPRET and (n == 257 and d != 64 or dtype == torch.float16 and (n, d) not in {(63, 40), (100, 64)}):
                    continue
                yield pytest.param(dtype, n, d, id=f"{str(dtype)[6:]}-N{n}-D{d}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype,n,d", list(square_cases()))
def test_backward_square(dtype, n, d, causal):
    check_backward(rand(*LEAD, n, d, dtype=dtype), rand(*LEAD, n, d, dtype=dtype), rand(*LEAD, n, d, dtype=dtype), causal, dtype)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("nq,nk", [(7, 63), (100, 257), (257, 100), (1, 100), (63, 1)])
def test_backward_nq_ne_nk(nq, nk, causal):
    check_backward(rand(*LEAD, nq, 40), rand(*LEAD, nk, 40), rand(*LEAD, nk, 40), causal, torch.float32)


@pytest.mark.parametrize("layout", ["bnhd", "d_stride2"])
def test_backward_strided(layout):
    B, H, N, D = 2, 3, 70, 40
    if layout == "bnhd":
        mk = lambda: rand(B, N, H, D).transpose(1, 2)  # noqa: E731
    else:
        mk = lambda: rand(B, H, N, 2 * D)[..., ::2]  # noqa: E731
    check_backward(mk(), mk(), mk(), True, torch.float32)


def test_backward_through_sum():
    # out.sum().backward() hands the kernel an expanded dO with stride 0.
    q, k, v = (rand(2, 45, 32, requires_grad=True) for _ in range(3))
    kernels.flash_attention(q, k, v, causal=True).sum().backward()
    q2, k2, v2 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    kernels.reference_attention(q2, k2, v2, causal=True).sum().backward()
    for a, b in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        assert max_err(a, b) <= 5e-5 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("hq,hkv", [(4, 2), (4, 1), (6, 3)], ids=["gqa4-2", "mqa4-1", "gqa6-3"])
def test_grouped_query_attention(hq, hkv, causal):
    n = 37
    q, k, v = rand(2, hq, n, 40), rand(2, hkv, n + 5, 40), rand(2, hkv, n + 5, 40)
    out = kernels.flash_attention(q, k, v, causal=causal)
    ref = kernels.reference_attention(q, k, v, causal=causal)
    assert max_err(out, ref) <= tolerance(torch.float32, ref, None)
    check_backward(q, k, v, causal, torch.float32)
