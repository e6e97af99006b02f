"""Post 2: one program per query row that loads every key and value at once.

Broadcast offsets build a 2-D block of addresses (``n[:, None] * stride + d[None, :]``),
so one ``tl.load`` brings in the whole (Nk, D) key matrix, one reduction gives all
scores, and one more gives the output row. The whole (BLOCK_N, BLOCK_D) tile lives in
one program's registers, which is exactly why this design stops scaling: see
``MAX_TILE_ELEMENTS``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .runtime import as_batch_heads, check_attention_inputs, new_output, next_pow2

# The largest padded key tile (BLOCK_N * BLOCK_D elements) we accept: 1024 x 256.
# Each element needs a register in one program; past 2**16 elements the compiler
# spills to local memory, and at 4096 x 128 (2**19) compilation did not finish in
# several minutes on an H100 (shared/anchors.md). 2**18 still compiles and runs.
MAX_TILE_ELEMENTS = 1024 * 256


def _num_warps(tile_elements: int) -> int:
    # More warps spread the tile over more threads, so fewer registers per thread.
    return 4 if tile_elements <= 4096 else 8 if tile_elements <= 32768 else 16


@triton.jit
def _vectorized_attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N_K, D, scale,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    IS_CAUSAL: tl.constexpr,
):
    row = tl.program_id(0)
    # int64: b * stride_qb overflows int32 once a tensor holds more than 2**31 elements.
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H

    offs_n = tl.arange(0, BLOCK_N)  # key index, padded to a power of two
    offs_d = tl.arange(0, BLOCK_D)  # feature index, padded to a power of two
    n_mask = offs_n < N_K
    d_mask = offs_d < D
    tile_mask = n_mask[:, None] & d_mask[None, :]  # (BLOCK_N, BLOCK_D)

    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + row * stride_qn + offs_d * stride_qd,
                mask=d_mask, other=0.0).to(tl.float32)  # (BLOCK_D,)

    # Column of key offsets plus row of feature offsets: a (BLOCK_N, BLOCK_D) grid of addresses.
    k_ptrs = k_ptr + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    k = tl.load(k_ptrs, mask=tile_mask, other=0.0).to(tl.float32)  # (BLOCK_N, BLOCK_D)
    scores = tl.sum(q[None, :] * k, axis=1) * scale  # (BLOCK_N,)

    keep = n_mask
    if IS_CAUSAL:
        keep = keep & (offs_n <= row)
    # -inf, not a large negative number: exp(-inf - m) is exactly 0, so padded and
    # future keys get no weight whatever the real scores are.
    scores = tl.where(keep, scores, float("-inf"))
    m = tl.max(scores, axis=0)
    p = tl.exp(scores - m)
    l = tl.sum(p, axis=0)

    v_ptrs = v_ptr + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    # other=0.0 matters here too: 0 * (whatever the padded lanes held) could be NaN.
    v = tl.load(v_ptrs, mask=tile_mask, other=0.0).to(tl.float32)  # (BLOCK_N, BLOCK_D)
    out = tl.sum(p[:, None] * v, axis=0) / l  # (BLOCK_D,)

    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + row * stride_on + offs_d * stride_od
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=d_mask)


def vectorized_attention(q, k, v, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Attention with one program per query row holding all keys in one 2-D tile.

    q: (..., Nq, D); k, v: (..., Nk, D), same leading dims. Returns (..., Nq, D) in
    q's dtype. Raises ValueError when next_pow2(Nk) * next_pow2(D) exceeds
    ``MAX_TILE_ELEMENTS``: use ``flash_attention`` for longer sequences.
    """
    return vectorized_launch(q, k, v, causal=causal, scale=scale)[0]


def vectorized_launch(q, k, v, *, causal: bool = False, scale: float | None = None) -> tuple:
    """`vectorized_attention` returning (output, compiled kernel): the compiled kernel (None under
    the interpreter or for empty inputs) feeds `kernels.ablation.compiler_report`."""
    scale = check_attention_inputs("vectorized_attention", q, k, v, causal, scale)
    nk, d = k.shape[-2], q.shape[-1]
    block_n, block_d = next_pow2(nk), next_pow2(d)
    if block_n * block_d > MAX_TILE_ELEMENTS:
        raise ValueError(
            f"vectorized_attention: Nk={nk}, D={d} needs a {block_n}x{block_d} tile "
            f"({block_n * block_d} elements) in one program; the limit is "
            f"{MAX_TILE_ELEMENTS} (e.g. Nk <= {MAX_TILE_ELEMENTS // block_d} at this D), past "
            "which it spills registers and compiles for minutes. Use flash_attention, "
            "which tiles the keys."
        )
    out = new_output(q.shape, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out, None
    q4, k4, v4 = as_batch_heads(q), as_batch_heads(k), as_batch_heads(v)
    o4 = out.view(q4.shape)
    B, H, NQ, D = q4.shape
    compiled = _vectorized_attention_kernel[(NQ, B * H)](
        q4, k4, v4, o4,
        *q4.stride(), *k4.stride(), *v4.stride(), *o4.stride(),
        H, nk, D, scale,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        IS_CAUSAL=causal,
        num_warps=_num_warps(block_n * block_d),
    )
    return out, compiled
