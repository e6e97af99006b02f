"""The attention backward's dK/dV pass for Hopper, in Gluon, in the style of ``forward.py``.

FlashAttention-3's backward (https://arxiv.org/abs/2407.08608, section 3 and the backward
algorithm in its appendix), dK and dV part: each program owns 128 keys of one (batch, k/v head) and keeps their K and V
tiles in shared memory while every query tile that can see them streams past.

- a *producer* warp copies K and V once with TMA, then streams (Q, dO) tile pairs of 64
  query rows, for every query head of the group (grouped-query attention), through a ring
  of shared-memory stages guarded by "ready" and "empty" mbarriers;
- two *consumer* warpgroups own 64 of the 128 keys each and run, per query tile, on the
  tensor cores (``warpgroup_mma``, wgmma):

      S^T  = K_wg Q^T                  (both operands in shared memory; Q^T a permuted view)
      P^T  = exp2(S^T * qk_scale - lse)  (lse in log2 units, as every forward here stores it)
      dV  += P^T dO                    (P^T from registers)
      dP^T = V_wg dO^T
      dS^T = P^T * (dP^T - delta)      (delta = rowsum(dO * O), ``flash.flash_preprocess``)
      dK  += dS^T Q                    (dS^T from registers)

  then store dK * scale and dV, rows past N_K masked. Working with the transposes keeps the
  accumulators dK, dV row-major like K and V and lets P^T and dS^T, already in registers,
  be wgmma's A operand with no trip through shared memory.

dQ is not computed here: a separate pass does it, the Gluon dQ kernel (``dq.py``) where the
router runs this kernel. FA3 adds dQ from inside this kernel instead, by TMA reduce-adds of fp32
partials; that variant was built and measured at commit f57d95b (PERF_NOTES.md, session 9): it
spilled at D = 128 and the whole backward with it was within a few percent of the two-pass one
with the causal mask, mixed at D = 128 without it and slower at D = 64 without it, so it was
removed. ``common.tma_reduce_add`` keeps the reduce-add for the next attempt.

Budget, per program, checked against the compiled kernel (``scripts/compile_hopper.py
--kernel dkdv``, Triton 3.6's ptxas, sm_90a):

- shared memory: K and V resident, 2 x 128 x D x 2 B (64 KB at D = 128, 32 KB at D = 64);
  per stage of the ring a Q and a dO tile, 2 x 64 x D x 2 B, with their 64 lse and delta
  values, 2 x 64 x 4 B (32.5 KB a stage at D = 128, 16.5 KB at D = 64); and the mbarriers.
  2 stages at D = 128 make 132,432 B, 3 at D = 64 make 83,840 B (compiled), within the
  227 KB an SM offers one block. One program per SM either way: registers decide that.
- registers per consumer thread (128 threads a warpgroup): dK and dV, 2 x 64 x D fp32 =
  128 at D = 128 (64 at D = 64); S^T and dP^T, 2 x 64 x 64 fp32 = 64; P^T and dS^T as
  16-bit A operands, 16 each; lse and delta, 16 each, briefly. That is the whole 240 the
  consumers get (``setmaxnreg``; the producer warp keeps 24): the compiled D = 128 kernel
  uses registers up to R237 and spills nothing. lse and delta travel by TMA with Q and dO
  and are read from shared memory where they are used: loaded from global memory instead,
  their loads were hoisted out of the loop with 64-bit addresses held in registers, and
  ptxas spilled 248 B per thread.

Scope: as ``forward.py`` (sm90, fp16/bf16, D 64 or 128, contiguous (B, H, N, D), GQA/MQA,
causal top-left as ``kernels/flash.py``, any Nq and Nk). ``hopper_bwd_problem`` says why an
input is outside it. Gluon kernels do not run in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch
import triton

from ..runtime import new_output
from .common import (
    CONSUMER_REGS, GLUON_IMPORT_ERROR, LOG2E, MAXNREG, PRODUCER_REGS, ROWS, LaunchPlan, PlanCache, acc_layout,
    descriptor, fence_async_shared, gl, gluon, gluon_problem, mbarrier, ring_barriers, ring_free, ring_wait,
    row_descriptor, template, tensor_key, tma_load, warpgroup_mma, warpgroup_mma_wait,
)
from ..launch import DIRECT
from .forward import auto_applies as forward_auto_applies

BLOCK_KEYS = 2 * ROWS  # keys per program: one 64-key slice per consumer warpgroup
# (Q, dO) stages in the ring per head dim: see the shared-memory budget above.
STAGES = {64: 3, 128: 2}
# How each consumer warpgroup orders its four products per query tile (see dkdv_tiles); the
# other order is post 5's measured alternative.
SCHEDULES = ("overlap", "serial")
# The order the router runs: "serial" was faster at all four timed shapes (B4 N8192, D 64/128,
# causal or not; one run on an H200, PERF_NOTES.md session 7), by 0.6-9%.
DEFAULT_SCHEDULE = "serial"


if GLUON_IMPORT_ERROR is None:
    _M = gl.constexpr(ROWS)  # kernels read globals only as constexprs

    @gluon.jit
    def dkdv_tiles(
        q_bufs, do_bufs, lse_bufs, delta_bufs, q_ready, do_ready, empty, k_smem, v_smem,
        dk, dv, it, m_start, m_end, keys, N_Q, qk_scale,
        MASKED: gl.constexpr, IS_CAUSAL: gl.constexpr, STAGES: gl.constexpr, SCHEDULE: gl.constexpr,
        s_layout: gl.constexpr, p_layout: gl.constexpr,
    ):
        """Query tiles [m_start, m_end) of one query head into this warpgroup's dK, dV.
        ``it`` counts the tiles taken from the ring so far (it picks the stage and phase).
        MASKED: some of the tile's query rows are past N_Q (they are the next head's rows,
        or TMA's zero fill) or, causal, before some of this warpgroup's keys.
        SCHEDULE "overlap": dP^T = V dO^T is issued with S^T = K Q^T and runs under the
        exponentials; "serial": dP^T is issued after P^T, with dV's product, which keeps S^T,
        P^T and dP^T from all holding registers at once. Either way dS^T is computed while
        dV's product runs."""
        M: gl.constexpr = _M
        dtype: gl.constexpr = q_bufs.dtype
        zero_s = gl.zeros([M, M], gl.float32, s_layout)
        for m in range(m_start, m_end):
            stage = ring_wait(q_ready, it, STAGES)
            q_tile = q_bufs.index(stage)  # (M, HEAD_DIM) in shared memory
            do_tile = do_bufs.index(stage)
            s_t = warpgroup_mma(k_smem, q_tile.permute((1, 0)), zero_s, use_acc=False, is_async=True)
            if SCHEDULE == "overlap":
                ring_wait(do_ready, it, STAGES)
                dp_t = warpgroup_mma(v_smem, do_tile.permute((1, 0)), zero_s, use_acc=False, is_async=True)
                # wgmma groups retire in order: one outstanding means S^T is ready, dP^T may not be.
                s_t = warpgroup_mma_wait(num_outstanding=1, deps=(s_t,))
            else:
                s_t = warpgroup_mma_wait(num_outstanding=0, deps=(s_t,))
            # lse and delta come with Q and dO, per stage: read from shared memory where they are
            # used, they hold no registers across the loop (global loads there were hoisted).
            lse = lse_bufs.index(stage).load(gl.SliceLayout(0, s_layout))
            p_t = gl.exp2(s_t * qk_scale - gl.expand_dims(lse, 0))
            if MASKED:
                cols = m * M + gl.arange(0, M, layout=gl.SliceLayout(0, s_layout))  # query rows = S^T's columns
                keep = gl.expand_dims(cols < N_Q, 0)
                if IS_CAUSAL:
                    keep = keep & (gl.expand_dims(cols, 0) >= gl.expand_dims(keys, 1))
                # where, not a multiply: a masked score may overflow exp2 to inf, and inf * 0 is NaN.
                p_t = gl.where(keep, p_t, 0.0)
            p_op = gl.convert_layout(p_t.to(dtype), p_layout)
            if SCHEDULE != "overlap":
                ring_wait(do_ready, it, STAGES)
                dp_t = warpgroup_mma(v_smem, do_tile.permute((1, 0)), zero_s, use_acc=False, is_async=True)
            dv = warpgroup_mma(p_op, do_tile, dv, is_async=True)
            dp_t = warpgroup_mma_wait(num_outstanding=1, deps=(dp_t,))  # dV's product may still run
            delta = delta_bufs.index(stage).load(gl.SliceLayout(0, s_layout))
            ds_t = p_t * (dp_t - gl.expand_dims(delta, 0))
            ds_op = gl.convert_layout(ds_t.to(dtype), p_layout)
            dk = warpgroup_mma(ds_op, q_tile, dk, is_async=True)
            dv, dk, p_op, ds_op = warpgroup_mma_wait(num_outstanding=0, deps=(dv, dk, p_op, ds_op))
            mbarrier.arrive(empty.index(stage), count=1)  # this warpgroup is done with the stage
            it += 1
        return dk, dv, it

    @gluon.jit
    def skip_tiles(q_ready, do_ready, empty, it, m_start, m_end, STAGES: gl.constexpr):
        """Causal: query tiles [m_start, m_end) see none of this warpgroup's keys but the other
        warpgroup's; wait for each (so the barriers' phases stay in step) and release it."""
        for m in range(m_start, m_end):
            stage = ring_wait(q_ready, it, STAGES)
            ring_wait(do_ready, it, STAGES)
            mbarrier.arrive(empty.index(stage), count=1)
            it += 1
        return it

    @gluon.jit
    def consumer(
        q_bufs, do_bufs, lse_bufs, delta_bufs, k_bufs, v_bufs, kv_bar, q_ready, do_ready, empty,
        dk_ptr, dv_ptr, H, H_KV, N_Q, N_K, qk_scale, scale,
        WARPGROUP: gl.constexpr, IS_CAUSAL: gl.constexpr, STAGES: gl.constexpr, SCHEDULE: gl.constexpr,
    ):
        M: gl.constexpr = _M
        HEAD_DIM: gl.constexpr = q_bufs.type.shape[2]
        # wgmma's accumulator layouts, rows = this warpgroup's keys.
        s_layout: gl.constexpr = acc_layout(M)  # S^T, dP^T
        dkv_layout: gl.constexpr = acc_layout(HEAD_DIM)  # dK, dV
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=dkv_layout, k_width=2)

        pid_n = gl.program_id(0)
        group = H // H_KV
        # This warpgroup's keys, S^T's rows (the causal mask's; the epilogue derives them again).
        keys = pid_n * (2 * M) + WARPGROUP * M + gl.arange(0, M, layout=gl.SliceLayout(1, s_layout))

        dk = gl.zeros([M, HEAD_DIM], gl.float32, dkv_layout)
        dv = gl.zeros([M, HEAD_DIM], gl.float32, dkv_layout)
        k_smem = k_bufs.index(WARPGROUP)
        v_smem = v_bufs.index(WARPGROUP)
        mbarrier.wait(kv_bar, 0)

        n_tiles = gl.cdiv(N_Q, M)
        full_tiles = N_Q // M  # tiles [0, full_tiles) have no row past N_Q
        it = 0
        for g in range(group):  # every query head that shares this k/v head
            if IS_CAUSAL:
                # The producer starts at the program's first key's tile (rows before it see no key
                # here). That tile lies wholly before warpgroup 1's keys; each warpgroup's own
                # diagonal tile is masked, every later tile sees all its keys.
                first = pid_n * 2
                diag = first + WARPGROUP
                it = skip_tiles(q_ready, do_ready, empty, it, first, gl.minimum(diag, n_tiles), STAGES)
                dk, dv, it = dkdv_tiles(q_bufs, do_bufs, lse_bufs, delta_bufs, q_ready, do_ready, empty, k_smem, v_smem,
                                        dk, dv, it, diag, gl.minimum(diag + 1, n_tiles), keys, N_Q, qk_scale,
                                        True, IS_CAUSAL, STAGES, SCHEDULE, s_layout, p_layout)
                lo = diag + 1
            else:
                lo = 0
            dk, dv, it = dkdv_tiles(q_bufs, do_bufs, lse_bufs, delta_bufs, q_ready, do_ready, empty, k_smem, v_smem,
                                    dk, dv, it, lo, full_tiles, keys, N_Q, qk_scale,
                                    False, IS_CAUSAL, STAGES, SCHEDULE, s_layout, p_layout)
            dk, dv, it = dkdv_tiles(q_bufs, do_bufs, lse_bufs, delta_bufs, q_ready, do_ready, empty, k_smem, v_smem,
                                    dk, dv, it, gl.maximum(lo, full_tiles), n_tiles, keys, N_Q, qk_scale,
                                    True, IS_CAUSAL, STAGES, SCHEDULE, s_layout, p_layout)

        # Program ids are read again here rather than held across the loop, where every
        # register is taken (held, they were spilled to local memory).
        rows = gl.program_id(0) * (2 * M) + WARPGROUP * M + gl.arange(0, M, layout=gl.SliceLayout(1, dkv_layout))
        cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, dkv_layout))
        # dk and dv are contiguous (B, H_KV, N_K, D), so (batch, head) is one row index; int64:
        # it passes 2**31 on large tensors.
        first_row = gl.program_id(1).to(gl.int64) * N_K
        offsets = (first_row + gl.expand_dims(rows, 1)) * HEAD_DIM + gl.expand_dims(cols, 0)
        # Rows past N_K were computed from the next head's keys (or zeros): never stored.
        keep = gl.expand_dims(rows < N_K, 1)
        # S = scale * Q K^T, so dK picks up the scale (dV does not).
        gl.store(dk_ptr + offsets, (dk * scale).to(dk_ptr.dtype.element_ty), mask=keep)
        gl.store(dv_ptr + offsets, dv.to(dv_ptr.dtype.element_ty), mask=keep)

    @gluon.jit
    def producer(
        q_desc, k_desc, v_desc, do_desc, lse_desc, delta_desc,
        q_bufs, do_bufs, lse_bufs, delta_bufs, k_bufs, v_bufs, kv_bar, q_ready, do_ready, empty,
        H, H_KV, N_Q, N_K, STAT_STRIDE, IS_CAUSAL: gl.constexpr, STAGES: gl.constexpr,
    ):
        M: gl.constexpr = _M
        pid_n = gl.program_id(0)
        bhk = gl.program_id(1)
        b = bhk // H_KV
        hk = bhk % H_KV
        group = H // H_KV
        # The descriptors view q, dO as (B*H*N_Q, D), lse and delta as (B*H*N_Q,) and k, v as
        # (B*H_KV*N_K, D); the launcher checks those row counts fit TMA's int32 coordinates.
        kv_row = bhk * N_K + pid_n * (2 * M)
        mbarrier.expect(kv_bar, 2 * k_desc.block_type.nbytes + 2 * v_desc.block_type.nbytes)
        for half in gl.static_range(2):  # one 64-key slice per consumer warpgroup
            tma_load(k_desc, [kv_row + half * M, 0], kv_bar, k_bufs.index(half))
            tma_load(v_desc, [kv_row + half * M, 0], kv_bar, v_bufs.index(half))

        first = 0
        if IS_CAUSAL:
            first = pid_n * 2  # query rows before this program's first key see none of its keys
        it = 0
        for g in range(group):
            q_row = (b * H + hk * group + g) * N_Q
            # lse and delta rows start STAT_STRIDE apart, a multiple of 4 floats: a TMA copy's
            # start must be 16-byte aligned, which (b*H + h) * N_Q floats is not for odd N_Q.
            stat_row = (b * H + hk * group + g) * STAT_STRIDE
            for m in range(first, gl.cdiv(N_Q, M)):
                stage = ring_free(empty, it, STAGES)
                # (Q, lse) and (dO, delta) on separate barriers: the consumers start S^T = K Q^T
                # before dO lands.
                row = q_row + m * M
                mbarrier.expect(q_ready.index(stage), q_desc.block_type.nbytes + lse_desc.block_type.nbytes)
                tma_load(q_desc, [row, 0], q_ready.index(stage), q_bufs.index(stage))
                tma_load(lse_desc, [stat_row + m * M], q_ready.index(stage), lse_bufs.index(stage))
                mbarrier.expect(do_ready.index(stage), do_desc.block_type.nbytes + delta_desc.block_type.nbytes)
                tma_load(do_desc, [row, 0], do_ready.index(stage), do_bufs.index(stage))
                tma_load(delta_desc, [stat_row + m * M], do_ready.index(stage), delta_bufs.index(stage))
                it += 1

    @gluon.jit
    def hopper_dkdv_kernel(
        q_desc, k_desc, v_desc, do_desc, lse_desc, delta_desc, dk_ptr, dv_ptr,
        H, H_KV, N_Q, N_K, STAT_STRIDE, qk_scale, scale,
        IS_CAUSAL: gl.constexpr, STAGES: gl.constexpr,
        CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr, SCHEDULE: gl.constexpr,
    ):
        """dK, dV into ``dk_ptr``, ``dv_ptr``."""
        M: gl.constexpr = _M
        HEAD_DIM: gl.constexpr = q_desc.block_type.shape[1]
        gl.static_assert(q_desc.block_type.shape[0] == M, "a Q tile is 64 query rows")
        gl.static_assert(k_desc.block_type.shape[0] == M, "a K tile is one warpgroup's 64 keys")
        gl.static_assert(HEAD_DIM % 16 == 0, "wgmma's K step is 16 for 16-bit inputs")
        dtype: gl.constexpr = q_desc.dtype

        k_bufs = gl.allocate_shared_memory(dtype, [2, M, HEAD_DIM], k_desc.layout)  # resident
        v_bufs = gl.allocate_shared_memory(dtype, [2, M, HEAD_DIM], v_desc.layout)
        q_bufs = gl.allocate_shared_memory(dtype, [STAGES, M, HEAD_DIM], q_desc.layout)  # the ring
        do_bufs = gl.allocate_shared_memory(dtype, [STAGES, M, HEAD_DIM], do_desc.layout)
        lse_bufs = gl.allocate_shared_memory(gl.float32, [STAGES, M], lse_desc.layout)
        delta_bufs = gl.allocate_shared_memory(gl.float32, [STAGES, M], delta_desc.layout)
        kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(kv_bar, count=1)
        q_ready, do_ready, empty = ring_barriers(STAGES)  # (Q, lse) and (dO, delta) land apart
        fence_async_shared()  # make the initialised barriers visible to the copy engine

        gl.warp_specialize([
            (consumer, (q_bufs, do_bufs, lse_bufs, delta_bufs, k_bufs, v_bufs, kv_bar, q_ready, do_ready, empty,
                        dk_ptr, dv_ptr, H, H_KV, N_Q, N_K, qk_scale, scale, 0, IS_CAUSAL, STAGES, SCHEDULE)),
            (consumer, (q_bufs, do_bufs, lse_bufs, delta_bufs, k_bufs, v_bufs, kv_bar, q_ready, do_ready, empty,
                        dk_ptr, dv_ptr, H, H_KV, N_Q, N_K, qk_scale, scale, 1, IS_CAUSAL, STAGES, SCHEDULE)),
            (producer, (q_desc, k_desc, v_desc, do_desc, lse_desc, delta_desc,
                        q_bufs, do_bufs, lse_bufs, delta_bufs, k_bufs, v_bufs, kv_bar,
                        q_ready, do_ready, empty, H, H_KV, N_Q, N_K, STAT_STRIDE, IS_CAUSAL, STAGES)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


# ----------------------------------------------------------------------------- launch


def hopper_bwd_problem(q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor,
                       do4: torch.Tensor | None = None) -> str | None:
    """Why the Gluon backward kernels (dK/dV here, dQ in ``dq.py``) cannot take these (B, H, N, D)
    inputs, or None if they can. ``do4``, the output's gradient, is checked too when given: TMA
    reads it like q."""
    if do4 is not None and (do4.shape != q4.shape or do4.dtype != q4.dtype):
        return f"do has shape {tuple(do4.shape)} and dtype {do4.dtype}, not q's"
    return gluon_problem(q4, k4, v4, *((("do", do4),) if do4 is not None else ()))


def check_statistic(who: str, name: str, t, q4: torch.Tensor) -> None:
    """A per-row statistic (the forward's lse, the preprocess's delta) as the Gluon backward
    kernels read it: a contiguous float32 (B, H, Nq) tensor on q's device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32 or tuple(t.shape) != tuple(q4.shape[:3]) or not t.is_contiguous():
        raise ValueError(f"{who}: {name} must be a contiguous float32 (B, H, Nq) = "
                         f"{tuple(q4.shape[:3])} tensor, got {t.dtype} {tuple(t.shape)}")
    if t.device != q4.device:
        raise ValueError(f"{who}: {name} is on {t.device}, q on {q4.device}")


def check_backward_args(who: str, q4, k4, v4, do4, lse, delta, causal, scale) -> None:
    """The checks both Gluon backward launchers make: scope, statistics, types, matching k and v."""
    problem = hopper_bwd_problem(q4, k4, v4, do4)
    if problem is not None:
        raise ValueError(f"{who}: {problem}")
    check_statistic(who, "lse", lse, q4)
    check_statistic(who, "delta", delta, q4)
    if not isinstance(causal, bool):
        raise TypeError(f"{who}: causal must be a bool, got {type(causal).__name__}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"{who}: scale must be a number, got {type(scale).__name__}")
    B, H = q4.shape[:2]
    H_KV = k4.shape[1]
    if k4.shape[0] != B or H % H_KV or v4.shape != k4.shape or k4.dtype != q4.dtype or v4.dtype != q4.dtype:
        raise ValueError(f"{who}: k {tuple(k4.shape)} {k4.dtype} and v {tuple(v4.shape)} {v4.dtype} "
                         f"do not match q {tuple(q4.shape)} {q4.dtype} (same batch, dtype, H a multiple of H_KV)")


def backward_plan_key(tag: str, q4, k4, v4, do4, lse, delta, causal, scale, *switches) -> tuple | None:
    """The launch-plan key of one backward launcher call: every property of the arguments that
    ``check_backward_args`` reads except the data pointers (``rebind`` checks the alignment of
    every descriptor's base on each call), and the launcher's switches, each with its type (True
    == 1 in a dict key, but ``stages=True`` must still be refused). A launcher runs the full
    checks when the key is not cached, so a cached key stands for inputs that passed them. None
    when an argument is not tensor-like: the checks then raise the error."""
    try:
        tensors = tuple(tensor_key(t) for t in (q4, k4, v4, do4, lse, delta))
    except (AttributeError, TypeError):
        return None
    return (tag, *tensors, *((type(x), x) for x in (causal, scale, *switches)))


def checked_plan_key(who: str, tag: str, q4, k4, v4, do4, lse, delta, causal, scale, *switches) -> tuple:
    """``check_backward_args``, then the call's ``backward_plan_key``: what a launcher runs for a
    key it has no plan for."""
    check_backward_args(who, q4, k4, v4, do4, lse, delta, causal, scale)
    key = backward_plan_key(tag, q4, k4, v4, do4, lse, delta, causal, scale, *switches)
    if key is None:  # pragma: no cover - the checks passed, so these are tensors
        raise TypeError(f"{who}: q, k, v, do, lse and delta must be torch.Tensors")
    return key


def _aligned_rows(stat: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, H, Nq) fp32 -> a flat buffer whose (b, h) rows start ``stride`` floats apart (a copy
    only when Nq is not already a multiple of 4; the padding is zeros, read only for rows the
    kernel masks)."""
    B, H, NQ = stat.shape
    if stride == NQ:
        return stat.view(B * H * NQ)
    padded = torch.zeros(B * H, stride, dtype=stat.dtype, device=stat.device)
    padded[:, :NQ] = stat.view(B * H, NQ)
    return padded.view(B * H * stride)


def auto_applies(q4, k4, v4, scale: float) -> bool:
    """Whether the router's backward should run this dK/dV kernel by itself: on the inputs the
    Gluon forward takes (``forward.auto_applies``, whether or not the forward took split-K
    instead) when this kernel takes them too. The caller hands it a contiguous dO."""
    return forward_auto_applies(q4, k4, v4, scale) and hopper_bwd_problem(q4, k4, v4) is None


# Launch plans of the dK/dV kernel (common.LaunchPlan), one per backward_plan_key.
PLANS = PlanCache()


def _plan(key, bases, B, H, H_KV, NQ, NK, stat_stride, causal, scale, stages, schedule) -> LaunchPlan:
    """The dK/dV kernel's launch for ``key``, built from the first call's checked tensors."""
    q2, k2, v2, do2, lse1, delta1 = bases
    templates = tuple(template(d) for d in (descriptor(q2, ROWS), descriptor(k2, ROWS), descriptor(v2, ROWS),
                                            descriptor(do2, ROWS), row_descriptor(lse1), row_descriptor(delta1)))
    return LaunchPlan(key=key, grid=(triton.cdiv(NK, BLOCK_KEYS), B * H_KV), templates=templates,
                      scalars=(H, H_KV, NQ, NK, stat_stride, scale * LOG2E, scale),
                      constexprs=dict(IS_CAUSAL=causal, STAGES=stages, CONSUMER_REGS=CONSUMER_REGS,
                                      PRODUCER_REGS=PRODUCER_REGS, SCHEDULE=schedule),
                      options=dict(num_warps=4, maxnreg=MAXNREG))


def hopper_dkdv(q4, k4, v4, do4, lse, delta, causal: bool, scale: float, *, stages: int | None = None,
                schedule: str = DEFAULT_SCHEDULE):
    """dK and dV of attention on (B, H, N, D) inputs that ``hopper_bwd_problem`` accepts.

    ``lse``: the forward's log2-sum-exp2 per query row (B, H, Nq), fp32 (what
    ``flash.flash_forward`` and ``forward.hopper_forward`` return); ``delta``: rowsum(dO * O)
    per query row, fp32 (``flash.flash_preprocess``). ``stages`` overrides the (Q, dO) ring's
    depth; ``schedule`` is one of SCHEDULES. Returns (dk, dv) shaped like k and v.
    """
    key = backward_plan_key("dkdv", q4, k4, v4, do4, lse, delta, causal, scale, stages, schedule)
    plan = PLANS.get(key)
    if plan is None:  # a new key: the full checks, then the plan (none for an empty problem)
        key = checked_plan_key("hopper_dkdv", "dkdv", q4, k4, v4, do4, lse, delta, causal, scale, stages, schedule)
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    if plan is None:
        stages = STAGES[D] if stages is None else stages
        if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
            raise ValueError(f"hopper_dkdv: stages must be a positive int, got {stages!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"hopper_dkdv: schedule must be one of {SCHEDULES}, got {schedule!r}")
        if NQ == 0 or NK == 0:
            return (new_output(k4.shape, dtype=k4.dtype, device=k4.device).zero_(),
                    new_output(v4.shape, dtype=v4.dtype, device=v4.device).zero_())
    dk = new_output(k4.shape, dtype=k4.dtype, device=k4.device)
    dv = new_output(v4.shape, dtype=v4.dtype, device=v4.device)
    stat_stride = -(-NQ // 4) * 4  # 16-byte aligned rows (see producer)
    bases = (q4.view(B * H * NQ, D), k4.view(B * H_KV * NK, D), v4.view(B * H_KV * NK, D),
             do4.view(B * H * NQ, D), _aligned_rows(lse, stat_stride), _aligned_rows(delta, stat_stride))
    if plan is None:
        plan = PLANS.put(key, _plan(key, bases, B, H, H_KV, NQ, NK, stat_stride, causal, scale, stages, schedule))
    # The plan's descriptors over this call's tensors, through the compiled kernel's own launch
    # entry after the first call (issue 23: Triton's path cost more host time than the kernel's
    # GPU time at N = 1k).
    plan.launch(DIRECT, "gluon-dkdv", hopper_dkdv_kernel, bases, (dk, dv))
    return dk, dv
