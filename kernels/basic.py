"""Post 1: the first attention kernel anyone writes.

One Triton program per query row. It walks the keys one at a time, three times:
scores to find the row maximum, scores again for the softmax denominator, and a
third time to add up the weighted values. A program has no room to keep a row of
N scores, so it recomputes them instead; the posts measure what that costs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .runtime import as_batch_heads, check_attention_inputs, new_output, next_pow2


@triton.jit
def _basic_attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N_K, D, scale,
    BLOCK_D: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
):
    row = tl.program_id(0)  # which query
    # int64: b * stride_qb overflows int32 once a tensor holds more than 2**31 elements.
    bh = tl.program_id(1).to(tl.int64)  # which (batch, head)
    b = bh // H
    h = bh % H

    offs_d = tl.arange(0, BLOCK_D)  # BLOCK_D is D rounded up to a power of two
    d_mask = offs_d < D
    # other=0.0: the padded lanes then add nothing to any dot product.
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + row * stride_qn + offs_d * stride_qd,
                mask=d_mask, other=0.0).to(tl.float32)  # (BLOCK_D,)
    k_row0 = k_ptr + b * stride_kb + h * stride_kh
    v_row0 = v_ptr + b * stride_vb + h * stride_vh

    n_keys = N_K
    if IS_CAUSAL:
        # Top-left aligned: query `row` sees keys 0..row.
        n_keys = tl.minimum(row + 1, N_K)

    # Pass 1: the largest score. Subtracting it before exp keeps exp <= 1 (no overflow).
    m = tl.full((), float("-inf"), tl.float32)
    for j in range(0, n_keys):
        k = tl.load(k_row0 + j * stride_kn + offs_d * stride_kd, mask=d_mask, other=0.0)
        m = tl.maximum(m, tl.sum(q * k.to(tl.float32)) * scale)

    # Pass 2: the softmax denominator.
    l = tl.full((), 0.0, tl.float32)
    for j in range(0, n_keys):
        k = tl.load(k_row0 + j * stride_kn + offs_d * stride_kd, mask=d_mask, other=0.0)
        l += tl.exp(tl.sum(q * k.to(tl.float32)) * scale - m)

    # Pass 3: the weighted sum of values.
    acc = tl.zeros((BLOCK_D,), tl.float32)
    for j in range(0, n_keys):
        k = tl.load(k_row0 + j * stride_kn + offs_d * stride_kd, mask=d_mask, other=0.0)
        p = tl.exp(tl.sum(q * k.to(tl.float32)) * scale - m) / l
        v = tl.load(v_row0 + j * stride_vn + offs_d * stride_vd, mask=d_mask, other=0.0)
        acc += p * v.to(tl.float32)

    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + row * stride_on + offs_d * stride_od
    tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=d_mask)


def basic_attention(q, k, v, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Attention with one program per query row, walking the keys one by one.

    q: (..., Nq, D); k, v: (..., Nk, D), same leading dims. Returns (..., Nq, D) in
    q's dtype. ``scale`` defaults to 1/sqrt(D); ``causal`` is top-left aligned.
    Forward only (no autograd).
    """
    scale = check_attention_inputs("basic_attention", q, k, v, causal, scale)
    out = new_output(q.shape, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    q4, k4, v4 = as_batch_heads(q), as_batch_heads(k), as_batch_heads(v)
    o4 = out.view(q4.shape)
    B, H, NQ, D = q4.shape
    _basic_attention_kernel[(NQ, B * H)](
        q4, k4, v4, o4,
        *q4.stride(), *k4.stride(), *v4.stride(), *o4.stride(),
        H, k4.shape[2], D, scale,
        BLOCK_D=next_pow2(D),
        IS_CAUSAL=causal,
    )
    return out
