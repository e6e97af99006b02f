"""Post 3: tiled FlashAttention-2, forward and backward, in Triton.

Forward: each program owns BLOCK_M query rows of one (batch, head) and streams the
keys and values past them in BLOCK_N tiles, keeping a running max, a running sum
and an output accumulator (the online softmax), so the (Nq, Nk) score matrix never
reaches global memory. Backward: one kernel keeps a K/V tile on chip while query
tiles stream past it (dK, dV), another keeps a Q tile while K/V tiles stream (dQ);
neither needs atomics. Grouped-query attention: k and v may have fewer heads than q.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from . import hopper, hopper_bwd, hopper_dq
from .runtime import INTERPRET, as_batch_heads, check_attention_inputs, new_output, next_pow2

LOG2E = 1.4426950408889634  # exp(x) == exp2(x * LOG2E); exp2 is the native instruction


@triton.jit
def _load_tile(ptrs, rows, n_rows, offs_d, D, MASK_ROWS: tl.constexpr, MASK_D: tl.constexpr):
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
def _fwd_tiles(
    acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, SOFTMAX: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BLOCK_N,)
        k = _load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
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
        v = _load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                       cols, N_K, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _flash_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, GROUP, N_Q, N_K, D, qk_scale,
    TUNE_N,  # bucketed sequence length: only the autotuner's cache key reads it
    HEAD_DIM: tl.constexpr, PAD_D: tl.constexpr, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    # Switches for post 4's ablation; the defaults are the production kernel.
    SOFTMAX: tl.constexpr = "exp2-fma",  # "exp" | "exp2" (scale folded) | "exp2-fma" (and fused)
    SPLIT_LOOPS: tl.constexpr = True,  # unmasked interior tiles in a loop of their own
    SKIP_FUTURE: tl.constexpr = True,  # causal: never visit tiles entirely past the diagonal
):
    # The causal split starts the masked loop at pid_m * BLOCK_M: a key-tile boundary only
    # if BLOCK_N divides BLOCK_M. tl.dot needs every dimension >= 16.
    tl.static_assert(BLOCK_M % BLOCK_N == 0, "forward tiles need BLOCK_M % BLOCK_N == 0")
    tl.static_assert(HEAD_DIM >= 16 and BLOCK_N >= 16, "tl.dot needs HEAD_DIM and BLOCK_N >= 16")
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: b * stride_qb passes 2**31 on large tensors
    b = bh // H
    h = bh % H
    hk = h // GROUP  # grouped-query attention: GROUP query heads share one k/v head

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)

    q = _load_tile(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                   offs_m, N_Q, offs_d, D, True, PAD_D)  # (BLOCK_M, HEAD_DIM)
    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # running max (log2 units)
    l_i = tl.zeros((BLOCK_M,), tl.float32)  # running sum of exp2(s - m_i)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)  # running, unnormalised output

    # Stage 1: tiles every row of this block sees in full: no masks at all.
    if SPLIT_LOOPS:
        full_n = (N_K // BLOCK_N) * BLOCK_N
    else:
        full_n = N_K * 0  # every tile goes through the masked loop
    hi = N_K
    if IS_CAUSAL:
        # Keys before the block's first row are visible to all its rows
        # (BLOCK_M is a multiple of BLOCK_N, so this is a tile boundary).
        full_n = tl.minimum(full_n, pid_m * BLOCK_M)
        if SKIP_FUTURE:
            hi = tl.minimum(N_K, (pid_m + 1) * BLOCK_M)  # tiles past the diagonal are skipped
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                               0, full_n, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                               False, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION, SOFTMAX)
    # Stage 2: the diagonal tiles (causal) and the ragged last tile, masked.
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                               full_n, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                               True, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION, SOFTMAX)

    out = acc / l_i[:, None]
    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=(offs_m < N_Q)[:, None] & (offs_d < D)[None, :])
    # log2-sum-exp2 of each row: the backward pass rebuilds P from it without a second max/sum.
    if SOFTMAX == "exp":
        lse = (m_i + tl.log(l_i)) * 1.4426950408889634  # natural-log units -> log2 units
    else:
        lse = m_i + tl.log2(l_i)
    tl.store(lse_ptr + bh * N_Q + offs_m, lse, mask=offs_m < N_Q)


@triton.jit
def _flash_bwd_preprocess_kernel(
    o_ptr, do_ptr, delta_ptr,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N_Q, D,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # delta_i = sum_d dO_id * O_id = sum_j P_ij dP_ij: the term softmax's Jacobian subtracts.
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: b * stride_qb passes 2**31 on large tensors
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask = (offs_m < N_Q)[:, None] & (offs_d < D)[None, :]
    o = tl.load(o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(do_ptr + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod,
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(delta_ptr + bh * N_Q + offs_m, tl.sum(o * do, axis=1), mask=offs_m < N_Q)


@triton.jit
def _bwd_dkdv_tiles(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base,
    stride_qn, stride_qd, stride_don, stride_dod,
    lo, hi, offs_n, offs_m, offs_d, N_Q, D, qk_scale,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    BLOCK_M: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m  # (BLOCK_M,)
        q = _load_tile(q_base + rows[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                       rows, N_Q, offs_d, D, MASKED, PAD_D)  # (BLOCK_M, HEAD_DIM)
        do = _load_tile(do_base + rows[:, None] * stride_don + offs_d[None, :] * stride_dod,
                        rows, N_Q, offs_d, D, MASKED, PAD_D)  # (BLOCK_M, HEAD_DIM)
        if MASKED:
            # Padded rows read lse = delta = 0 with q = dO = 0, so they add exactly zero.
            lse = tl.load(lse_base + rows, mask=rows < N_Q, other=0.0)
            delta = tl.load(delta_base + rows, mask=rows < N_Q, other=0.0)
        else:
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        # Work with P^T (keys x queries) so dK and dV come out row-major, like K and V.
        p_t = tl.exp2(tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale - lse[None, :])
        if MASKED and IS_CAUSAL:
            p_t = tl.where(rows[None, :] >= offs_n[:, None], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _flash_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    H, H_KV, GROUP, N_Q, N_K, D, qk_scale, scale,
    TUNE_N,
    HEAD_DIM: tl.constexpr, PAD_D: tl.constexpr, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # The diagonal band [n0, n0 + BLOCK_N) must end on a query-tile boundary so the
    # unmasked loop after it walks whole BLOCK_M tiles: BLOCK_M divides BLOCK_N.
    tl.static_assert(BLOCK_N % BLOCK_M == 0, "dK/dV tiles need BLOCK_N % BLOCK_M == 0")
    tl.static_assert(HEAD_DIM >= 16 and BLOCK_M >= 16, "tl.dot needs HEAD_DIM and BLOCK_M >= 16")
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1).to(tl.int64)  # int64: b * stride_kb passes 2**31 on large tensors
    b = bhk // H_KV
    hk = bhk % H_KV

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    # This program's K and V tile stays on chip while every query tile streams past.
    k = _load_tile(k_ptr + b * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                   offs_n, N_K, offs_d, D, True, PAD_D)  # (BLOCK_N, HEAD_DIM)
    v = _load_tile(v_ptr + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                   offs_n, N_K, offs_d, D, True, PAD_D)  # (BLOCK_N, HEAD_DIM)
    dk = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    dv = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)

    full_m = (N_Q // BLOCK_M) * BLOCK_M
    n0 = pid_n * BLOCK_N
    for g in range(0, GROUP):  # every query head that shares this k/v head
        h = hk * GROUP + g
        q_base = q_ptr + b * stride_qb + h * stride_qh
        do_base = do_ptr + b * stride_dob + h * stride_doh
        lse_base = lse_ptr + (b * H + h) * N_Q
        delta_base = delta_ptr + (b * H + h) * N_Q
        if IS_CAUSAL:
            # Rows before n0 see none of these keys: skip them. Rows in [n0, n0 + BLOCK_N)
            # straddle the diagonal (masked); later full tiles need no mask.
            diag_hi = tl.minimum(n0 + BLOCK_N, N_Q)
            dk, dv = _bwd_dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                     stride_qn, stride_qd, stride_don, stride_dod,
                                     n0, diag_hi, offs_n, offs_m, offs_d, N_Q, D, qk_scale,
                                     True, True, PAD_D, BLOCK_M, PRECISION)
            lo = n0 + BLOCK_N
        else:
            lo = 0
        dk, dv = _bwd_dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                 stride_qn, stride_qd, stride_don, stride_dod,
                                 lo, full_m, offs_n, offs_m, offs_d, N_Q, D, qk_scale,
                                 False, IS_CAUSAL, PAD_D, BLOCK_M, PRECISION)
        dk, dv = _bwd_dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                 stride_qn, stride_qd, stride_don, stride_dod,
                                 tl.maximum(lo, full_m), N_Q, offs_n, offs_m, offs_d, N_Q, D, qk_scale,
                                 True, False, PAD_D, BLOCK_M, PRECISION)

    mask = (offs_n < N_K)[:, None] & (offs_d < D)[None, :]
    dk_ptrs = dk_ptr + b * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd
    dv_ptrs = dv_ptr + b * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd
    # S = scale * Q K^T, so dK picks up the scale (dV does not).
    tl.store(dk_ptrs, (dk * scale).to(dk_ptr.dtype.element_ty), mask=mask)
    tl.store(dv_ptrs, dv.to(dv_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_dq_tiles(
    dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = _load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                       cols, N_K, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        v = _load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                       cols, N_K, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        p = tl.exp2(tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale - lse[:, None])
        if MASKED:
            keep = (cols < N_K)[None, :]
            if IS_CAUSAL:
                keep = keep & (offs_m[:, None] >= cols[None, :])
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def _flash_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    H, GROUP, N_Q, N_K, D, qk_scale, scale,
    TUNE_N,
    HEAD_DIM: tl.constexpr, PAD_D: tl.constexpr, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # As in the forward: the masked (diagonal) loop starts on a key-tile boundary.
    tl.static_assert(BLOCK_M % BLOCK_N == 0, "dQ tiles need BLOCK_M % BLOCK_N == 0")
    tl.static_assert(HEAD_DIM >= 16 and BLOCK_N >= 16, "tl.dot needs HEAD_DIM and BLOCK_N >= 16")
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: b * stride_qb passes 2**31 on large tensors
    b = bh // H
    h = bh % H
    hk = h // GROUP

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _load_tile(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                   offs_m, N_Q, offs_d, D, True, PAD_D)
    do = _load_tile(do_ptr + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod,
                    offs_m, N_Q, offs_d, D, True, PAD_D)
    lse = tl.load(lse_ptr + bh * N_Q + offs_m, mask=offs_m < N_Q, other=0.0)
    delta = tl.load(delta_ptr + bh * N_Q + offs_m, mask=offs_m < N_Q, other=0.0)
    k_base = k_ptr + b * stride_kb + hk * stride_kh
    v_base = v_ptr + b * stride_vb + hk * stride_vh
    dq = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)

    full_n = (N_K // BLOCK_N) * BLOCK_N
    if IS_CAUSAL:
        full_n = tl.minimum(full_n, pid_m * BLOCK_M)
        hi = tl.minimum(N_K, (pid_m + 1) * BLOCK_M)
    else:
        hi = N_K
    dq = _bwd_dq_tiles(dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                       0, full_n, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                       False, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION)
    dq = _bwd_dq_tiles(dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                       full_n, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                       True, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION)
    dq_ptrs = dq_ptr + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqn + offs_d[None, :] * stride_dqd
    tl.store(dq_ptrs, (dq * scale).to(dq_ptr.dtype.element_ty), mask=(offs_m < N_Q)[:, None] & (offs_d < D)[None, :])


# ----------------------------------------------------------------------------- launch

# Candidate tiles (BLOCK_M, BLOCK_N, num_warps, num_stages) by head dim. The forward
# and dQ kernels need BLOCK_M % BLOCK_N == 0, the dK/dV kernel BLOCK_N % BLOCK_M == 0,
# so the causal diagonal starts on a tile boundary. Configs that do not fit in shared
# memory (fp32, D = 256) are dropped by the autotuner itself.
_FWD_TILES = {
    64: [(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 4), (64, 32, 4, 2),
         (32, 32, 4, 2)],
    128: [(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3), (64, 32, 4, 2), (32, 32, 4, 2)],
    256: [(64, 64, 8, 2), (64, 32, 4, 2), (32, 32, 4, 2), (32, 16, 4, 1)],
}
_DKDV_TILES = {
    64: [(32, 128, 4, 3), (64, 128, 8, 3), (32, 64, 4, 3), (16, 64, 4, 2)],
    128: [(32, 128, 8, 2), (64, 128, 8, 2), (32, 64, 4, 3), (16, 64, 4, 2)],
    256: [(32, 64, 4, 1), (16, 32, 4, 1), (16, 16, 4, 1)],
}
_DQ_TILES = {
    64: [(128, 32, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3), (64, 16, 4, 2)],
    128: [(128, 32, 8, 3), (128, 64, 8, 2), (64, 32, 4, 3), (64, 16, 4, 2)],
    256: [(64, 32, 4, 1), (32, 32, 4, 1), (32, 16, 4, 1)],
}
_INTERPRETER_TILE = (32, 32)  # the interpreter cannot time configs: one tile unless a test forces another

# Autotuning on the GPU. KERNELS_AUTOTUNE=0 uses the first candidate of each table instead,
# which keeps a test suite over many shapes from compiling every candidate for every shape.
AUTOTUNE = os.environ.get("KERNELS_AUTOTUNE", "1") != "0"


def _tiles(table, head_dim):
    return table[64 if head_dim <= 64 else 128 if head_dim <= 128 else 256]


def candidate_tiles(kernel_name: str, head_dim: int) -> list[tuple]:
    """The autotuner's candidates (BLOCK_M, BLOCK_N, num_warps, num_stages) for one kernel
    ("fwd", "dkdv" or "dq") at one padded head dim; the first is the KERNELS_AUTOTUNE=0 tile."""
    return list(_tiles(_KERNELS[kernel_name][1], head_dim))


_KERNELS = {
    "fwd": (_flash_fwd_kernel, _FWD_TILES),
    "dkdv": (_flash_bwd_dkdv_kernel, _DKDV_TILES),
    "dq": (_flash_bwd_dq_kernel, _DQ_TILES),
}


@functools.cache
def _launcher(kernel_name: str, head_dim: int, tuned: bool):
    """The kernel wrapped in an autotuner over the candidates (or over the first one).

    Built lazily: constructing an autotuner must not happen at import on a machine
    with no GPU. ``cache_results``: the timings of each tuning key are written to
    Triton's cache directory (``TRITON_CACHE_DIR``, by default ``~/.triton/cache``, as
    ``*.autotune.json``), so a new process reuses the choice instead of re-timing
    every candidate; the cache key includes the kernel source and the candidates.
    """
    kernel, table = _KERNELS[kernel_name]
    configs = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in _tiles(table, head_dim)
    ]
    if not tuned:
        configs = configs[:1]
    return triton.autotune(configs=configs, key=["TUNE_N", "HEAD_DIM", "IS_CAUSAL", "PRECISION"],
                           cache_results=True)(kernel)


# The autotuner's pick per (kernel, tuning key). After the first call for a key the kernel
# is launched with that config directly: the autotuner rebuilds a dict of all ~30
# arguments on every call, the largest single item (about a third) in a profile of
# host time per forward call on the H100.
_BEST: dict[tuple, dict] = {}


def _launch(kernel_name: str, grid_of, tensors: tuple, scalars: tuple, meta: dict, key: tuple, tile=None):
    """Launch ``kernel_name`` on ``grid_of(BLOCK_M, BLOCK_N)``; returns (compiled kernel, config).

    The kernel's runtime arguments are ``tensors`` then ``scalars``; ``meta`` holds the
    constexpr switches; ``key`` must separate every launch the autotuner would time
    separately (bucketed length, dtypes); ``tile`` = (BLOCK_M, BLOCK_N, num_warps,
    num_stages) skips tuning altogether (under the interpreter only its block sizes count).
    The compiled kernel is None under the interpreter.
    """
    kernel = _KERNELS[kernel_name][0]
    if tile is not None:
        cfg = dict(zip(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"), tile))
        if INTERPRET:
            cfg = {"BLOCK_M": cfg["BLOCK_M"], "BLOCK_N": cfg["BLOCK_N"]}
    elif INTERPRET:
        cfg = dict(zip(("BLOCK_M", "BLOCK_N"), _INTERPRETER_TILE))
    else:
        key = (kernel_name, AUTOTUNE, *meta.values(), *key)
        cfg = _BEST.get(key)
        if cfg is None:
            tuner = _launcher(kernel_name, meta["HEAD_DIM"], AUTOTUNE)
            compiled = tuner[lambda m: grid_of(m["BLOCK_M"], m["BLOCK_N"])](*tensors, *scalars, **meta)
            best = tuner.best_config
            _BEST[key] = dict(best.kwargs, num_warps=best.num_warps, num_stages=best.num_stages)
            return compiled, _BEST[key]
    grid = grid_of(cfg["BLOCK_M"], cfg["BLOCK_N"])
    return _DIRECT(kernel_name, kernel, grid, tensors, scalars, {**meta, **cfg}), cfg


# ----------------------------------------------------------------------------- direct launch
#
# Once a kernel is compiled, ``kernel[grid](...)`` still spends ~27 us of host time per call
# on the H100 box (binding ~40 arguments, specialising each, hashing a cache key); launching
# the compiled kernel itself takes ~9 us. At N = 1k that difference decides whether the GPU
# waits for the host. So after the first launch of a specialisation, later launches with the
# same specialisation go through the compiled kernel's own launch entry, ``compiled[grid](...)``:
# the call Triton's launcher makes itself, so profiler hooks and launch metadata stay Triton's.
# (Triton 3.6 keeps an empty hook chain installed, so that entry builds launch metadata on every
# call: a few us more than calling the launcher with no hooks, the price of not depending on its
# argument layout; see PERF_NOTES.md.)


def _specialization(tensors: tuple, scalars: tuple, descriptors: tuple = ()) -> tuple:
    """A key at least as fine as what Triton specialises a compiled kernel on.

    Triton specialises tensors on dtype and 16-byte alignment of the pointer, ints on being
    1, divisible by 16, or beyond int32, and a Gluon tensor descriptor on its dtype, block
    shape and shared-memory layout. Here tensors key on dtype and the pointer's low four
    bits, descriptors on dtype, block shape, layout, shape and strides, and scalars on their
    exact values (cheaper to hash than to classify): equal keys always mean the same compiled
    kernel; a new key only costs one launch through Triton.
    """
    descs = [(d.base.dtype, *d.block_shape, repr(d.layout), *d.shape, *d.strides) for d in descriptors]
    return (*descs, *[(t.dtype, t.data_ptr() & 15) for t in tensors], *scalars)


def _constexpr_params(kernel, n_args: int) -> tuple | None:
    """((name, default), ...) of the kernel's constexprs, if they all follow the ``n_args`` runtime
    parameters; else None. Called only when a specialisation is first seen, so not memoised."""
    params = list(kernel.params)
    tail = params[n_args:]
    ok = all(not p.is_constexpr for p in params[:n_args]) and all(p.is_constexpr for p in tail)
    return tuple((p.name, p.default) for p in tail) if ok else None


class DirectLauncher:
    """Launches a @triton.jit kernel through Triton the first time per specialisation, then
    through the compiled kernel's ``[grid]`` entry.

    ``enabled`` starts from the mode and ``KERNELS_DIRECT_LAUNCH``; if a direct launch ever
    fails (a Triton whose compiled-kernel entry takes its arguments differently), it warns
    once, turns itself off and every later launch takes Triton's own path.
    ``current_device`` returns the device index launches go to (Triton's current device).
    """

    def __init__(self, enabled: bool, current_device, max_entries: int = 4096):
        self.enabled = enabled
        self._current_device = current_device
        self._max_entries = max_entries  # distinct signatures kept; then the cache starts over
        self._compiled: dict[tuple, tuple] = {}  # key -> (compiled kernel, constexpr values in order)

    def __len__(self) -> int:
        return len(self._compiled)

    def __call__(self, name: str, kernel, grid: tuple, tensors: tuple, scalars: tuple, constexprs: dict,
                 descriptors: tuple = (), options: dict | None = None):
        """Launch ``kernel[grid](*descriptors, *tensors, *scalars, **constexprs, **options)``; returns
        the compiled kernel. ``descriptors`` are Gluon TensorDescriptors, the kernel's first
        arguments; ``options`` are launch options such as ``num_warps`` (part of the key)."""
        options = options or {}
        if not self.enabled:
            return kernel[grid](*descriptors, *tensors, *scalars, **constexprs, **options)
        key = (name, self._current_device(), *grid, *constexprs.values(), *options.items(),
               *_specialization(tensors, scalars, descriptors))
        hit = self._compiled.get(key)
        if hit is not None:
            compiled, runner, consts = hit
            try:
                runner(*descriptors, *tensors, *scalars, *consts)
                return compiled
            except (TypeError, AttributeError, ValueError, IndexError) as exc:
                self.enabled = False
                self._compiled.clear()
                warnings.warn(f"kernels.flash: launching a compiled kernel directly failed ({exc!r}); "
                              "every later launch goes through Triton's own launcher (a few us slower per "
                              "call). Please report this with your Triton version.", RuntimeWarning,
                              stacklevel=2)
        compiled = kernel[grid](*descriptors, *tensors, *scalars, **constexprs, **options)
        n_args = len(descriptors) + len(tensors) + len(scalars)
        params = _constexpr_params(kernel, n_args) if self.enabled else None
        if params is not None:
            if len(self._compiled) >= self._max_entries:
                self._compiled.clear()
            consts = tuple(constexprs.get(n, default) for n, default in params)
            # The grid is in the key, so the compiled kernel's launch entry for it is built once.
            self._compiled[key] = (compiled, compiled[(*grid, 1, 1)[:3]], consts)
        return compiled


_DIRECT = DirectLauncher(
    enabled=not INTERPRET and os.environ.get("KERNELS_DIRECT_LAUNCH", "1") != "0",
    current_device=lambda: triton.runtime.driver.active.get_current_device(),
)


def _head_dim(d: int) -> int:
    return max(16, next_pow2(d))  # tl.dot needs every dimension >= 16


def _tune_n(*lengths: int) -> int:
    return next_pow2(max(lengths))


def _flash_forward(q4, k4, v4, causal: bool, scale: float, precision: str, *, tile=None, switches=None,
                   splits=None, backend=None):
    """Launch the forward kernel; returns (o4, lse in log2 units, (compiled kernel, config)).

    ``tile`` forces (BLOCK_M, BLOCK_N, num_warps, num_stages) instead of autotuning (post
    4's ablation, the every-candidate tests); ``switches`` (SOFTMAX, SPLIT_LOOPS,
    SKIP_FUTURE) are the ablation's; the defaults are the production kernel. ``splits``:
    None lets ``splitk.auto_splits`` decide (only when neither ``tile`` nor ``switches`` is
    given: those name this kernel), 1 forbids the split, N >= 2 forces the split-K forward
    (``kernels/splitk.py``) with N key slices, on ``tile`` if given. ``backend``: None picks
    the Gluon Hopper kernel (``kernels/hopper.py``) where it applies and is the faster one
    (``hopper.auto_applies``), "pointer" forces this file's kernel, "gluon" forces Gluon.
    """
    if backend not in (None, "pointer", "gluon"):
        raise ValueError(f"flash_attention: backend must be None, 'pointer' or 'gluon', got {backend!r}")
    if splits is None:
        splits = 1 if tile is not None or switches is not None else splitk.auto_splits(q4, k4)
    if splitk.check_splits(splits) > 1:
        if switches:
            raise ValueError("flash_attention: the ablation's switches apply to the unsplit kernel only")
        return splitk.splitk_forward(q4, k4, v4, causal, scale, precision, splits, tile=tile)
    if backend == "gluon" or (backend is None and tile is None and switches is None
                              and hopper.auto_applies(q4, k4, v4, scale)):
        if backend == "gluon" and (tile is not None or switches):
            raise ValueError("flash_attention: tile and switches apply to the pointer kernel only")
        problem = hopper.hopper_problem(q4, k4, v4)
        if problem is not None:
            raise ValueError(f"flash_attention: the Gluon Hopper kernel cannot run here: {problem}")
        o4, lse, compiled = hopper.hopper_forward(q4, k4, v4, causal, scale)
        return o4, lse, (compiled, {"kernel": "gluon-hopper"})
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    head_dim = _head_dim(D)
    o4 = new_output((B, H, NQ, D), dtype=q4.dtype, device=q4.device)
    lse = new_output((B, H, NQ), dtype=torch.float32, device=q4.device)
    meta = dict(HEAD_DIM=head_dim, PAD_D=head_dim != D, IS_CAUSAL=causal, PRECISION=precision,
                SOFTMAX="exp2-fma")
    meta.update(switches or {})
    if meta["SOFTMAX"] == "exp2-fma" and scale <= 0:
        meta["SOFTMAX"] = "exp2"  # the fused form takes the row max before scaling: scale > 0 only
    qk_scale = scale if meta["SOFTMAX"] == "exp" else scale * LOG2E
    tune_n = _tune_n(NQ, NK)
    launch = _launch(
        "fwd", lambda bm, bn: (triton.cdiv(NQ, bm), B * H),
        (q4, k4, v4, o4, lse), (*q4.stride(), *k4.stride(), *v4.stride(), *o4.stride(),
                                 H, H // H_KV, NQ, NK, D, qk_scale, tune_n),
        meta, (tune_n, q4.dtype), tile=tile,
    )
    return o4, lse, launch


def _flash_backward(do4, q4, k4, v4, o4, lse, causal: bool, scale: float, precision: str, *, tiles=None,
                    dkdv_backend=None, dq_backend=None):
    """Launch the three backward kernels; returns (dq, dk, dv). ``tiles`` maps "dkdv" and/or
    "dq" to a forced (BLOCK_M, BLOCK_N, num_warps, num_stages) (tests); else autotuned.
    ``dkdv_backend``: None runs the Gluon dK/dV kernel (``kernels/hopper_bwd.py``) where
    ``hopper_bwd.auto_applies``, "pointer" forces this file's kernel, "gluon" forces Gluon.
    ``dq_backend``: the same for dQ (``kernels/hopper_dq.py``); None picks Gluon only where
    ``hopper_dq.auto_applies`` and ``hopper_dq.ENABLED``; "atomic" (forced only, never the
    default) adds dQ from inside the Gluon dK/dV kernel (``hopper_bwd.hopper_dkdv_dq``), which
    then also makes dK and dV."""
    if dkdv_backend not in (None, "pointer", "gluon"):
        raise ValueError(f"flash_attention: dkdv_backend must be None, 'pointer' or 'gluon', got {dkdv_backend!r}")
    if dq_backend not in (None, "pointer", "gluon", "atomic"):
        raise ValueError(f"flash_attention: dq_backend must be None, 'pointer', 'gluon' or 'atomic', "
                         f"got {dq_backend!r}")
    if dq_backend == "atomic" and (dkdv_backend == "pointer" or tiles):
        raise ValueError("flash_attention: dq_backend='atomic' computes dK and dV too, in the Gluon kernel: "
                         "no pointer dK/dV backend or tiles with it")
    tiles = tiles or {}
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    head_dim = _head_dim(D)
    delta = new_output((B, H, NQ), dtype=torch.float32, device=q4.device)
    pre_block = 64 if not INTERPRET else 32
    _DIRECT("pre", _flash_bwd_preprocess_kernel, (triton.cdiv(NQ, pre_block), B * H),
            (o4, do4, delta), (*o4.stride(), *do4.stride(), H, NQ, D), dict(HEAD_DIM=head_dim, BLOCK_M=pre_block))
    tune_n = _tune_n(NQ, NK)
    meta = dict(HEAD_DIM=head_dim, PAD_D=head_dim != D, IS_CAUSAL=causal, PRECISION=precision)
    key = (tune_n, q4.dtype, do4.dtype)
    do_c = None  # the dense dO the Gluon kernels read, made on first use
    if dq_backend == "atomic":
        return hopper_bwd.hopper_dkdv_dq(q4, k4, v4, do4.contiguous(), lse, delta, causal, scale)
    if dkdv_backend == "gluon" or (dkdv_backend is None and "dkdv" not in tiles
                                   and hopper_bwd.auto_applies(q4, k4, v4, scale)):
        if "dkdv" in tiles:
            raise ValueError("flash_attention: a dK/dV tile applies to the pointer kernel only")
        # TMA reads whole rows; autograd may hand over a strided dO (out.sum().backward() gives
        # a broadcast one), which the pointer kernels read in place.
        do_c = do4.contiguous()  # copied once, for both Gluon kernels
        dk, dv = hopper_bwd.hopper_dkdv(q4, k4, v4, do_c, lse, delta, causal, scale)
    else:
        dk = new_output(k4.shape, dtype=k4.dtype, device=k4.device)
        dv = new_output(v4.shape, dtype=v4.dtype, device=v4.device)
        _launch("dkdv", lambda bm, bn: (triton.cdiv(NK, bn), B * H_KV),
                (q4, k4, v4, do4, lse, delta, dk, dv),
                (*q4.stride(), *k4.stride(), *v4.stride(), *do4.stride(), *dk.stride(),
                 H, H_KV, H // H_KV, NQ, NK, D, scale * LOG2E, scale, tune_n),
                meta, key, tile=tiles.get("dkdv"))
    if dq_backend == "gluon" or (dq_backend is None and hopper_dq.ENABLED and "dq" not in tiles
                                 and hopper_dq.auto_applies(q4, k4, v4, scale)):
        if "dq" in tiles:
            raise ValueError("flash_attention: a dQ tile applies to the pointer kernel only")
        if do_c is None:
            do_c = do4.contiguous()
        dq = hopper_dq.hopper_dq(q4, k4, v4, do_c, lse, delta, causal, scale)
    else:
        dq = new_output(q4.shape, dtype=q4.dtype, device=q4.device)
        _launch("dq", lambda bm, bn: (triton.cdiv(NQ, bm), B * H),
                (q4, k4, v4, do4, lse, delta, dq),
                (*q4.stride(), *k4.stride(), *v4.stride(), *do4.stride(), *dq.stride(),
                 H, H // H_KV, NQ, NK, D, scale * LOG2E, scale, tune_n),
                meta, key, tile=tiles.get("dq"))
    return dq, dk, dv


def dispatch_rule() -> str:
    """Which kernel ``flash_attention``'s forward runs, in one sentence (the benchmark records it)."""
    gluon = ("never (KERNELS_GLUON=0)" if hopper.DISABLED else
             f"on sm90 GPUs for contiguous fp16/bf16 inputs with D in {hopper.HEAD_DIMS} and Nq, Nk >= "
             f"{hopper.AUTO_MIN_LEN} when the grid fills the GPU (consumer schedule: "
             + ", ".join(f"{sched} at D = {d} {'causal' if c else 'without a mask'}"
                         for (d, c), sched in sorted(hopper.DEFAULT_SCHEDULES.items()))
             + ", serial otherwise)")
    dq = ("dQ by the Gluon Hopper kernel (kernels/hopper_dq.py) where dK and dV are Gluon's, else the pointer kernel"
          if hopper_dq.ENABLED else "dQ by the pointer kernel")
    return ("forward: split-K (kernels/splitk.py) when the grid has fewer programs than the GPU has SMs and "
            f"each walks at least {splitk.MIN_KEY_TILES} key tiles; else the Gluon Hopper kernel (kernels/hopper.py) "
            f"{gluon}; else the pointer kernel (kernels/flash.py). backward: dK and dV by the Gluon Hopper kernel "
            "(kernels/hopper_bwd.py) on the inputs the Gluon forward takes (the same GPU, dtype, head-dim and length "
            "rule, whichever forward ran), else the pointer kernel; " + dq + ".")


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q4, k4, v4, causal, scale, precision, splits=None):
        # The backward needs only O and lse, which the split forward writes in the same form.
        o4, lse, _ = _flash_forward(q4, k4, v4, causal, scale, precision, splits=splits)
        ctx.save_for_backward(q4, k4, v4, o4, lse)
        ctx.causal, ctx.scale, ctx.precision = causal, scale, precision
        return o4

    @staticmethod
    @once_differentiable
    def backward(ctx, do4):
        q4, k4, v4, o4, lse = ctx.saved_tensors
        dq, dk, dv = _flash_backward(do4, q4, k4, v4, o4, lse, ctx.causal, ctx.scale, ctx.precision)
        return dq, dk, dv, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    precision: str = "ieee",
) -> torch.Tensor:
    """Tiled FlashAttention-2 with a Triton backward pass (``loss.backward()`` works).

    q: (..., Hq, Nq, D); k, v: (..., Hkv, Nk, D) with the same batch dims and either
    the same heads or Hq a multiple of Hkv (grouped-query / multi-query attention,
    without copying k and v). Any Nq, Nk >= 1 and 1 <= D <= 256; strided inputs work.
    Returns (..., Hq, Nq, D) in q's dtype; softmax statistics are kept in fp32.

    ``precision`` applies to fp32 inputs on the GPU: "ieee" (default) for exact fp32
    dot products, "tf32" for the faster tensor-core mode (about 1e-3 relative error).

    On the GPU, a grid with fewer programs than the GPU has SMs (one head, a decode step)
    splits each program's keys across several programs (``kernels/splitk.py``).
    """
    scale = check_attention_inputs("flash_attention", q, k, v, causal, scale, allow_gqa=True)
    if precision not in ("ieee", "tf32"):
        raise ValueError(f"flash_attention: precision must be 'ieee' or 'tf32', got {precision!r}")
    if q.numel() == 0 or k.numel() == 0:
        # Nq = 0 (or an empty batch): nothing to compute; keep the result in the graph.
        return q * 0.0
    precision = precision if q.dtype == torch.float32 else "ieee"
    q4, k4, v4 = as_batch_heads(q), as_batch_heads(k), as_batch_heads(v)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        o4 = _FlashAttention.apply(q4, k4, v4, causal, scale, precision)
    else:
        # Inference: skip the autograd machinery (host time matters at short sequences).
        o4, _, _ = _flash_forward(q4, k4, v4, causal, scale, precision)
    return o4.reshape(q.shape)


# At the bottom, not the top: splitk imports this module's @triton.jit helpers, which must exist
# first; _flash_forward looks splitk up only when it runs.
from . import splitk  # noqa: E402
