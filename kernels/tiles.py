"""The ``@triton.jit`` pieces and constants that several pointer kernels share.

``load_tile`` reads a (rows, HEAD_DIM) tile with only the masks it needs; ``fwd_tiles`` is the
forward's online-softmax loop over key tiles, used by post 3's forward (``kernels/flash.py``),
the split-K forward (``kernels/splitk.py``) and post 4's ablation through ``flash.py``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .runtime import next_pow2

LOG2E = 1.4426950408889634  # exp(x) == exp2(x * LOG2E); exp2 is the native instruction


def padded_head_dim(d: int) -> int:
    """The HEAD_DIM constexpr of a head dim ``d``: a power of two, at least 16 (tl.dot's minimum)."""
    return max(16, next_pow2(d))


def tune_n(*lengths: int) -> int:
    """The autotuner's bucketed sequence length: the next power of two of the longest."""
    return next_pow2(max(lengths))


@triton.jit
def load_tile(ptrs, rows, n_rows, offs_d, D, MASK_ROWS: tl.constexpr, MASK_D: tl.constexpr):
    # other=0.0: padded rows and features then contribute exactly zero to every dot.
    if MASK_ROWS and MASK_D:
        return tl.load(ptrs, mask=(rows < n_rows)[:, None] & (offs_d < D)[None, :], other=0.0)
    elif MASK_ROWS:
        return tl.load(ptrs, mask=(rows < n_rows)[:, None], other=0.0)
    elif MASK_D:
        return tl.load(ptrs, mask=(offs_d < D)[None, :], other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def fwd_tiles(
    acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, SOFTMAX: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BLOCK_N,)
        k = load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                       cols, N_K, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N), unscaled
        if SOFTMAX == "exp2-fma" and not MASKED:
            # qk_scale > 0 here (the launcher checks), so the row max of the raw scores,
            # scaled, is the max of the scaled scores; the scale and the max subtraction
            # then ride in a single FMA per score instead of a multiply and a subtract.
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.exp2(qk * qk_scale - m_new[:, None])
        else:
            # Scores in log2 units (exp2 modes): the softmax scale and 1/ln 2 are one multiply.
            s = qk * qk_scale
            if MASKED:
                keep = (cols < N_K)[None, :]
                if IS_CAUSAL:
                    keep = keep & (offs_m[:, None] >= cols[None, :])
                # -inf gives those keys a weight of exactly exp2(-inf) = 0.
                s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            if SOFTMAX == "exp":
                p = tl.exp(s - m_new[:, None])
            else:
                p = tl.exp2(s - m_new[:, None])
        if SOFTMAX == "exp":
            alpha = tl.exp(m_i - m_new)
        else:
            alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        v = load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                       cols, N_K, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i
