"""Forward correctness of every kernel against the float64 reference."""

from __future__ import annotations

import pytest
import torch

import kernels
from helpers import DEVICE, DTYPES, INTERPRET, max_err, rand, tolerance, torch_lowp_attention

KERNELS = kernels.KERNELS

# Awkward sizes: 1, primes-ish, non-powers of two, one above a power of two.
N_ALL = [1, 7, 63, 100, 257]
D_ALL = [16, 40, 64, 80]
# The interpreter runs ~10 ms per program instance, and basic walks keys one at a
# time (~2 ms per key), so the slow kernels get smaller sizes on the CPU.
N_FOR = {
    "basic": [1, 7, 16] if INTERPRET else N_ALL,
    "vectorized": [1, 7, 63, 100] if INTERPRET else N_ALL,
    "flash": N_ALL,
}
LEAD_FOR = {"basic": (), "vectorized": (), "flash": (2,)} if INTERPRET else {k: (2, 3) for k in KERNELS}


def check_forward(name, lead, nq, nk, d, dtype, causal, scale=None):
    fn = KERNELS[name]
    q, k, v = rand(*lead, nq, d, dtype=dtype), rand(*lead, nk, d, dtype=dtype), rand(*lead, nk, d, dtype=dtype)
    out = fn(q, k, v, causal=causal, scale=scale)
    ref = kernels.reference_attention(q, k, v, causal=causal, scale=scale)
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    assert not out.isnan().any(), "unwritten (NaN) output elements"
    torch_err = None
    if dtype != torch.float32 and not INTERPRET:
        torch_err = max_err(torch_lowp_attention(q, k, v, causal, scale), ref)
    err = max_err(out, ref)
    tol = tolerance(dtype, ref, torch_err)
    assert err <= tol, f"max abs error {err:.3e} > {tol:.3e} (PyTorch's own: {torch_err})"


def cases(dtypes):
    for name in KERNELS:
        for dtype in dtypes:
            for n in N_FOR[name]:
                for d in D_ALL:
                    # Under the interpreter fp16 gets a sample of the grid.
                    if INTERPRET and dtype == torch.float16 and (n, d) not in {(7, 40), (N_FOR[name][-1], 64)}:
                        continue
                    yield pytest.param(name, dtype, n, d, id=f"{name}-{str(dtype)[6:]}-N{n}-D{d}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("name,dtype,n,d", list(cases(DTYPES)))
def test_square(name, dtype, n, d, causal):
    check_forward(name, LEAD_FOR[name], n, n, d, dtype, causal)


NQ_NK = [(7, 63), (100, 257), (257, 100), (1, 100), (63, 1)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("nq,nk", NQ_NK, ids=[f"Nq{a}-Nk{b}" for a, b in NQ_NK])
@pytest.mark.parametrize("name", list(KERNELS))
def test_nq_ne_nk(name, nq, nk, causal):
    if INTERPRET and name == "basic" and max(nq, nk) > 16:
        nq, nk = min(nq, 5), min(nk, 12) if nk > nq else min(nk, 3)
    if INTERPRET and name == "vectorized" and nq > 63:
        nq = 9  # same key lengths, fewer (one-program-each) queries
    check_forward(name, LEAD_FOR[name], nq, nk, 40, torch.float32, causal)


@pytest.mark.parametrize("lead", [(), (3,), (2, 3), (2, 1, 3)], ids=lambda s: "lead" + "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(KERNELS))
def test_leading_dims(name, lead):
    n = 7 if name == "basic" and INTERPRET else 33
    check_forward(name, lead, n, n, 24, torch.float32, causal=False)


@pytest.mark.parametrize("scale", [0.37, -0.5, 0.0])  # flash fuses the scale only when > 0
@pytest.mark.parametrize("name", list(KERNELS))
def test_custom_scale(name, scale):
    check_forward(name, LEAD_FOR[name], 9, 12, 32, torch.float32, causal=True, scale=scale)


@pytest.mark.parametrize("layout", ["bnhd", "d_stride2"])
@pytest.mark.parametrize("name", list(KERNELS))
def test_strided_inputs(name, layout):
    B, H, N, D = 2, 3, 7 if (INTERPRET and name == "basic") else 50, 40
    if layout == "bnhd":
        # (B, N, H, D) memory viewed as (B, H, N, D): what a fused QKV projection gives.
        mk = lambda: rand(B, N, H, D).transpose(1, 2)  # noqa: E731
    else:
        mk = lambda: rand(B, H, N, 2 * D)[..., ::2]  # noqa: E731  (stride 2 along D)
    q, k, v = mk(), mk(), mk()
    assert not q.is_contiguous()
    out = KERNELS[name](q, k, v, causal=True)
    ref = kernels.reference_attention(q, k, v, causal=True)
    assert max_err(out, ref) <= tolerance(torch.float32, ref, None)


@pytest.mark.parametrize("name", list(KERNELS))
def test_nan_propagates_only_to_rows_it_touches(name):
    n, d = (6 if INTERPRET and name == "basic" else 40), 32
    q, k, v = rand(n, d), rand(n, d), rand(n, d)
    q[2, 5] = float("nan")  # query row 2 only
    k[4, 0] = float("nan")  # key 4: under causal, rows >= 4 see it
    out = KERNELS[name](q, k, v, causal=True)
    bad = out.isnan().any(dim=-1)
    expected = torch.zeros(n, dtype=torch.bool, device=out.device)
    expected[2] = True
    expected[4:] = True
    assert torch.equal(bad, expected), bad
    ref = kernels.reference_attention(q, k, v, causal=True)
    ok = ~expected
    assert max_err(out[ok], ref[ok]) <= tolerance(torch.float32, ref[ok], None)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t)[6:])
@pytest.mark.parametrize("name", list(KERNELS))
def test_huge_logits_do_not_overflow(name, dtype):
    n, d = (6 if INTERPRET and name == "basic" else 40), 32
    q, k, v = rand(n, d, dtype=dtype), rand(n, d, dtype=dtype), rand(n, d, dtype=dtype)
    # Logits around +-1e4: exp would overflow anything without the max subtraction.
    scale = 1e4 / (q.float().norm(dim=-1).mean() * k.float().norm(dim=-1).mean()).item()
    out = KERNELS[name](q, k, v, scale=scale)
    assert torch.isfinite(out).all()
    ref = kernels.reference_attention(q, k, v, scale=scale)
    # Near-one-hot softmax: the output should be (close to) one value row; fp16/bf16
    # logits of 1e4 carry absolute rounding of several units, so only finiteness and
    # fp32 agreement are asserted.
    if dtype == torch.float32:
        assert max_err(out, ref) <= 1e-3 * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("name", list(KERNELS))
def test_empty_queries_return_empty(name):
    q, k, v = rand(2, 0, 16), rand(2, 5, 16), rand(2, 5, 16)
    out = KERNELS[name](q, k, v)
    assert out.shape == (2, 0, 16)


def test_vectorized_size_limit():
    limit = kernels.MAX_TILE_ELEMENTS
    d = 256
    nk = limit // d
    q, k, v = rand(1, 40), rand(nk, 40), rand(nk, 40)  # D=40 pads to 64: fits
    kernels.vectorized_attention(q, k, v)
    q, k, v = rand(1, d), rand(nk, d), rand(nk, d)  # exactly at the limit: accepted
    out = kernels.vectorized_attention(q, k, v)
    assert max_err(out, kernels.reference_attention(q, k, v)) <= 1e-4
    k, v = rand(nk + 1, d), rand(nk + 1, d)  # one more key doubles the padded tile
    with pytest.raises(ValueError, match=r"flash_attention"):
        kernels.vectorized_attention(q, k, v)


@pytest.mark.skipif(DEVICE != "cuda", reason="TF32 exists only on the GPU")
def test_flash_tf32_option():
    q, k, v = rand(2, 200, 64), rand(2, 200, 64), rand(2, 200, 64)
    ref = kernels.reference_attention(q, k, v)
    exact = kernels.flash_attention(q, k, v, precision="ieee")
    fast = kernels.flash_attention(q, k, v, precision="tf32")
    assert max_err(exact, ref) <= 2e-5
    assert max_err(fast, ref) <= 5e-3  # TF32 keeps 10 mantissa bits
