"""Post 3: tiled FlashAttention-2, forward and backward, in Triton.

Forward: each program owns BLOCK_M query rows of one (batch, head) and streams the
keys and values past them in BLOCK_N tiles, keeping a running max, a running sum
and an output accumulator (the online softmax), so the (Nq, Nk) score matrix never
reaches global memory. Backward: one kernel keeps a K/V tile on chip while query
tiles stream past it (dK, dV), another keeps a Q tile while K/V tiles stream (dQ);
neither needs atomics. Grouped-query attention: k and v may have fewer heads than q.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import DIRECT, TunedKernel
from .runtime import new_output
from .settings import SETTINGS
from .tiles import LOG2E, fwd_tiles, load_tile, padded_head_dim, tune_n


@triton.jit
def flash_fwd_kernel(
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

    q = load_tile(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
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
    acc, l_i, m_i = fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                              0, full_n, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                              False, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION, SOFTMAX)
    # Stage 2: the diagonal tiles (causal) and the ragged last tile, masked.
    acc, l_i, m_i = fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                              full_n, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                              True, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION, SOFTMAX)

    out = acc / l_i[:, None]
    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=(offs_m < N_Q)[:, None] & (offs_d < D)[None, :])
    # log2-sum-exp2 of each row: the backward pass rebuilds P from it without a second max/sum.
    if SOFTMAX == "exp":
        lse = (m_i + tl.log(l_i)) * LOG2E  # natural-log units -> log2 units
    else:
        lse = m_i + tl.log2(l_i)
    tl.store(lse_ptr + bh * N_Q + offs_m, lse, mask=offs_m < N_Q)


@triton.jit
def flash_bwd_preprocess_kernel(
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
def bwd_dkdv_tiles(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base,
    stride_qn, stride_qd, stride_don, stride_dod,
    lo, hi, offs_n, offs_m, offs_d, N_Q, D, qk_scale,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    BLOCK_M: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m  # (BLOCK_M,)
        q = load_tile(q_base + rows[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                      rows, N_Q, offs_d, D, MASKED, PAD_D)  # (BLOCK_M, HEAD_DIM)
        do = load_tile(do_base + rows[:, None] * stride_don + offs_d[None, :] * stride_dod,
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
def flash_bwd_dkdv_kernel(
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
    k = load_tile(k_ptr + b * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                  offs_n, N_K, offs_d, D, True, PAD_D)  # (BLOCK_N, HEAD_DIM)
    v = load_tile(v_ptr + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
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
            dk, dv = bwd_dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                    stride_qn, stride_qd, stride_don, stride_dod,
                                    n0, diag_hi, offs_n, offs_m, offs_d, N_Q, D, qk_scale,
                                    True, True, PAD_D, BLOCK_M, PRECISION)
            lo = n0 + BLOCK_N
        else:
            lo = 0
        dk, dv = bwd_dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                stride_qn, stride_qd, stride_don, stride_dod,
                                lo, full_m, offs_n, offs_m, offs_d, N_Q, D, qk_scale,
                                False, IS_CAUSAL, PAD_D, BLOCK_M, PRECISION)
        dk, dv = bwd_dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
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
def bwd_dq_tiles(
    dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                      cols, N_K, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        v = load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
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
def flash_bwd_dq_kernel(
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
    q = load_tile(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                  offs_m, N_Q, offs_d, D, True, PAD_D)
    do = load_tile(do_ptr + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod,
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
    dq = bwd_dq_tiles(dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                      0, full_n, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                      False, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION)
    dq = bwd_dq_tiles(dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                      full_n, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                      True, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION)
    dq_ptrs = dq_ptr + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqn + offs_d[None, :] * stride_dqd
    tl.store(dq_ptrs, (dq * scale).to(dq_ptr.dtype.element_ty), mask=(offs_m < N_Q)[:, None] & (offs_d < D)[None, :])


# ----------------------------------------------------------------------------- launch

# Candidate tiles (BLOCK_M, BLOCK_N, num_warps, num_stages) by head dim. The forward
# and dQ kernels need BLOCK_M % BLOCK_N == 0, the dK/dV kernel BLOCK_N % BLOCK_M == 0,
# so the causal diagonal starts on a tile boundary.
FWD_TILES = {
    64: [(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 4), (64, 32, 4, 2),
         (32, 32, 4, 2)],
    128: [(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3), (64, 32, 4, 2), (32, 32, 4, 2)],
    256: [(64, 64, 8, 2), (64, 32, 4, 2), (32, 32, 4, 2), (32, 16, 4, 1)],
}
DKDV_TILES = {
    64: [(32, 128, 4, 3), (64, 128, 8, 3), (32, 64, 4, 3), (16, 64, 4, 2)],
    128: [(32, 128, 8, 2), (64, 128, 8, 2), (32, 64, 4, 3), (16, 64, 4, 2)],
    256: [(32, 64, 4, 1), (16, 32, 4, 1), (16, 16, 4, 1)],
}
DQ_TILES = {
    64: [(128, 32, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3), (64, 16, 4, 2)],
    128: [(128, 32, 8, 3), (128, 64, 8, 2), (64, 32, 4, 3), (64, 16, 4, 2)],
    256: [(64, 32, 4, 1), (32, 32, 4, 1), (32, 16, 4, 1)],
}

KERNELS = {
    "fwd": TunedKernel("fwd", flash_fwd_kernel, FWD_TILES),
    "dkdv": TunedKernel("dkdv", flash_bwd_dkdv_kernel, DKDV_TILES),
    "dq": TunedKernel("dq", flash_bwd_dq_kernel, DQ_TILES),
}
PREPROCESS_BLOCK = 32 if SETTINGS.interpret else 64


def candidate_tiles(kernel_name: str, head_dim: int) -> list[tuple]:
    """The autotuner's candidates (BLOCK_M, BLOCK_N, num_warps, num_stages) for one kernel
    ("fwd", "dkdv" or "dq") at one padded head dim; the first is the KERNELS_AUTOTUNE=0 tile."""
    return KERNELS[kernel_name].candidates(head_dim)


def flash_forward(q4, k4, v4, causal: bool, scale: float, precision: str, *, tile=None, switches=None):
    """Launch the forward kernel on (B, H, N, D) views; returns (o4, lse, (compiled kernel, config)).

    k4, v4 may have fewer heads than q4 (a divisor of them). lse is (B, H, Nq) fp32 in log2
    units, what the backward rebuilds P from. ``tile`` forces (BLOCK_M, BLOCK_N, num_warps,
    num_stages) instead of autotuning (post 4's ablation, the every-candidate tests);
    ``switches`` (SOFTMAX, SPLIT_LOOPS, SKIP_FUTURE) are the ablation's; the defaults are the
    production kernel. The caller has validated the inputs (``kernels.attention`` does).
    """
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    head_dim = padded_head_dim(D)
    o4 = new_output((B, H, NQ, D), dtype=q4.dtype, device=q4.device)
    lse = new_output((B, H, NQ), dtype=torch.float32, device=q4.device)
    meta = dict(HEAD_DIM=head_dim, PAD_D=head_dim != D, IS_CAUSAL=causal, PRECISION=precision,
                SOFTMAX="exp2-fma")
    meta.update(switches or {})
    if meta["SOFTMAX"] == "exp2-fma" and scale <= 0:
        meta["SOFTMAX"] = "exp2"  # the fused form takes the row max before scaling: scale > 0 only
    qk_scale = scale if meta["SOFTMAX"] == "exp" else scale * LOG2E
    n_tune = tune_n(NQ, NK)
    launch = KERNELS["fwd"](
        lambda bm, bn: (triton.cdiv(NQ, bm), B * H),
        (q4, k4, v4, o4, lse), (*q4.stride(), *k4.stride(), *v4.stride(), *o4.stride(),
                                 H, H // H_KV, NQ, NK, D, qk_scale, n_tune),
        meta, (n_tune, q4.dtype), tile=tile,
    )
    return o4, lse, launch


def flash_preprocess(o4, do4):
    """delta = rowsum(dO * O), (B, H, Nq) fp32: the first launch of every backward."""
    B, H, NQ, D = o4.shape
    delta = new_output((B, H, NQ), dtype=torch.float32, device=o4.device)
    DIRECT("pre", flash_bwd_preprocess_kernel, (triton.cdiv(NQ, PREPROCESS_BLOCK), B * H),
           (o4, do4, delta), (*o4.stride(), *do4.stride(), H, NQ, D),
           dict(HEAD_DIM=padded_head_dim(D), BLOCK_M=PREPROCESS_BLOCK))
    return delta


def _backward_args(q4, k4, causal: bool, precision: str, do4):
    B, H, NQ, D = q4.shape
    head_dim = padded_head_dim(D)
    n_tune = tune_n(NQ, k4.shape[2])
    meta = dict(HEAD_DIM=head_dim, PAD_D=head_dim != D, IS_CAUSAL=causal, PRECISION=precision)
    return meta, n_tune, (n_tune, q4.dtype, do4.dtype)


def flash_dkdv(q4, k4, v4, do4, lse, delta, causal: bool, scale: float, precision: str, *, tile=None):
    """dK and dV (shaped like k4 and v4) by the pointer kernel; ``tile`` forces a config."""
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    meta, n_tune, key = _backward_args(q4, k4, causal, precision, do4)
    dk = new_output(k4.shape, dtype=k4.dtype, device=k4.device)
    dv = new_output(v4.shape, dtype=v4.dtype, device=v4.device)
    KERNELS["dkdv"](lambda bm, bn: (triton.cdiv(NK, bn), B * H_KV),
                    (q4, k4, v4, do4, lse, delta, dk, dv),
                    (*q4.stride(), *k4.stride(), *v4.stride(), *do4.stride(), *dk.stride(),
                     H, H_KV, H // H_KV, NQ, NK, D, scale * LOG2E, scale, n_tune),
                    meta, key, tile=tile)
    return dk, dv


def flash_dq(q4, k4, v4, do4, lse, delta, causal: bool, scale: float, precision: str, *, tile=None):
    """dQ (shaped like q4) by the pointer kernel; ``tile`` forces a config."""
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    meta, n_tune, key = _backward_args(q4, k4, causal, precision, do4)
    dq = new_output(q4.shape, dtype=q4.dtype, device=q4.device)
    KERNELS["dq"](lambda bm, bn: (triton.cdiv(NQ, bm), B * H),
                  (q4, k4, v4, do4, lse, delta, dq),
                  (*q4.stride(), *k4.stride(), *v4.stride(), *do4.stride(), *dq.stride(),
                   H, H // H_KV, NQ, NK, D, scale * LOG2E, scale, n_tune),
                  meta, key, tile=tile)
    return dq
