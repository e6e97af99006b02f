"""Tensors of more than 2**31 elements: the batch and head offsets must not wrap around.

Each kernel computes b * stride_b + h * stride_h; in int32 that product passes 2**31 in the
last batches of such a tensor and the kernel reads or writes someone else's memory. These
tests fill the whole input, run forward (and backward for flash), and check the first,
middle and last (batch, head) slices against a float64 reference, with PyTorch's own
fp16 error as the yardstick. GPU only (about 40 GB of fp16 tensors for flash).
"""

from __future__ import annotations

import pytest
import torch

import kernels
from helpers import INTERPRET, max_err, tolerance, torch_lowp_attention

pytestmark = pytest.mark.skipif(INTERPRET, reason="needs a GPU with about 48 GB free")


def _need(gigabytes: float):
    free, _ = torch.cuda.mem_get_info()
    if free < gigabytes * 2**30:
        pytest.skip(f"needs {gigabytes} GiB of free GPU memory, {free / 2**30:.0f} GiB free")


def _slices(b, h):
    return [(0, 0), (b // 2, h // 2), (b - 1, h - 1)]


def _rand(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.float16)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_forward_backward_above_2_31_elements(causal):
    B, H, N, D = 129, 128, 1024, 128  # 2.16e9 elements per tensor; b * stride_b reaches 2**31 at b = 128
    assert B * H * N * D > 2**31
    _need(48)
    q, k, v = (_rand(B, H, N, D).requires_grad_() for _ in range(3))
    do = _rand(B, H, N, D)
    out = kernels.flash_attention(q, k, v, causal=causal)
    out.backward(do)
    torch.cuda.synchronize()
    for b, h in _slices(B, H):
        sl = lambda t: t[b:b + 1, h:h + 1].detach()  # noqa: E731
        q64, k64, v64 = (sl(t).double().requires_grad_() for t in (q, k, v))
        ref = kernels.reference_attention(q64, k64, v64, causal=causal)
        ref.backward(sl(do).double())
        ql, kl, vl = (sl(t).clone().requires_grad_() for t in (q, k, v))
        lowp = torch_lowp_attention(ql, kl, vl, causal, None)
        lowp.backward(sl(do))
        for name, ours, r, theirs in (("out", sl(out), ref, lowp), ("dq", sl(q.grad), q64.grad, ql.grad),
                                      ("dk", sl(k.grad), k64.grad, kl.grad), ("dv", sl(v.grad), v64.grad, vl.grad)):
            err, tol = max_err(ours, r), tolerance(torch.float16, r, max_err(theirs, r))
            assert err <= tol, f"slice (b={b}, h={h}) {name}: max abs error {err:.3e} > {tol:.3e}"


@pytest.mark.parametrize("name", ["basic", "vectorized"])
def test_row_kernels_above_2_31_elements(name):
    B, H, N, D = 5, 13107, 257, 128  # 2.16e9 elements; 65535 (batch, head) slices, the grid's limit
    assert B * H * N * D > 2**31
    _need(20)
    q, k, v = _rand(B, H, N, D), _rand(B, H, N, D), _rand(B, H, N, D)
    out = kernels.KERNELS[name](q, k, v, causal=True)
    torch.cuda.synchronize()
    for b, h in _slices(B, H):
        sl = lambda t: t[b:b + 1, h:h + 1]  # noqa: E731
        ref = kernels.reference_attention(sl(q), sl(k), sl(v), causal=True)
        theirs = torch_lowp_attention(sl(q), sl(k), sl(v), True, None)
        err, tol = max_err(sl(out), ref), tolerance(torch.float16, ref, max_err(theirs, ref))
        assert err <= tol, f"slice (b={b}, h={h}): max abs error {err:.3e} > {tol:.3e}"
