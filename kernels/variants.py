"""Post 6: attention variants in the pointer kernel, forward and backward.

Post 3's kernel (``kernels/flash.py``) with one switch per variant, each a constexpr so a call
compiles only what it uses:

| switch | what changes |
|---|---|
| ``HAS_WINDOW`` | query i sees keys j with i + diag - left <= j <= i + diag + right: the loop bounds skip the tiles outside, only the boundary tiles are masked (causal is the window right = 0) |
| ``HAS_SOFTCAP`` | s = softcap * tanh(s / softcap) on the scaled scores; the backward multiplies dS by 1 - tanh^2 |
| ``HAS_ALIBI`` | s -= slope * abs(i + Nk - Nq - j), every tile |
| ``HAS_SINKS`` | one logit per query head in the softmax's denominator: it seeds the running max and sum, so the loop body is unchanged |
| ``IS_VARLEN`` | packed documents: each program reads its document's start and length from ``cu_seqlens`` |
| ``HAS_BLOCK_MASK`` | the key tiles come from a ``BlockMask``'s lists: absent blocks are never visited, ``mask_mod`` runs in partial blocks only |

Rows that see no key (a window past the keys, an empty document part) get output 0 and
LSE = +inf, so the backward's P = exp2(s - LSE) is 0 on them: no NaN anywhere. With sinks the
sink is such a row's only term: output 0, LSE = the sink.

The plain path (no variant) stays post 3's kernel: ``kernels/attention.py`` sends only calls
with a variant here.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .flash import DKDV_TILES, DQ_TILES, FWD_TILES, flash_preprocess
from .launch import TunedKernel
from .runtime import new_output
from .tiles import LOG2E, load_tile, padded_head_dim, tune_n

UNBOUNDED = 1 << 30  # a window side of -1 (unbounded) becomes this many keys: past any sequence


@triton.jit
def _no_mask(b, h, q_idx, kv_idx):
    # The MASK_MOD of a launch without a block mask: never called (HAS_BLOCK_MASK is off).
    return q_idx >= 0


@triton.jit
def tanh(x):
    # tanh(x) = 1 - 2 / (e^(2x) + 1): exp2 overflows to inf for large x and gives exactly +-1.
    return 1.0 - 2.0 / (tl.exp2(x * (2.0 * 1.4426950408889634)) + 1.0)


@triton.jit
def scores(qk, r2, c2, n_q, n_k, qk_scale, softcap_in, softcap_out, slope,
           HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr):
    # Scores in log2 units from the raw dot products, and tanh (for the backward) if soft-capped.
    # r2, c2: the query and key indices shaped to broadcast over qk, (M, 1) and (1, N) for a
    # (queries, keys) tile, (1, M) and (N, 1) for the dK/dV pass's (keys, queries) tile.
    if HAS_SOFTCAP:
        t = tanh(qk * softcap_in)  # softcap_in = scale / softcap
        s = t * softcap_out  # softcap_out = softcap * log2(e)
    else:
        t = qk
        s = qk * qk_scale
    if HAS_ALIBI:
        # slope arrives in log2 units; bottom-right aligned like FlashAttention's bias.
        dist = tl.abs(r2 + (n_k - n_q) - c2).to(tl.float32)
        s = s - slope * dist
    return s, t


@triton.jit
def visible(r2, c2, n_q, n_k, win_lo, win_hi, b, h, aux_ptr,
            HAS_WINDOW: tl.constexpr, USE_MASK_MOD: tl.constexpr, MASK_MOD: tl.constexpr,
            HAS_MASK_AUX: tl.constexpr):
    # (query, key) pairs a masked tile keeps: in bounds, inside the window, allowed by mask_mod.
    # r2, c2 broadcast against each other as in ``scores``.
    keep = (r2 < n_q) & (c2 < n_k)
    if HAS_WINDOW:
        keep = keep & (c2 >= r2 + win_lo) & (c2 <= r2 + win_hi)
    if USE_MASK_MOD:
        # Indices clamped into the matrix, so a mask_mod that loads from a per-token table never
        # reads past it; the bounds term above discards what the clamped pairs return.
        r = tl.minimum(r2, n_q - 1)
        c = tl.minimum(c2, n_k - 1)
        if HAS_MASK_AUX:
            keep = keep & MASK_MOD(b, h, r, c, aux_ptr)
        else:
            keep = keep & MASK_MOD(b, h, r, c)
    return keep


@triton.jit
def variant_fwd_tiles(
    acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, rows, offs_n, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out, slope,
    win_lo, win_hi, b, h, aux_ptr,
    MASKED: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    USE_MASK_MOD: tl.constexpr, MASK_MOD: tl.constexpr, HAS_MASK_AUX: tl.constexpr,
    PAD_D: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, FUSED: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BLOCK_N,)
        k = load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                      cols, n_k, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N), unscaled
        if FUSED and not MASKED and not HAS_SOFTCAP and not HAS_ALIBI:
            # Post 3's fused form (qk_scale > 0): the row max of the raw scores, scaled, and one FMA
            # per score. Every row sees every key of an unmasked tile, so m_new is finite.
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            m_use = m_new
            p = tl.exp2(qk * qk_scale - m_new[:, None])
        else:
            s, _ = scores(qk, rows[:, None], cols[None, :], n_q, n_k, qk_scale, softcap_in, softcap_out, slope, HAS_SOFTCAP,
                          HAS_ALIBI)
            if MASKED:
                keep = visible(rows[:, None], cols[None, :], n_q, n_k, win_lo, win_hi, b, h, aux_ptr,
                               HAS_WINDOW, USE_MASK_MOD, MASK_MOD, HAS_MASK_AUX)
                s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            if MASKED:
                # A row that has seen no key yet keeps m = -inf; subtract 0 there, not -inf (NaN).
                m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
            else:
                m_use = m_new  # an unmasked tile gives every row a finite score
            p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                      cols, n_k, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def window_tiles(m0, n_k, win_lo, win_hi, ROWS: tl.constexpr, TILE: tl.constexpr):
    # For query rows [m0, m0 + ROWS) and keys j in [i + win_lo, i + win_hi]: the key range any
    # row sees [lo, hi), and inside it the tiles [full_lo, full_hi) every row sees in full.
    # Everything is clamped to >= 0 before dividing (signed division rounds toward zero).
    lo = (tl.maximum(m0 + win_lo, 0) // TILE) * TILE
    hi = tl.minimum(n_k, tl.maximum(m0 + ROWS + win_hi, 0))
    full_lo = tl.maximum(lo, m0 + ROWS - 1 + win_lo)
    full_lo = tl.minimum(hi, ((full_lo + TILE - 1) // TILE) * TILE)
    full_hi = tl.minimum((tl.maximum(m0 + win_hi + 1, 0) // TILE) * TILE, (n_k // TILE) * TILE)
    full_hi = tl.maximum(full_lo, full_hi)
    return lo, full_lo, full_hi, hi


@triton.jit
def doc_bounds(cu_q_ptr, cu_k_ptr, doc, N_Q, N_K, IS_VARLEN: tl.constexpr):
    # (first row, rows, first key, keys) of this program's sequence: a packed document or the batch row.
    if IS_VARLEN:
        q0 = tl.load(cu_q_ptr + doc)
        k0 = tl.load(cu_k_ptr + doc)
        n_q = tl.load(cu_q_ptr + doc + 1) - q0
        n_k = tl.load(cu_k_ptr + doc + 1) - k0
    else:
        q0 = 0
        k0 = 0
        n_q = N_Q
        n_k = N_K
    return q0, n_q, k0, n_k


@triton.jit
def window_offsets(n_q, n_k, win_left, win_right, ALIGN_BOTTOM_RIGHT: tl.constexpr):
    # Query i sees keys [i + win_lo, i + win_hi]; bottom-right aligned shifts the diagonal by Nk - Nq.
    if ALIGN_BOTTOM_RIGHT:
        diag = n_k - n_q
    else:
        diag = n_k * 0
    return diag - win_left, diag + win_right


@triton.jit
def variant_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, slopes_ptr, sinks_ptr, cu_q_ptr, cu_k_ptr,
    bm_kv_num_ptr, bm_kv_idx_ptr, aux_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_slb, stride_slh,
    H, GROUP, N_Q, N_K, D, LSE_N, qk_scale, softcap_in, softcap_out, win_left, win_right,
    MASK_B, MASK_H, MASK_QB, MASK_KB,
    TUNE_N,  # bucketed sequence length: only the autotuner's cache key reads it
    HEAD_DIM: tl.constexpr, PAD_D: tl.constexpr, PRECISION: tl.constexpr,
    HAS_WINDOW: tl.constexpr, ALIGN_BOTTOM_RIGHT: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    HAS_ALIBI: tl.constexpr, HAS_SINKS: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_BLOCK_MASK: tl.constexpr, MASK_MOD: tl.constexpr, HAS_MASK_AUX: tl.constexpr,
    MASK_BLOCK: tl.constexpr, EVEN_K: tl.constexpr, FUSED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tl.static_assert(HEAD_DIM >= 16 and BLOCK_N >= 16, "tl.dot needs HEAD_DIM and BLOCK_N >= 16")
    tl.static_assert(MASK_BLOCK % BLOCK_M == 0 and MASK_BLOCK % BLOCK_N == 0,
                     "a block mask's block must be a multiple of the kernel's tiles")
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: b * stride_qb passes 2**31 on large tensors
    b = bh // H  # the batch row, or the document (varlen)
    h = bh % H
    hk = h // GROUP  # grouped-query attention: GROUP query heads share one k/v head
    q0, n_q, k0, n_k = doc_bounds(cu_q_ptr, cu_k_ptr, b, N_Q, N_K, IS_VARLEN)
    if IS_VARLEN:
        bt = b * 0  # the tensors' batch index: packed documents all live in batch 0
    else:
        bt = b

    m0 = pid_m * BLOCK_M
    rows = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = load_tile(q_ptr + bt * stride_qb + h * stride_qh + (q0 + rows[:, None]) * stride_qn
                  + offs_d[None, :] * stride_qd, rows, n_q, offs_d, D, True, PAD_D)  # (BLOCK_M, HEAD_DIM)
    k_base = k_ptr + bt * stride_kb + hk * stride_kh + k0 * stride_kn
    v_base = v_ptr + bt * stride_vb + hk * stride_vh + k0 * stride_vn
    if HAS_ALIBI:
        slope = tl.load(slopes_ptr + b * stride_slb + h * stride_slh) * 1.4426950408889634  # log2 units
    else:
        slope = 0.0
    win_lo, win_hi = window_offsets(n_q, n_k, win_left, win_right, ALIGN_BOTTOM_RIGHT)

    if HAS_SINKS:
        # The sink is a key every row sees, with no value: seed the running max with its logit
        # and the running sum with its weight exp2(0) = 1; the loops below are unchanged.
        sink = tl.load(sinks_ptr + h).to(tl.float32) * 1.4426950408889634
        m_i = tl.zeros((BLOCK_M,), tl.float32) + sink
        l_i = tl.full((BLOCK_M,), 1.0, tl.float32)
    else:
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # running max (log2 units)
        l_i = tl.zeros((BLOCK_M,), tl.float32)  # running sum of exp2(s - m_i)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    live = m0 < n_q  # programs past the end of their document compute nothing

    if HAS_BLOCK_MASK:
        # The mask's lists for this query block: FULL key blocks first, then PARTIAL ones.
        qb = m0 // MASK_BLOCK
        row = ((b % MASK_B) * MASK_H + h % MASK_H) * MASK_QB + qb
        n_full = tl.load(bm_kv_num_ptr + 2 * row)
        n_part = tl.load(bm_kv_num_ptr + 2 * row + 1)
        for i in range(0, n_full):
            kb = tl.load(bm_kv_idx_ptr + row * MASK_KB + i)
            acc, l_i, m_i = variant_fwd_tiles(
                acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                kb * MASK_BLOCK, kb * MASK_BLOCK + MASK_BLOCK, rows, offs_n, offs_d, n_q, n_k, D,
                qk_scale, softcap_in, softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
                not EVEN_K, False, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX,
                PAD_D, BLOCK_N, PRECISION, FUSED)
        for i in range(n_full, n_full + n_part):
            kb = tl.load(bm_kv_idx_ptr + row * MASK_KB + i)
            acc, l_i, m_i = variant_fwd_tiles(
                acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                kb * MASK_BLOCK, kb * MASK_BLOCK + MASK_BLOCK, rows, offs_n, offs_d, n_q, n_k, D,
                qk_scale, softcap_in, softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
                True, False, HAS_SOFTCAP, HAS_ALIBI, True, MASK_MOD, HAS_MASK_AUX,
                PAD_D, BLOCK_N, PRECISION, FUSED)
    else:
        if HAS_WINDOW:
            lo, full_lo, full_hi, hi = window_tiles(m0, n_k, win_lo, win_hi, BLOCK_M, BLOCK_N)
        else:
            lo = 0
            full_lo = 0
            full_hi = (n_k // BLOCK_N) * BLOCK_N
            hi = n_k
        hi = tl.where(live, hi, 0)
        # Masked tiles at the window's left edge, unmasked interior, masked right edge (and ragged end).
        acc, l_i, m_i = variant_fwd_tiles(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            lo, tl.minimum(full_lo, hi), rows, offs_n, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out,
            slope, win_lo, win_hi, b, h, aux_ptr,
            True, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_N, PRECISION, FUSED)
        acc, l_i, m_i = variant_fwd_tiles(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            full_lo, tl.minimum(full_hi, hi), rows, offs_n, offs_d, n_q, n_k, D, qk_scale, softcap_in,
            softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
            False, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_N, PRECISION, FUSED)
        acc, l_i, m_i = variant_fwd_tiles(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            full_hi, hi, rows, offs_n, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out,
            slope, win_lo, win_hi, b, h, aux_ptr,
            True, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_N, PRECISION, FUSED)

    # A row with no key (l = 0) gets 0, not 0/0; its LSE is +inf so the backward's P is 0.
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    o_ptrs = (o_ptr + bt * stride_ob + h * stride_oh + (q0 + rows[:, None]) * stride_on
              + offs_d[None, :] * stride_od)
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=(rows < n_q)[:, None] & (offs_d < D)[None, :])
    lse = tl.where(l_i > 0.0, m_i + tl.log2(tl.where(l_i > 0.0, l_i, 1.0)), float("inf"))
    tl.store(lse_ptr + (bt * H + h) * LSE_N + q0 + rows, lse, mask=rows < n_q)


# ----------------------------------------------------------------------------- backward


@triton.jit
def variant_dkdv_tiles(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_qd, stride_don, stride_dod,
    lo, hi, cols, offs_m, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out, slope, win_lo, win_hi,
    b, h, aux_ptr,
    MASKED: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    USE_MASK_MOD: tl.constexpr, MASK_MOD: tl.constexpr, HAS_MASK_AUX: tl.constexpr,
    PAD_D: tl.constexpr, BLOCK_M: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m  # (BLOCK_M,)
        q = load_tile(q_base + rows[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                      rows, n_q, offs_d, D, MASKED, PAD_D)  # (BLOCK_M, HEAD_DIM)
        do = load_tile(do_base + rows[:, None] * stride_don + offs_d[None, :] * stride_dod,
                       rows, n_q, offs_d, D, MASKED, PAD_D)  # (BLOCK_M, HEAD_DIM)
        if MASKED:
            lse = tl.load(lse_base + rows, mask=rows < n_q, other=0.0)
            delta = tl.load(delta_base + rows, mask=rows < n_q, other=0.0)
        else:
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        # S^T, P^T as (keys, queries), as post 3's dK/dV kernel: dK and dV come out row-major and
        # no dot takes the transpose of a computed tile. The earlier (queries, keys) form,
        # dk += dot(trans(ds), q), gave wrong dK on an H100 (Triton 3.6, fp16/bf16, D = 128) while
        # the interpreter was right: the pattern fla-org/flash-linear-attention#826 found
        # miscompiled on sm90 with Triton >= 3.4.
        qk_t = tl.dot(k, tl.trans(q), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        r2 = rows[None, :]
        c2 = cols[:, None]
        s_t, t_t = scores(qk_t, r2, c2, n_q, n_k, qk_scale, softcap_in, softcap_out, slope, HAS_SOFTCAP, HAS_ALIBI)
        p_t = tl.exp2(s_t - lse[None, :])
        if MASKED:
            keep = visible(r2, c2, n_q, n_k, win_lo, win_hi, b, h, aux_ptr,
                           HAS_WINDOW, USE_MASK_MOD, MASK_MOD, HAS_MASK_AUX)
            p_t = tl.where(keep, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=PRECISION)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        ds_t = p_t * (dp_t - delta[None, :])
        if HAS_SOFTCAP:
            ds_t = ds_t * (1.0 - t_t * t_t)  # d(c tanh(x / c)) / dx
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def variant_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, slopes_ptr, cu_q_ptr, cu_k_ptr,
    bm_q_num_ptr, bm_q_idx_ptr, aux_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_slb, stride_slh,
    H, H_KV, GROUP, N_Q, N_K, D, LSE_N, qk_scale, scale, softcap_in, softcap_out, win_left, win_right,
    MASK_B, MASK_H, MASK_QB, MASK_KB,
    TUNE_N,
    HEAD_DIM: tl.constexpr, PAD_D: tl.constexpr, PRECISION: tl.constexpr,
    HAS_WINDOW: tl.constexpr, ALIGN_BOTTOM_RIGHT: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    HAS_ALIBI: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_BLOCK_MASK: tl.constexpr, MASK_MOD: tl.constexpr, HAS_MASK_AUX: tl.constexpr,
    MASK_BLOCK: tl.constexpr, EVEN_Q: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tl.static_assert(HEAD_DIM >= 16 and BLOCK_M >= 16, "tl.dot needs HEAD_DIM and BLOCK_M >= 16")
    tl.static_assert(MASK_BLOCK % BLOCK_M == 0 and MASK_BLOCK % BLOCK_N == 0,
                     "a block mask's block must be a multiple of the kernel's tiles")
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1).to(tl.int64)  # int64: b * stride_kb passes 2**31 on large tensors
    b = bhk // H_KV
    hk = bhk % H_KV
    q0, n_q, k0, n_k = doc_bounds(cu_q_ptr, cu_k_ptr, b, N_Q, N_K, IS_VARLEN)
    if IS_VARLEN:
        bt = b * 0
    else:
        bt = b

    n0 = pid_n * BLOCK_N
    cols = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    # This program's K and V tile stays on chip while every query tile that sees it streams past.
    k = load_tile(k_ptr + bt * stride_kb + hk * stride_kh + (k0 + cols[:, None]) * stride_kn
                  + offs_d[None, :] * stride_kd, cols, n_k, offs_d, D, True, PAD_D)  # (BLOCK_N, HEAD_DIM)
    v = load_tile(v_ptr + bt * stride_vb + hk * stride_vh + (k0 + cols[:, None]) * stride_vn
                  + offs_d[None, :] * stride_vd, cols, n_k, offs_d, D, True, PAD_D)  # (BLOCK_N, HEAD_DIM)
    dk = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    dv = tl.zeros((BLOCK_N, HEAD_DIM), tl.float32)
    win_lo, win_hi = window_offsets(n_q, n_k, win_left, win_right, ALIGN_BOTTOM_RIGHT)
    live = n0 < n_k

    for g in range(0, GROUP):  # every query head that shares this k/v head
        h = hk * GROUP + g
        q_base = q_ptr + bt * stride_qb + h * stride_qh + q0 * stride_qn
        do_base = do_ptr + bt * stride_dob + h * stride_doh + q0 * stride_don
        lse_base = lse_ptr + (bt * H + h) * LSE_N + q0
        delta_base = delta_ptr + (bt * H + h) * LSE_N + q0
        if HAS_ALIBI:
            slope = tl.load(slopes_ptr + b * stride_slb + h * stride_slh) * 1.4426950408889634
        else:
            slope = 0.0
        if HAS_BLOCK_MASK:
            kb = n0 // MASK_BLOCK
            row = ((b % MASK_B) * MASK_H + h % MASK_H) * MASK_KB + kb
            n_full = tl.load(bm_q_num_ptr + 2 * row)
            n_part = tl.load(bm_q_num_ptr + 2 * row + 1)
            for i in range(0, n_full):
                qb = tl.load(bm_q_idx_ptr + row * MASK_QB + i)
                dk, dv = variant_dkdv_tiles(
                    dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_qd, stride_don, stride_dod,
                    qb * MASK_BLOCK, qb * MASK_BLOCK + MASK_BLOCK, cols, offs_m, offs_d, n_q, n_k, D, qk_scale,
                    softcap_in, softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
                    not EVEN_Q, False, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX,
                    PAD_D, BLOCK_M, PRECISION)
            for i in range(n_full, n_full + n_part):
                qb = tl.load(bm_q_idx_ptr + row * MASK_QB + i)
                dk, dv = variant_dkdv_tiles(
                    dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_qd, stride_don, stride_dod,
                    qb * MASK_BLOCK, qb * MASK_BLOCK + MASK_BLOCK, cols, offs_m, offs_d, n_q, n_k, D, qk_scale,
                    softcap_in, softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
                    True, False, HAS_SOFTCAP, HAS_ALIBI, True, MASK_MOD, HAS_MASK_AUX,
                    PAD_D, BLOCK_M, PRECISION)
        else:
            if HAS_WINDOW:
                # Rows that see a key of [n0, n0 + BLOCK_N): i + win_lo <= j <= i + win_hi, turned around.
                lo = (tl.maximum(n0 - win_hi, 0) // BLOCK_M) * BLOCK_M
                hi = tl.minimum(n_q, tl.maximum(n0 + BLOCK_N - win_lo, 0))
                full_lo = tl.maximum(lo, n0 + BLOCK_N - 1 - win_hi)
                full_lo = tl.minimum(hi, ((full_lo + BLOCK_M - 1) // BLOCK_M) * BLOCK_M)
                full_hi = tl.minimum((tl.maximum(n0 - win_lo + 1, 0) // BLOCK_M) * BLOCK_M,
                                     (n_q // BLOCK_M) * BLOCK_M)
            else:
                lo = 0
                hi = n_q
                full_lo = 0
                full_hi = (n_q // BLOCK_M) * BLOCK_M
            # A key tile past the last key masks every row tile.
            full_lo = tl.where(n0 + BLOCK_N <= n_k, full_lo, hi)
            full_hi = tl.maximum(full_lo, full_hi)
            hi = tl.where(live, hi, 0)
            dk, dv = variant_dkdv_tiles(
                dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_qd, stride_don, stride_dod,
                lo, tl.minimum(full_lo, hi), cols, offs_m, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out,
                slope, win_lo, win_hi, b, h, aux_ptr,
                True, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_M, PRECISION)
            dk, dv = variant_dkdv_tiles(
                dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_qd, stride_don, stride_dod,
                full_lo, tl.minimum(full_hi, hi), cols, offs_m, offs_d, n_q, n_k, D, qk_scale, softcap_in,
                softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
                False, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_M, PRECISION)
            dk, dv = variant_dkdv_tiles(
                dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_qd, stride_don, stride_dod,
                full_hi, hi, cols, offs_m, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out,
                slope, win_lo, win_hi, b, h, aux_ptr,
                True, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_M, PRECISION)

    mask = (cols < n_k)[:, None] & (offs_d < D)[None, :]
    dk_ptrs = (dk_ptr + bt * stride_dkb + hk * stride_dkh + (k0 + cols[:, None]) * stride_dkn
               + offs_d[None, :] * stride_dkd)
    dv_ptrs = (dv_ptr + bt * stride_dvb + hk * stride_dvh + (k0 + cols[:, None]) * stride_dvn
               + offs_d[None, :] * stride_dvd)
    tl.store(dk_ptrs, (dk * scale).to(dk_ptr.dtype.element_ty), mask=mask)  # S = scale * Q K^T
    tl.store(dv_ptrs, dv.to(dv_ptr.dtype.element_ty), mask=mask)


@triton.jit
def variant_dq_tiles(
    dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
    lo, hi, rows, offs_n, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out, slope, win_lo, win_hi,
    b, h, aux_ptr,
    MASKED: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    USE_MASK_MOD: tl.constexpr, MASK_MOD: tl.constexpr, HAS_MASK_AUX: tl.constexpr,
    PAD_D: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = load_tile(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                      cols, n_k, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        v = load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                      cols, n_k, offs_d, D, MASKED, PAD_D)  # (BLOCK_N, HEAD_DIM)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        s, t = scores(qk, rows[:, None], cols[None, :], n_q, n_k, qk_scale, softcap_in, softcap_out, slope,
                      HAS_SOFTCAP, HAS_ALIBI)
        p = tl.exp2(s - lse[:, None])
        if MASKED:
            keep = visible(rows[:, None], cols[None, :], n_q, n_k, win_lo, win_hi, b, h, aux_ptr,
                           HAS_WINDOW, USE_MASK_MOD, MASK_MOD, HAS_MASK_AUX)
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        ds = p * (dp - delta[:, None])
        if HAS_SOFTCAP:
            ds = ds * (1.0 - t * t)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def variant_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, slopes_ptr, cu_q_ptr, cu_k_ptr,
    bm_kv_num_ptr, bm_kv_idx_ptr, aux_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    stride_slb, stride_slh,
    H, GROUP, N_Q, N_K, D, LSE_N, qk_scale, scale, softcap_in, softcap_out, win_left, win_right,
    MASK_B, MASK_H, MASK_QB, MASK_KB,
    TUNE_N,
    HEAD_DIM: tl.constexpr, PAD_D: tl.constexpr, PRECISION: tl.constexpr,
    HAS_WINDOW: tl.constexpr, ALIGN_BOTTOM_RIGHT: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    HAS_ALIBI: tl.constexpr, IS_VARLEN: tl.constexpr,
    HAS_BLOCK_MASK: tl.constexpr, MASK_MOD: tl.constexpr, HAS_MASK_AUX: tl.constexpr,
    MASK_BLOCK: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    tl.static_assert(HEAD_DIM >= 16 and BLOCK_N >= 16, "tl.dot needs HEAD_DIM and BLOCK_N >= 16")
    tl.static_assert(MASK_BLOCK % BLOCK_M == 0 and MASK_BLOCK % BLOCK_N == 0,
                     "a block mask's block must be a multiple of the kernel's tiles")
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    q0, n_q, k0, n_k = doc_bounds(cu_q_ptr, cu_k_ptr, b, N_Q, N_K, IS_VARLEN)
    if IS_VARLEN:
        bt = b * 0
    else:
        bt = b

    m0 = pid_m * BLOCK_M
    rows = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = load_tile(q_ptr + bt * stride_qb + h * stride_qh + (q0 + rows[:, None]) * stride_qn
                  + offs_d[None, :] * stride_qd, rows, n_q, offs_d, D, True, PAD_D)
    do = load_tile(do_ptr + bt * stride_dob + h * stride_doh + (q0 + rows[:, None]) * stride_don
                   + offs_d[None, :] * stride_dod, rows, n_q, offs_d, D, True, PAD_D)
    lse = tl.load(lse_ptr + (bt * H + h) * LSE_N + q0 + rows, mask=rows < n_q, other=0.0)
    delta = tl.load(delta_ptr + (bt * H + h) * LSE_N + q0 + rows, mask=rows < n_q, other=0.0)
    k_base = k_ptr + bt * stride_kb + hk * stride_kh + k0 * stride_kn
    v_base = v_ptr + bt * stride_vb + hk * stride_vh + k0 * stride_vn
    if HAS_ALIBI:
        slope = tl.load(slopes_ptr + b * stride_slb + h * stride_slh) * 1.4426950408889634
    else:
        slope = 0.0
    win_lo, win_hi = window_offsets(n_q, n_k, win_left, win_right, ALIGN_BOTTOM_RIGHT)
    dq = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    live = m0 < n_q

    if HAS_BLOCK_MASK:
        qb = m0 // MASK_BLOCK
        row = ((b % MASK_B) * MASK_H + h % MASK_H) * MASK_QB + qb
        n_full = tl.load(bm_kv_num_ptr + 2 * row)
        n_part = tl.load(bm_kv_num_ptr + 2 * row + 1)
        for i in range(0, n_full):
            kb = tl.load(bm_kv_idx_ptr + row * MASK_KB + i)
            dq = variant_dq_tiles(
                dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                kb * MASK_BLOCK, kb * MASK_BLOCK + MASK_BLOCK, rows, offs_n, offs_d, n_q, n_k, D, qk_scale,
                softcap_in, softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
                not EVEN_K, False, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_N, PRECISION)
        for i in range(n_full, n_full + n_part):
            kb = tl.load(bm_kv_idx_ptr + row * MASK_KB + i)
            dq = variant_dq_tiles(
                dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                kb * MASK_BLOCK, kb * MASK_BLOCK + MASK_BLOCK, rows, offs_n, offs_d, n_q, n_k, D, qk_scale,
                softcap_in, softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
                True, False, HAS_SOFTCAP, HAS_ALIBI, True, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_N, PRECISION)
    else:
        if HAS_WINDOW:
            lo, full_lo, full_hi, hi = window_tiles(m0, n_k, win_lo, win_hi, BLOCK_M, BLOCK_N)
        else:
            lo = 0
            full_lo = 0
            full_hi = (n_k // BLOCK_N) * BLOCK_N
            hi = n_k
        hi = tl.where(live, hi, 0)
        dq = variant_dq_tiles(
            dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            lo, tl.minimum(full_lo, hi), rows, offs_n, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out,
            slope, win_lo, win_hi, b, h, aux_ptr,
            True, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_N, PRECISION)
        dq = variant_dq_tiles(
            dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            full_lo, tl.minimum(full_hi, hi), rows, offs_n, offs_d, n_q, n_k, D, qk_scale, softcap_in,
            softcap_out, slope, win_lo, win_hi, b, h, aux_ptr,
            False, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_N, PRECISION)
        dq = variant_dq_tiles(
            dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
            full_hi, hi, rows, offs_n, offs_d, n_q, n_k, D, qk_scale, softcap_in, softcap_out,
            slope, win_lo, win_hi, b, h, aux_ptr,
            True, HAS_WINDOW, HAS_SOFTCAP, HAS_ALIBI, False, MASK_MOD, HAS_MASK_AUX, PAD_D, BLOCK_N, PRECISION)

    dq_ptrs = (dq_ptr + bt * stride_dqb + h * stride_dqh + (q0 + rows[:, None]) * stride_dqn
               + offs_d[None, :] * stride_dqd)
    tl.store(dq_ptrs, (dq * scale).to(dq_ptr.dtype.element_ty), mask=(rows < n_q)[:, None] & (offs_d < D)[None, :])


# ----------------------------------------------------------------------------- the schedule, on the host

SKIPPED, MASKED, UNMASKED = 0, 1, 2


def window_tile_kinds(n_q: int, n_k: int, window_size, *, bottom_right: bool = True, block_m: int = 128,
                      block_n: int = 64) -> list[list[int]]:
    """The forward's schedule for one head under a window: per query tile, per key tile,
    ``SKIPPED`` (outside the loop bounds), ``MASKED`` (a boundary tile: the mask is evaluated) or
    ``UNMASKED``; the same arithmetic as ``window_tiles`` in the kernel (post 6's tile maps).
    ``window_size`` = (left, right), -1 unbounded; ``bottom_right`` as ``Launch``."""
    left, right = window_size
    left = UNBOUNDED if left < 0 else left
    right = UNBOUNDED if right < 0 else right
    diag = n_k - n_q if bottom_right else 0
    win_lo, win_hi = diag - left, diag + right
    rows = []
    for m0 in range(0, n_q, block_m):
        lo = (max(m0 + win_lo, 0) // block_n) * block_n
        hi = min(n_k, max(m0 + block_m + win_hi, 0))
        full_lo = max(lo, m0 + block_m - 1 + win_lo)
        full_lo = min(hi, ((full_lo + block_n - 1) // block_n) * block_n)
        full_hi = max(full_lo, min((max(m0 + win_hi + 1, 0) // block_n) * block_n, (n_k // block_n) * block_n))
        row = []
        for n0 in range(0, n_k, block_n):
            unmasked = full_lo <= n0 < min(full_hi, hi)
            masked = (lo <= n0 < min(full_lo, hi)) or (full_hi <= n0 < hi)
            row.append(UNMASKED if unmasked else MASKED if masked else SKIPPED)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- launch

NO_MASK_BLOCK = 256  # MASK_BLOCK without a block mask: any multiple of every tile satisfies the asserts
FWD_KEY = ("TUNE_N", "HEAD_DIM", "PRECISION", "HAS_WINDOW", "HAS_SOFTCAP", "HAS_ALIBI", "HAS_SINKS",
           "IS_VARLEN", "HAS_BLOCK_MASK")
BWD_KEY = ("TUNE_N", "HEAD_DIM", "PRECISION", "HAS_WINDOW", "HAS_SOFTCAP", "HAS_ALIBI", "IS_VARLEN",
           "HAS_BLOCK_MASK")


# fp32 inputs with precision="ieee" have no tensor-core dot: Triton lowers tl.dot to FMAs with each
# thread holding whole rows of both operands, so post 3's tiles (sized for fp16/bf16 MMA) spill
# kilobytes per thread. Compiled for sm90 (Triton 3.9, every variant switch on, D = 64): the dK/dV
# kernel at (32, 128, 4 warps) needed a 14 KB stack, the forward at (128, 64, 8) 9 KB, dQ 10 KB.
# The driver reserves a kernel's stack for every thread the GPU can hold (2048 x 132 SMs on an
# H100), so one such launch pins ~4 GB per process for the process's lifetime. These tiles keep
# the stack under 0.5 KB (dK/dV (16, 16): 16 B, forward (32, 32): 0 B, dQ (32, 32): 8 B).
FMA_TILES = {
    "fwd": {64: [(32, 32, 4, 2), (32, 16, 4, 2)], 128: [(32, 16, 4, 2), (16, 16, 4, 1)], 256: [(16, 16, 4, 1)]},
    "dkdv": {64: [(16, 16, 4, 1), (16, 32, 4, 2)], 128: [(16, 16, 4, 1)], 256: [(16, 16, 4, 1)]},
    "dq": {64: [(32, 32, 4, 2), (32, 16, 4, 2)], 128: [(32, 16, 4, 2), (16, 16, 4, 1)], 256: [(16, 16, 4, 1)]},
}


@functools.cache
def tuned_kernel(name: str, mask_block: int, fma: bool = False) -> TunedKernel:
    """The variant kernel ``name`` ("fwd", "dkdv", "dq") with post 3's candidate tiles (``fma``: the
    small ``FMA_TILES`` of fp32 "ieee" inputs), keeping those that divide the block mask's block
    (all of them without a block mask)."""
    kernel, tiles, key = {"fwd": (variant_fwd_kernel, FWD_TILES, FWD_KEY),
                          "dkdv": (variant_dkdv_kernel, DKDV_TILES, BWD_KEY),
                          "dq": (variant_dq_kernel, DQ_TILES, BWD_KEY)}[name]
    if fma:
        tiles = FMA_TILES[name]
    kept = {d: [t for t in ts if mask_block % t[0] == 0 and mask_block % t[1] == 0] for d, ts in tiles.items()}
    return TunedKernel(f"variant-{name}{'-fma' if fma else ''}", kernel, kept, key=key)


@functools.cache
def _dummy(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # What an absent optional tensor's pointer argument points at; the kernel never reads it.
    return torch.zeros(4, dtype=dtype, device=device)


class Launch:
    """The arguments one variant call's three kernels share, from validated inputs.

    q4, k4, v4: (B, H, N, D) views; for packed documents (B = 1, H, total, D) views of the
    (total, H, D) inputs. ``window``: (left, right) with -1 unbounded, or None; ``bottom_right``:
    the window's diagonal is i + Nk - Nq (FlashAttention) instead of i. ``slopes`` (H,) or
    (B, H) fp32, ``sinks`` (H,), ``cu_q``/``cu_k`` int32 (docs + 1,) with ``max_q``/``max_k``,
    ``block_mask`` a ``kernels.block_mask.BlockMask``: each optional.
    """

    def __init__(self, q4, k4, v4, scale: float, precision: str, *, window=None, bottom_right=True,
                 softcap: float = 0.0, slopes=None, sinks=None, cu_q=None, cu_k=None, max_q=0, max_k=0,
                 block_mask=None):
        self.q4, self.k4, self.v4, self.scale = q4, k4, v4, scale
        self.slopes, self.sinks, self.cu_q, self.cu_k, self.block_mask = slopes, sinks, cu_q, cu_k, block_mask
        dev = q4.device
        B, H, NQ, D = q4.shape
        H_KV, NK = k4.shape[1], k4.shape[2]
        self.varlen = cu_q is not None
        self.docs = cu_q.numel() - 1 if self.varlen else B
        self.rows_q, self.rows_k = (max_q, max_k) if self.varlen else (NQ, NK)  # the grid's lengths
        head_dim = padded_head_dim(D)
        mask_block = block_mask.block if block_mask is not None else NO_MASK_BLOCK
        self.mask_block = mask_block
        self.fma = q4.dtype == torch.float32 and precision == "ieee"  # no tensor cores: FMA_TILES
        left, right = window if window is not None else (-1, -1)
        self.meta_common = dict(
            HEAD_DIM=head_dim, PAD_D=head_dim != D, PRECISION=precision,
            HAS_WINDOW=window is not None, ALIGN_BOTTOM_RIGHT=bool(bottom_right), HAS_SOFTCAP=softcap > 0,
            HAS_ALIBI=slopes is not None)
        self.meta_tail = dict(HAS_BLOCK_MASK=block_mask is not None,
                              MASK_MOD=block_mask.mask_mod if block_mask is not None else _no_mask,
                              HAS_MASK_AUX=block_mask is not None and block_mask.aux is not None,
                              MASK_BLOCK=mask_block)
        i32 = _dummy(dev, torch.int32)
        f32 = _dummy(dev, torch.float32)
        if slopes is None:
            self.slopes_arg, self.slope_strides = f32, (0, 0)
        elif slopes.dim() == 1:
            self.slopes_arg, self.slope_strides = slopes, (0, slopes.stride(0))
        else:
            self.slopes_arg, self.slope_strides = slopes, slopes.stride()
        self.cu = (cu_q, cu_k) if self.varlen else (i32, i32)
        if block_mask is not None:
            bm = block_mask
            self.bm_kv = (bm.kv_num, bm.kv_idx)
            self.bm_q = (bm.q_num, bm.q_idx)
            self.aux = bm.aux if bm.aux is not None else i32
            self.mask_sizes = (bm.B, bm.H, bm.q_blocks, bm.kv_blocks)
        else:
            self.bm_kv = self.bm_q = (i32, i32)
            self.aux = i32
            self.mask_sizes = (1, 1, 1, 1)
        if softcap > 0:
            self.softcap_args = (scale / softcap, softcap * LOG2E)
        else:
            self.softcap_args = (0.0, 0.0)
        self.win = (UNBOUNDED if left < 0 else left, UNBOUNDED if right < 0 else right)
        self.lse_n = NQ  # varlen: q4 is (1, H, total_q, D), so the lse row length is total_q
        self.n_tune = tune_n(self.rows_q, self.rows_k)
        self.sizes = (H, H_KV, H // H_KV, self.rows_q, self.rows_k, D)
        self.even_q = block_mask is None or NQ % mask_block == 0
        self.even_k = block_mask is None or NK % mask_block == 0

    def forward(self, tile=None):
        """(o4, lse): o4 shaped like q4 (a (1, H, total, D) view of a (total, H, D) tensor for
        packed documents), lse fp32 (B, H, Nq) in log2 units, +inf on rows with no key."""
        q4, k4, v4 = self.q4, self.k4, self.v4
        B, H, NQ, D = q4.shape
        if self.varlen:
            o4 = new_output((NQ, H, D), dtype=q4.dtype, device=q4.device).permute(1, 0, 2)[None]
        else:
            o4 = new_output((B, H, NQ, D), dtype=q4.dtype, device=q4.device)
        lse = new_output((B, H, NQ), dtype=torch.float32, device=q4.device)
        sinks = self.sinks if self.sinks is not None else _dummy(q4.device, torch.float32)
        H_, H_KV, group, rows_q, rows_k, D_ = self.sizes
        meta = dict(self.meta_common, HAS_SINKS=self.sinks is not None, IS_VARLEN=self.varlen,
                    **self.meta_tail, EVEN_K=self.even_k, FUSED=self.scale > 0)
        docs = self.docs
        tuned_kernel("fwd", self.mask_block, self.fma)(
            lambda bm, bn: (triton.cdiv(rows_q, bm), docs * H),
            (q4, k4, v4, o4, lse, self.slopes_arg, sinks, *self.cu, *self.bm_kv, self.aux),
            (*q4.stride(), *k4.stride(), *v4.stride(), *o4.stride(), *self.slope_strides,
             H, group, rows_q, rows_k, D, self.lse_n, self.scale * LOG2E, *self.softcap_args, *self.win,
             *self.mask_sizes, self.n_tune),
            meta, (self.n_tune, q4.dtype), tile=tile)
        return o4, lse

    def backward(self, do4, o4, lse, tiles=None):
        """(dq, dk, dv, dsinks) shaped like q4, k4, v4 and sinks (dsinks None without sinks)."""
        q4, k4, v4 = self.q4, self.k4, self.v4
        tiles = tiles or {}
        B, H, NQ, D = q4.shape
        H_, H_KV, group, rows_q, rows_k, D_ = self.sizes
        delta = flash_preprocess(o4, do4)  # (B, H, Nq): rowsum(dO * O), unchanged by every variant
        meta = dict(self.meta_common, IS_VARLEN=self.varlen, **self.meta_tail)
        dq, dk, dv = (self._like(t) for t in (q4, k4, v4))
        docs = self.docs
        common = (H, group, rows_q, rows_k, D, self.lse_n, self.scale * LOG2E, self.scale,
                  *self.softcap_args, *self.win, *self.mask_sizes, self.n_tune)
        key = (self.n_tune, q4.dtype, do4.dtype)
        tuned_kernel("dkdv", self.mask_block, self.fma)(
            lambda bm, bn: (triton.cdiv(rows_k, bn), docs * H_KV),
            (q4, k4, v4, do4, lse, delta, dk, dv, self.slopes_arg, *self.cu, *self.bm_q, self.aux),
            (*q4.stride(), *k4.stride(), *v4.stride(), *do4.stride(), *dk.stride(), *dv.stride(),
             *self.slope_strides, H, H_KV, *common[1:]),
            dict(meta, EVEN_Q=self.even_q), key, tile=tiles.get("dkdv"))
        tuned_kernel("dq", self.mask_block, self.fma)(
            lambda bm, bn: (triton.cdiv(rows_q, bm), docs * H),
            (q4, k4, v4, do4, lse, delta, dq, self.slopes_arg, *self.cu, *self.bm_kv, self.aux),
            (*q4.stride(), *k4.stride(), *v4.stride(), *do4.stride(), *dq.stride(), *self.slope_strides,
             *common),
            dict(meta, EVEN_K=self.even_k), key, tile=tiles.get("dq"))
        dsinks = None
        if self.sinks is not None:
            # The sink's weight in each row is P_sink = exp2(sink - lse); its score gradient is
            # P_sink * (dP_sink - delta) with dP_sink = 0 (a sink has no value): -P_sink * delta.
            p_sink = torch.exp2(self.sinks.float()[None, :, None] * LOG2E - lse)
            dsinks = -(p_sink * delta).sum(dim=(0, 2)).to(self.sinks.dtype)
        return dq, dk, dv, dsinks

    def _like(self, t):
        # A gradient buffer with t's logical shape; packed documents keep the (total, H, D) layout.
        if self.varlen:
            return new_output((t.shape[2], t.shape[1], t.shape[3]), dtype=t.dtype, device=t.device).permute(1, 0, 2)[None]
        return new_output(t.shape, dtype=t.dtype, device=t.device)
