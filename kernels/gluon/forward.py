"""Post 5: a warp-specialised FlashAttention forward for Hopper, in Gluon.

The pointer kernel in ``kernels/flash.py`` leaves scheduling to the compiler. Here it is written
out (FlashAttention-3's plan, https://arxiv.org/abs/2407.08608, section 3):

- a *producer* warp copies K and V tiles into a ring of shared-memory stages with TMA
  (the bulk tensor copy engine), one mbarrier per stage saying "full" and one saying
  "empty";
- two *consumer* warpgroups (4 warps each) own 64 query rows apiece and run the
  matmuls on the tensor cores with ``wgmma`` (``warpgroup_mma``) and the online
  softmax in registers. Their instruction streams are independent, so while one runs
  its softmax the other's matmuls can occupy the tensor cores;
- registers move from the producer (which needs almost none) to the consumers.

Both consumers read the same K/V stage, so each stage is released only after both have
arrived on its "empty" barrier. Gluon (``triton.experimental.gluon``) exposes warps,
barriers and asynchronous copies directly; see Triton's Gluon tutorials
(https://github.com/triton-lang/triton/tree/main/python/tutorials/gluon).

Scope: sm90 GPUs, fp16/bf16, head dim 64 or 128, contiguous (B, H, N, D) inputs,
grouped-query attention, causal (top-left, as ``flash.py``) or not, any lengths.
``hopper_problem(...)`` says why an input is outside it; ``kernels.flash_attention`` runs
the pointer kernel there. Gluon kernels do not run in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch
import triton

from ..launch import DIRECT
from ..runtime import check_attention_inputs, new_output
from ..settings import SETTINGS
from .common import (
    CONSUMER_REGS, GLUON_IMPORT_ERROR, HEAD_DIMS, LOG2E, MAXNREG, PRODUCER_REGS, ROWS, LaunchPlan, PlanCache,
    acc_layout, descriptor, fence_async_shared, gl, gluon, gluon_problem, mbarrier, rebind, ring_barriers, ring_free,
    ring_wait, template, tensor_key, tma_load, warpgroup_mma, warpgroup_mma_wait,
)

if GLUON_IMPORT_ERROR is None:
    import triton.profiler.language as pl  # Proton's in-kernel scopes (scripts/timeline.py)

ROWS_PER_WARPGROUP = ROWS
# (BLOCK_N, STAGES) per head dim: two K/V stages of 128 keys at D = 128 are 128 KB of the
# 227 KB of shared memory an SM offers a block, plus 32 KB for the two Q tiles.
TILES = {64: (128, 3), 128: (128, 2)}
# How each consumer warpgroup orders its work: "serial" (S, softmax, PV, each waited for),
# "pipelined" (FA3's intra-warpgroup overlap: S(t) and PV(t-1) in flight together, softmax
# under PV), "pingpong" (the two warpgroups take turns at the tensor cores). Serial and
# ping-pong are defaults (below); pipelined is post 5's measured alternative and the base of
# the FA4 schedule work (issue 23).
SCHEDULES = ("serial", "pipelined", "pingpong")
# The schedule run when none is asked for, per (head dim, causal): ping-pong where it beat the
# serial loop beyond the timing noise at every production length it runs at (N >= 4096), serial
# elsewhere (PERF_NOTES.md, session 7: `python scripts/hopper_check.py --sweep`).
DEFAULT_SCHEDULES = {(128, False): "pingpong"}


if GLUON_IMPORT_ERROR is None:
    _M = gl.constexpr(ROWS)  # kernels read globals only as constexprs

    @gluon.jit
    def mark(name: gl.constexpr, start: gl.constexpr, PROFILE: gl.constexpr):
        """A Proton timestamp record (scripts/timeline.py). PROFILE is a constexpr, so the kernel
        that flash_attention runs carries no records at all."""
        if PROFILE:
            if start:
                pl.enter_scope(name)
            else:
                pl.exit_scope(name)

    @gluon.jit
    def query_block(N_Q, IS_CAUSAL: gl.constexpr, LPT: gl.constexpr):
        """This program's block of 2 * 64 query rows. Causal: the last blocks have the most keys
        to visit, so they are handed out first and the final wave of programs is the short one."""
        pid = gl.program_id(0)
        if IS_CAUSAL and LPT:
            pid = gl.cdiv(N_Q, 2 * _M) - 1 - pid
        return pid

    @gluon.jit
    def consume(
        q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty,
        acc, l_i, m_i, rows, t_lo, t_hi, N_K, qk_scale,
        MASKED: gl.constexpr, IS_CAUSAL: gl.constexpr,
        BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
        s_layout: gl.constexpr, p_layout: gl.constexpr, o_layout: gl.constexpr, PROFILE: gl.constexpr = False,
    ):
        M: gl.constexpr = _M
        for t in range(t_lo, t_hi):
            mark("wait K", True, PROFILE)
            stage = ring_wait(k_ready, t, STAGES)
            mark("wait K", False, PROFILE)
            mark("QK^T", True, PROFILE)
            k_tile = k_bufs.index(stage)  # (BLOCK_N, HEAD_DIM) in shared memory
            # S = Q K^T on the tensor cores; K^T is a transposed *view* that wgmma reads directly.
            qk = warpgroup_mma(q_smem, k_tile.permute((1, 0)), gl.zeros([M, BLOCK_N], gl.float32, s_layout),
                               use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))  # (M, BLOCK_N) fp32, unscaled
            mark("QK^T", False, PROFILE)
            mark("softmax", True, PROFILE)
            p, alpha, m_new, l_i = softmax_tile(qk, m_i, l_i, rows, t, N_K, qk_scale, MASKED, IS_CAUSAL,
                                                BLOCK_N, s_layout)
            acc, p_op = rescale_and_pack(acc, alpha, p, k_bufs.dtype, o_layout, p_layout)
            mark("softmax", False, PROFILE)
            mark("wait V", True, PROFILE)
            ring_wait(v_ready, t, STAGES)
            mark("wait V", False, PROFILE)
            mark("PV", True, PROFILE)
            acc = warpgroup_mma(p_op, v_bufs.index(stage), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
            mark("PV", False, PROFILE)
            mbarrier.arrive(kv_empty.index(stage), count=1)  # this consumer is done with the stage
            m_i = m_new
        return acc, l_i, m_i

    @gluon.jit
    def rescale_and_pack(acc, alpha, p, dtype: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr):
        """The running output rescaled by alpha, and P cast to ``dtype`` as wgmma's register A
        operand (P goes to the second matmul from registers: no trip through shared memory)."""
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
        return acc, gl.convert_layout(p.to(dtype), p_layout)

    @gluon.jit
    def softmax_tile(qk, m_i, l_i, rows, t, N_K, qk_scale, MASKED, IS_CAUSAL: gl.constexpr,
                      BLOCK_N: gl.constexpr, s_layout: gl.constexpr):
        """One tile's online-softmax step: returns (p, alpha, m_new, l_new), p unnormalised fp32."""
        if MASKED:
            cols = t * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
            keep = gl.expand_dims(cols < N_K, 0)
            if IS_CAUSAL:
                keep = keep & (gl.expand_dims(rows, 1) >= gl.expand_dims(cols, 0))
            # -inf: those keys get a weight of exactly exp2(-inf) = 0. Keys past N_K are the
            # next head's rows (or TMA's zero fill), never data of this head.
            s = gl.where(keep, qk * qk_scale, float("-inf"))
            m_new = gl.maximum(m_i, gl.max(s, 1))
            p = gl.exp2(s - gl.expand_dims(m_new, 1))
        else:
            # qk_scale > 0: the scaled row max is the row max scaled, and the scale and the
            # subtraction ride in one FMA per score.
            m_new = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
            p = gl.exp2(qk * qk_scale - gl.expand_dims(m_new, 1))
        alpha = gl.exp2(m_i - m_new)  # rescales what was summed under the old max
        return p, alpha, m_new, l_i * alpha + gl.sum(p, 1)

    @gluon.jit
    def consume_pipelined(
        q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty,
        acc, l_i, m_i, rows, t_full, t_hi, N_K, qk_scale,
        IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
        s_layout: gl.constexpr, p_layout: gl.constexpr, o_layout: gl.constexpr,
    ):
        """FlashAttention-3's intra-warpgroup overlap: tile t's S = QK^T and tile t-1's O += PV
        are issued together, and tile t's softmax runs while the PV product is in flight.
        Tiles [0, t_full) are unmasked, [t_full, t_hi) masked; t_hi >= 1."""
        M: gl.constexpr = _M
        zero_s = gl.zeros([M, BLOCK_N], gl.float32, s_layout)
        # Prologue: tile 0's scores and softmax.
        mbarrier.wait(k_ready.index(0), 0)
        qk = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
        p, alpha, m_i, l_i = softmax_tile(qk, m_i, l_i, rows, 0, N_K, qk_scale, t_full == 0, IS_CAUSAL,
                                          BLOCK_N, s_layout)
        p_op = gl.convert_layout(p.to(k_bufs.dtype), p_layout)
        for t in range(1, t_hi):
            stage = ring_wait(k_ready, t, STAGES)
            qk = warpgroup_mma(q_smem, k_bufs.index(stage).permute((1, 0)), zero_s, use_acc=False, is_async=True)
            prev = ring_wait(v_ready, t - 1, STAGES)
            acc = warpgroup_mma(p_op, v_bufs.index(prev), acc, is_async=True)
            # wgmma groups retire in order: at most one outstanding means S is ready, PV may not be.
            qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk,))
            p, alpha, m_i, l_i = softmax_tile(qk, m_i, l_i, rows, t, N_K, qk_scale, t >= t_full, IS_CAUSAL,
                                              BLOCK_N, s_layout)
            acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
            mbarrier.arrive(kv_empty.index(prev), count=1)
            acc, p_op = rescale_and_pack(acc, alpha, p, k_bufs.dtype, o_layout, p_layout)
        last = ring_wait(v_ready, t_hi - 1, STAGES)
        acc = warpgroup_mma(p_op, v_bufs.index(last), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(kv_empty.index(last), count=1)
        return acc, l_i, m_i

    @gluon.jit
    def turn(turn_bars, k, WARPGROUP: gl.constexpr):
        """Wait for this warpgroup's k-th turn at the tensor cores. Warpgroup 0 goes first: its
        turn barrier counts as having completed the phase before phase 0."""
        mbarrier.wait(turn_bars.index(WARPGROUP), (k & 1) ^ (1 - WARPGROUP))

    @gluon.jit
    def pingpong_block(
        q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, turn_bars,
        acc, p_op, m_i, l_i, rows, t, N_K, qk_scale,
        MASKED: gl.constexpr, IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
        WARPGROUP: gl.constexpr, s_layout: gl.constexpr, p_layout: gl.constexpr, o_layout: gl.constexpr,
        PROFILE: gl.constexpr = False,
    ):
        """Turn t: O += P(t-1) V(t-1) and S(t) = Q K(t)^T back to back, then hand the tensor cores
        to the other warpgroup and run tile t's softmax while its matmuls run."""
        M: gl.constexpr = _M
        mark("wait K/V", True, PROFILE)
        prev = ring_wait(v_ready, t - 1, STAGES)
        stage = ring_wait(k_ready, t, STAGES)
        mark("wait K/V", False, PROFILE)
        mark("wait turn", True, PROFILE)
        turn(turn_bars, t, WARPGROUP)
        mark("wait turn", False, PROFILE)
        mark("PV + QK^T", True, PROFILE)
        acc = warpgroup_mma(p_op, v_bufs.index(prev), acc, is_async=True)
        qk = warpgroup_mma(q_smem, k_bufs.index(stage).permute((1, 0)), gl.zeros([M, BLOCK_N], gl.float32, s_layout),
                           use_acc=False, is_async=True)
        mbarrier.arrive(turn_bars.index(1 - WARPGROUP), count=1)
        acc, p_op = warpgroup_mma_wait(num_outstanding=1, deps=(acc, p_op))
        mbarrier.arrive(kv_empty.index(prev), count=1)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
        mark("PV + QK^T", False, PROFILE)
        mark("softmax", True, PROFILE)
        p, alpha, m_i, l_i = softmax_tile(qk, m_i, l_i, rows, t, N_K, qk_scale, MASKED, IS_CAUSAL,
                                          BLOCK_N, s_layout)
        acc, p_op = rescale_and_pack(acc, alpha, p, k_bufs.dtype, o_layout, p_layout)
        mark("softmax", False, PROFILE)
        return acc, p_op, m_i, l_i

    @gluon.jit
    def consume_pingpong(
        q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, turn_bars,
        acc, l_i, m_i, rows, t_full, t_hi, t_all, N_K, qk_scale,
        IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, WARPGROUP: gl.constexpr,
        s_layout: gl.constexpr, p_layout: gl.constexpr, o_layout: gl.constexpr, PROFILE: gl.constexpr = False,
    ):
        """FlashAttention-3's ping-pong: the two consumer warpgroups take turns at the tensor
        cores (turn barriers), so one's softmax always runs under the other's matmuls. Each
        warpgroup takes t_all + 1 turns, the shorter one (causal) with empty turns at the end,
        so neither waits for a turn the other never hands over."""
        M: gl.constexpr = _M
        # Turn 0: S(0) alone.
        mark("wait K/V", True, PROFILE)
        mbarrier.wait(k_ready.index(0), 0)
        mark("wait K/V", False, PROFILE)
        mark("wait turn", True, PROFILE)
        turn(turn_bars, 0, WARPGROUP)
        mark("wait turn", False, PROFILE)
        mark("QK^T", True, PROFILE)
        qk = warpgroup_mma(q_smem, k_bufs.index(0).permute((1, 0)), gl.zeros([M, BLOCK_N], gl.float32, s_layout),
                           use_acc=False, is_async=True)
        mbarrier.arrive(turn_bars.index(1 - WARPGROUP), count=1)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
        mark("QK^T", False, PROFILE)
        mark("softmax", True, PROFILE)
        p, alpha, m_i, l_i = softmax_tile(qk, m_i, l_i, rows, 0, N_K, qk_scale, t_full == 0, IS_CAUSAL,
                                          BLOCK_N, s_layout)
        p_op = gl.convert_layout(p.to(k_bufs.dtype), p_layout)
        mark("softmax", False, PROFILE)
        # Turns 1 .. t_hi - 1: unmasked tiles, then the masked ones.
        for t in range(1, gl.maximum(t_full, 1)):
            acc, p_op, m_i, l_i = pingpong_block(q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, turn_bars,
                                                 acc, p_op, m_i, l_i, rows, t, N_K, qk_scale,
                                                 False, IS_CAUSAL, BLOCK_N, STAGES, WARPGROUP,
                                                 s_layout, p_layout, o_layout, PROFILE)
        for t in range(gl.maximum(t_full, 1), t_hi):
            acc, p_op, m_i, l_i = pingpong_block(q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, turn_bars,
                                                 acc, p_op, m_i, l_i, rows, t, N_K, qk_scale,
                                                 True, IS_CAUSAL, BLOCK_N, STAGES, WARPGROUP,
                                                 s_layout, p_layout, o_layout, PROFILE)
        # Turn t_hi: the last PV.
        mark("wait K/V", True, PROFILE)
        last = ring_wait(v_ready, t_hi - 1, STAGES)
        mark("wait K/V", False, PROFILE)
        mark("wait turn", True, PROFILE)
        turn(turn_bars, t_hi, WARPGROUP)
        mark("wait turn", False, PROFILE)
        mark("PV", True, PROFILE)
        acc = warpgroup_mma(p_op, v_bufs.index(last), acc, is_async=True)
        mbarrier.arrive(turn_bars.index(1 - WARPGROUP), count=1)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mark("PV", False, PROFILE)
        mbarrier.arrive(kv_empty.index(last), count=1)
        # Causal: empty turns, and the stages loaded for the other warpgroup only are released.
        for t in range(t_hi, t_all):
            stage = ring_wait(k_ready, t, STAGES)
            ring_wait(v_ready, t, STAGES)
            turn(turn_bars, t + 1, WARPGROUP)
            mbarrier.arrive(turn_bars.index(1 - WARPGROUP), count=1)
            mbarrier.arrive(kv_empty.index(stage), count=1)
        return acc, l_i, m_i

    @gluon.jit
    def release(k_ready, v_ready, kv_empty, t_lo, t_hi, STAGES: gl.constexpr):
        """Causal: the other warpgroup's rows reach further; release the stages it still needs."""
        for t in range(t_lo, t_hi):
            stage = ring_wait(k_ready, t, STAGES)
            ring_wait(v_ready, t, STAGES)
            mbarrier.arrive(kv_empty.index(stage), count=1)

    @gluon.jit
    def consumer(
        q_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty, turn_bars,
        o_ptr, lse_ptr, stride_ob, stride_oh, stride_on, H, N_Q, N_K, qk_scale,
        WARPGROUP: gl.constexpr, IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
        SCHEDULE: gl.constexpr, LPT: gl.constexpr, PROFILE: gl.constexpr,
    ):
        M: gl.constexpr = _M
        HEAD_DIM: gl.constexpr = q_bufs.type.shape[2]
        s_layout: gl.constexpr = acc_layout(BLOCK_N)  # S = Q K^T
        o_layout: gl.constexpr = acc_layout(HEAD_DIM)  # the running output
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

        pid_m = query_block(N_Q, IS_CAUSAL, LPT)
        bh = gl.program_id(1).to(gl.int64)  # int64: b * stride_ob passes 2**31 on large tensors
        b = bh // H
        h = bh % H
        m0 = pid_m * (2 * M) + WARPGROUP * M  # this warpgroup's first query row
        rows = m0 + gl.arange(0, M, layout=gl.SliceLayout(1, s_layout))

        m_i = gl.full([M], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))  # running max, log2 units
        l_i = gl.zeros([M], gl.float32, gl.SliceLayout(1, s_layout))  # running sum of exp2(s - m_i)
        acc = gl.zeros([M, HEAD_DIM], gl.float32, o_layout)  # running, unnormalised output

        # Tiles [0, t_full) need no mask; [t_full, t_hi) are the diagonal (causal) and the
        # ragged last tile; [t_hi, t_all) are loaded for the other warpgroup only.
        t_full = N_K // BLOCK_N
        hi = N_K
        hi_all = N_K
        if IS_CAUSAL:
            t_full = gl.minimum(t_full, m0 // BLOCK_N)  # keys before m0 are visible to every row here
            hi = gl.minimum(N_K, m0 + M)
            hi_all = gl.minimum(N_K, pid_m * (2 * M) + 2 * M)
        t_hi = gl.cdiv(hi, BLOCK_N)
        t_all = gl.cdiv(hi_all, BLOCK_N)

        q_smem = q_bufs.index(WARPGROUP)
        mbarrier.wait(q_bar, 0)
        if SCHEDULE == "pingpong":
            acc, l_i, m_i = consume_pingpong(q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, turn_bars,
                                             acc, l_i, m_i, rows, t_full, t_hi, t_all, N_K, qk_scale,
                                             IS_CAUSAL, BLOCK_N, STAGES, WARPGROUP, s_layout, p_layout, o_layout,
                                             PROFILE)
        elif SCHEDULE == "pipelined":
            acc, l_i, m_i = consume_pipelined(q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty,
                                              acc, l_i, m_i, rows, t_full, t_hi, N_K, qk_scale,
                                              IS_CAUSAL, BLOCK_N, STAGES, s_layout, p_layout, o_layout)
        else:
            acc, l_i, m_i = consume(q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, acc, l_i, m_i, rows,
                                    0, t_full, N_K, qk_scale, False, IS_CAUSAL, BLOCK_N, STAGES,
                                    s_layout, p_layout, o_layout, PROFILE)
            acc, l_i, m_i = consume(q_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, acc, l_i, m_i, rows,
                                    t_full, t_hi, N_K, qk_scale, True, IS_CAUSAL, BLOCK_N, STAGES,
                                    s_layout, p_layout, o_layout, PROFILE)
        if SCHEDULE != "pingpong":  # (the ping-pong loop releases these itself)
            release(k_ready, v_ready, kv_empty, t_hi, t_all, STAGES)

        mark("epilogue", True, PROFILE)
        out = acc / gl.expand_dims(gl.convert_layout(l_i, gl.SliceLayout(1, o_layout)), 1)
        o_rows = m0 + gl.arange(0, M, layout=gl.SliceLayout(1, o_layout))
        o_cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
        o_ptrs = (o_ptr + b * stride_ob + h * stride_oh
                  + gl.expand_dims(o_rows, 1) * stride_on + gl.expand_dims(o_cols, 0))
        # Rows past N_Q were computed from the next head's queries (or zeros): never stored.
        gl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=gl.expand_dims(o_rows < N_Q, 1))
        # log2-sum-exp2 per row, the convention of flash.py's backward.
        gl.store(lse_ptr + bh * N_Q + rows, m_i + gl.log2(l_i), mask=rows < N_Q)
        mark("epilogue", False, PROFILE)

    @gluon.jit
    def producer(
        q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty,
        H, GROUP, N_Q, N_K,
        IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, LPT: gl.constexpr,
        PROFILE: gl.constexpr,
    ):
        M: gl.constexpr = _M
        pid_m = query_block(N_Q, IS_CAUSAL, LPT)
        bh = gl.program_id(1)
        b = bh // H
        hk = (bh % H) // GROUP  # grouped-query attention: GROUP query heads share one k/v head
        # The descriptors view q as (B*H*N_Q, D) and k, v as (B*H_KV*N_K, D); the launcher
        # checks those row counts fit TMA's int32 coordinates.
        q_row = bh * N_Q + pid_m * (2 * M)
        kv_row = (b * (H // GROUP) + hk) * N_K

        mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes)
        tma_load(q_desc, [q_row, 0], q_bar, q_bufs.index(0))
        tma_load(q_desc, [q_row + M, 0], q_bar, q_bufs.index(1))

        hi = N_K
        if IS_CAUSAL:
            hi = gl.minimum(N_K, pid_m * (2 * M) + 2 * M)
        for t in range(gl.cdiv(hi, BLOCK_N)):
            mark("wait empty", True, PROFILE)
            stage = ring_free(kv_empty, t, STAGES)
            mark("wait empty", False, PROFILE)
            mark("load K/V", True, PROFILE)
            # K and V land on separate barriers: the consumers start S = QK^T before V arrives.
            mbarrier.expect(k_ready.index(stage), k_desc.block_type.nbytes)
            tma_load(k_desc, [kv_row + t * BLOCK_N, 0], k_ready.index(stage), k_bufs.index(stage))
            mbarrier.expect(v_ready.index(stage), v_desc.block_type.nbytes)
            tma_load(v_desc, [kv_row + t * BLOCK_N, 0], v_ready.index(stage), v_bufs.index(stage))
            mark("load K/V", False, PROFILE)

    @gluon.jit
    def hopper_fwd_kernel(
        q_desc, k_desc, v_desc, o_ptr, lse_ptr,
        stride_ob, stride_oh, stride_on,
        H, GROUP, N_Q, N_K, qk_scale,
        IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
        CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr, SCHEDULE: gl.constexpr = "serial",
        LPT: gl.constexpr = True, PROFILE: gl.constexpr = False,
    ):
        M: gl.constexpr = _M
        HEAD_DIM: gl.constexpr = q_desc.block_type.shape[1]
        gl.static_assert(q_desc.block_type.shape[0] == M, "a Q tile is one warpgroup's 64 rows")
        gl.static_assert(k_desc.block_type.shape[0] == BLOCK_N, "K tiles are BLOCK_N rows")
        gl.static_assert(HEAD_DIM % 16 == 0, "wgmma's K step is 16 for 16-bit inputs")
        dtype: gl.constexpr = q_desc.dtype

        q_bufs = gl.allocate_shared_memory(dtype, [2, M, HEAD_DIM], q_desc.layout)  # one Q tile per consumer
        k_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
        v_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        turn_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())  # ping-pong
        mbarrier.init(q_bar, count=1)
        mbarrier.init(turn_bars.index(0), count=1)
        mbarrier.init(turn_bars.index(1), count=1)
        k_ready, v_ready, kv_empty = ring_barriers(STAGES)  # K and V land apart
        fence_async_shared()  # make the initialised barriers visible to the copy engine

        gl.warp_specialize([
            (consumer, (q_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty, turn_bars,
                         o_ptr, lse_ptr, stride_ob, stride_oh, stride_on, H, N_Q, N_K, qk_scale,
                         0, IS_CAUSAL, BLOCK_N, STAGES, SCHEDULE, LPT, PROFILE)),
            (consumer, (q_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty, turn_bars,
                         o_ptr, lse_ptr, stride_ob, stride_oh, stride_on, H, N_Q, N_K, qk_scale,
                         1, IS_CAUSAL, BLOCK_N, STAGES, SCHEDULE, LPT, PROFILE)),
            (producer, (q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty,
                         H, GROUP, N_Q, N_K, IS_CAUSAL, BLOCK_N, STAGES, LPT, PROFILE)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


# ----------------------------------------------------------------------------- launch


def hopper_problem(q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor) -> str | None:
    """Why the Gluon forward cannot take these (B, H, N, D) inputs, or None if it can."""
    return gluon_problem(q4, k4, v4)


# The router takes this kernel where it measured faster than the pointer kernel: long
# sequences. At N = 2048 it was slower at D = 64 and bf16 calls there took about 0.35 ms whatever
# the shape (docs/data/production.h100.json, PERF_NOTES.md session 6); from N = 4096 on it won.
AUTO_MIN_LEN = 4096


def auto_applies(q4, k4, v4, scale: float) -> bool:
    """Whether the router should run this kernel on (B, H, N, D) inputs by itself: the kernel
    takes them, they are long enough, and ``KERNELS_GLUON`` is not 0."""
    if not SETTINGS.gluon or scale <= 0 or min(q4.shape[2], k4.shape[2]) < AUTO_MIN_LEN:
        return False
    return hopper_problem(q4, k4, v4) is None


def default_schedule(head_dim: int, causal: bool) -> str:
    return DEFAULT_SCHEDULES.get((head_dim, causal), "serial")


def hopper_forward(q4, k4, v4, causal: bool, scale: float, *, schedule: str | None = None, lpt: bool = True,
                   stages: int | None = None, profile: bool = False):
    """Launch the Gluon forward on (B, H, N, D) inputs that ``hopper_problem`` accepts;
    returns (o4, lse in log2 units, compiled kernel). Switches for post 5's ablation:
    ``schedule`` is how each consumer orders its matmuls and softmax (SCHEDULES; None: the
    default for the head dim and mask, ``default_schedule``),
    ``lpt=False`` hands causal query blocks out in order instead of longest first,
    ``stages`` overrides the K/V ring's depth. ``profile=True`` compiles in Proton's
    timestamp records (run it inside a Proton instrumentation session: scripts/timeline.py)."""
    schedule = schedule or default_schedule(q4.shape[-1], causal)
    if schedule not in SCHEDULES:
        raise ValueError(f"hopper_forward: schedule must be one of {SCHEDULES}, got {schedule!r}")
    B, H, NQ, D = q4.shape
    o4 = new_output((B, H, NQ, D), dtype=q4.dtype, device=q4.device)
    lse = new_output((B, H, NQ), dtype=torch.float32, device=q4.device)
    key = ("fwd", tensor_key(q4), tensor_key(k4), tensor_key(v4), causal, scale, schedule, lpt, stages, profile)
    plan = PLANS.get(key) or PLANS.put(key, _plan(key, q4, k4, v4, o4, causal, scale, schedule, lpt, stages, profile))
    H_KV, NK = k4.shape[1], k4.shape[2]
    bases = (q4.view(B * H * NQ, D), k4.view(B * H_KV * NK, D), v4.view(B * H_KV * NK, D))
    if profile:  # through Triton's own launch path, where Proton's hooks see the launch
        descriptors = tuple(rebind(t, b) for t, b in zip(plan.templates, bases))
        compiled = hopper_fwd_kernel[plan.grid](*descriptors, o4, lse, *plan.scalars, **plan.constexprs,
                                                **plan.options)
    else:
        # The plan's descriptors over this call's tensors, through the compiled kernel's own launch
        # entry after the first call: building descriptors and Triton's binding of them cost
        # 143-222 us of host time per call (PERF_NOTES.md, session 6; issue 23).
        compiled = plan.launch(DIRECT, "gluon-fwd", hopper_fwd_kernel, bases, (o4, lse))
    return o4, lse, compiled


# Launch plans of the forward (common.LaunchPlan), one per shape, strides, dtype, device and switches.
PLANS = PlanCache()


def _plan(key, q4, k4, v4, o4, causal, scale, schedule, lpt, stages, profile) -> LaunchPlan:
    """The forward's launch for ``key`` (``hopper_forward``'s), built from the first call's tensors."""
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    block_n, default_stages = TILES[D]
    templates = (template(descriptor(q4.view(B * H * NQ, D), ROWS)),
                 template(descriptor(k4.view(B * H_KV * NK, D), block_n)),
                 template(descriptor(v4.view(B * H_KV * NK, D), block_n)))
    constexprs = dict(IS_CAUSAL=causal, BLOCK_N=block_n, STAGES=stages or default_stages,
                      CONSUMER_REGS=CONSUMER_REGS, PRODUCER_REGS=PRODUCER_REGS, SCHEDULE=schedule, LPT=lpt,
                      PROFILE=profile)
    return LaunchPlan(key=key, grid=(triton.cdiv(NQ, 2 * ROWS), B * H), templates=templates,
                      scalars=(*o4.stride()[:3], H, H // H_KV, NQ, NK, scale * LOG2E), constexprs=constexprs,
                      options=dict(num_warps=4, maxnreg=MAXNREG))


def hopper_attention(q, k, v, *, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """The Gluon forward alone (no autograd): q (B, H, Nq, D), k and v (B, Hkv, Nk, D).

    Raises ValueError when the inputs are outside the kernel's scope (``hopper_problem``);
    ``flash_attention(..., backend="gluon")`` is the same kernel with a backward.
    """
    scale = check_attention_inputs("hopper_attention", q, k, v, causal, scale, allow_gqa=True)
    if scale <= 0:
        raise ValueError(f"hopper_attention: scale must be > 0 (the fused softmax needs it), got {scale}")
    if q.dim() != 4:
        raise ValueError(f"hopper_attention: q must be (B, H, N, D), got {tuple(q.shape)}")
    problem = hopper_problem(q, k, v)
    if problem is not None:
        raise ValueError(f"hopper_attention: {problem}")
    return hopper_forward(q, k, v, causal, scale)[0]
