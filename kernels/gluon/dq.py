"""The attention backward's dQ pass for Hopper, in Gluon: the separate-pass half of ``dkdv.py``.

Each program owns 128 query rows of one (batch, head) and keeps what they need on chip (their
Q and dO tiles, their lse and delta values) while every key tile they can see streams past:
the structure of the forward (``forward.py``) with the backward's matmuls.

- a *producer* warp copies Q and dO once with TMA, then streams (K, V) tiles of BLOCK_N keys
  of the matching k/v head (grouped-query attention: head h reads k/v head h // (H // H_KV))
  through a ring of shared-memory stages guarded by "ready" and "empty" mbarriers;
- two *consumer* warpgroups own 64 of the 128 rows each and run, per key tile, on the tensor
  cores (``warpgroup_mma``, wgmma):

      S  = Q K^T                      (both operands in shared memory; K^T a permuted view)
      P  = exp2(S * qk_scale - lse)   (lse in log2 units, as every forward here stores it)
      dP = dO V^T
      dS = P * (dP - delta)           (delta = rowsum(dO * O), ``flash.flash_preprocess``)
      dQ += dS K                      (dS from registers, K from shared memory as it lies)

  (``SCHEDULES``: "overlap" issues dP right after S, so it runs under the exponentials;
  "serial" issues it once P is computed, so dP's accumulator holds no registers during the
  exponentials; the serial order was the faster one in the dK/dV kernel), then store
  dQ * scale (S = scale * Q K^T, so dQ picks up the scale, as ``flash.flash_bwd_dq_kernel``
  does), rows past N_Q masked.

Masks, as ``kernels/flash.py``'s kernels: keys at or past N_K get P = 0; causal is top-left (query row
i sees keys j <= i, whatever Nq and Nk), so a warpgroup stops at the tile holding its last
row's diagonal and masks only the tiles from the first one that crosses its first row's.
Rows past N_Q hold the next head's queries (or TMA's zero fill): their lse is read as +inf, so
their P is exactly 0 and nothing there overflows; they are never stored.

Budget, per program, checked against the compiled kernel (``scripts/compile_hopper.py
--kernel dq``, Triton 3.6's ptxas, sm_90a; the tiles are ``TILES``):

- shared memory: Q and dO resident, 2 x 2 x 64 x D x 2 B (64 KB at D = 128, 32 KB at D = 64);
  per stage of the ring a K and a V tile, 2 x BLOCK_N x D x 2 B (32 KB at D = 128 with 64 keys,
  32 KB at D = 64 with 128 keys); and the mbarriers. 4 stages make 196,944 B at D = 128 and
  164,176 B at D = 64 (compiled), within the 227 KB an SM offers one block.
- registers per consumer thread (128 threads a warpgroup): dQ, 64 x D fp32 = D / 2 (64 at
  D = 128, 32 at D = 64); S (then P, then dS) and dP, 2 x 64 x BLOCK_N fp32 = BLOCK_N; dS as a
  16-bit A operand, BLOCK_N / 4; lse and delta, 2 each. D = 128 with 64 keys: 64 + 64 + 16 = 144,
  and the compiled kernel names registers up to R172; D = 64 with 128 keys: 32 + 128 + 32 = 192,
  up to R222. Both within the 240 the consumers get (``setmaxnreg``; the producer warp keeps 24),
  no local memory. (D = 128 with 128 keys would need 64 + 128 + 32 = 224 before any address:
  ptxas spilled it.)

The other way, built and measured at commit f57d95b (PERF_NOTES.md, session 9) and removed
since: FlashAttention-3 adds dQ into an
fp32 buffer from the dK/dV loop (https://github.com/Dao-AILab/flash-attention, hopper/:
``mainloop_bwd_sm90_tma_gmma_ws.hpp`` with a bulk reduce-add, ``copy_sm90_bulk_reduce.hpp``,
and ``flash_bwd_postprocess_kernel.h`` to scale and convert the buffer). In ``dkdv.py``
dS^T of 64 keys x 64 queries sits in each consumer's registers and K is resident, so per query
tile: dS^T to shared memory (it becomes a transposed A operand), one wgmma dQ_tile = dS K (64
queries x D, over the program's 128 keys), the 64 x D fp32 partial to shared memory and a bulk
reduce-add into global memory, then a small kernel for dQ * scale. Expected cost: the matmuls
drop from 7 to 5 (S and dP are not recomputed: the forward's FLOPs once, 2/7 of this pair of
kernels' tensor-core work), against Nq x Nk x D x 4 B / 128 of reductions per head (17 GB
for B4 H16 N8192 D128 without the mask; a head's 4 MB buffer can stay in the 50 MB L2 while
its key blocks run) and a 64 x 128 x 2 B dS tile through shared memory per step. The obstacle
is registers: at D = 128 the dK/dV consumers already name up to R237 of their 240 (R179 at
D = 64), and a whole dQ partial is 64 more a thread at D = 128. That is a peak, not the count
live at the dQ step (S^T and dP^T are dead by then), so whether it fits is for ptxas to say;
FA3 fits half a partial (32 a thread) beside dK and dV at D = 128 with the same 128 keys and
240 registers, by splitting the dQ product over its two warpgroups along D, which needs dS in
shared memory (``run_mha_bwd_hdim128`` in ``flash_bwd_launch_template.h``: AtomLayoutMdQ = 1).
Measured, it spilled at D = 128 and was no faster overall (PERF_NOTES.md, session 9).

Scope: as ``dkdv.py`` (sm90, fp16/bf16, D 64 or 128, contiguous (B, H, N, D), GQA/MQA,
any Nq and Nk). ``hopper_dq_problem`` says why an input is outside it. Gluon kernels do not
run in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch
import triton

from ..runtime import new_output
from .common import (
    CONSUMER_REGS, GLUON_IMPORT_ERROR, LOG2E, MAXNREG, PRODUCER_REGS, ROWS, LaunchPlan, PlanCache, acc_layout,
    descriptor, fence_async_shared, gl, gluon, mbarrier, ring_barriers, ring_free, ring_wait, template, tma_load,
    warpgroup_mma, warpgroup_mma_wait,
)
from ..launch import DIRECT
from .dkdv import auto_applies as dkdv_auto_applies, backward_plan_key, checked_plan_key, hopper_bwd_problem
from .forward import release

BLOCK_ROWS = 2 * ROWS  # query rows per program
# (BLOCK_N, STAGES) per head dim: keys per streamed tile and the (K, V) ring's depth, the
# deepest ring that fits (one program per SM either way: registers decide that). Chosen from the
# compiled kernels (scripts/compile_hopper.py --kernel dq, Triton 3.6, fp16 and bf16 alike): at
# D = 128, BLOCK_N = 128 needs more than the consumers' 240 registers (ptxas spilled: 25-41 local
# stores) while 64 keys use up to R172; at D = 64 both fit (up to R222 at 128 keys, R130 at 64)
# and 128 keys halve the barrier waits and the per-tile bookkeeping.
TILES = {64: (128, 4), 128: (64, 4)}
# The router's backward runs this kernel where it applies (auto_applies), since the H100 tests
# and timings of PERF_NOTES.md, session 8: 1.01-1.25x the pointer dQ kernel at B4 N8192, and a
# faster whole backward in the production suite at D = 128.
# How each consumer warpgroup orders its products per key tile (see dq_tiles). Measured with
# scripts/hopper_bwd_check.py --dq (H100, B4 N8192, fp16 and bf16): "overlap" took 0.5-7% less
# time than "serial" at D = 128 and 15-21% less at D = 64; issuing dP with S leaves one round
# trip to the tensor cores per tile fewer, and the registers fit.
SCHEDULES = ("overlap", "serial")
DEFAULT_SCHEDULE = "overlap"


if GLUON_IMPORT_ERROR is None:
    _M = gl.constexpr(ROWS)  # kernels read globals only as constexprs

    @gluon.jit
    def dq_tiles(
        q_smem, do_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty,
        dq, lse, delta, rows, t_lo, t_hi, N_K, qk_scale,
        MASKED: gl.constexpr, IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
        SCHEDULE: gl.constexpr, s_layout: gl.constexpr, ds_layout: gl.constexpr,
    ):
        """Key tiles [t_lo, t_hi) into this warpgroup's dQ. MASKED: some of the tile's keys are
        at or past N_K (the next head's rows, or TMA's zero fill) or, causal, after some row.
        SCHEDULE "overlap": dP = dO V^T is issued with S = Q K^T and runs under the exponentials;
        "serial": dP is issued once P is computed."""
        M: gl.constexpr = _M
        zero_s = gl.zeros([M, BLOCK_N], gl.float32, s_layout)
        for t in range(t_lo, t_hi):
            stage = ring_wait(k_ready, t, STAGES)
            k_tile = k_bufs.index(stage)  # (BLOCK_N, HEAD_DIM) in shared memory
            s = warpgroup_mma(q_smem, k_tile.permute((1, 0)), zero_s, use_acc=False, is_async=True)
            if SCHEDULE == "overlap":
                ring_wait(v_ready, t, STAGES)
                dp = warpgroup_mma(do_smem, v_bufs.index(stage).permute((1, 0)), zero_s, use_acc=False,
                                   is_async=True)
                # wgmma groups retire in order: one outstanding means S is ready, dP may not be.
                s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
            else:
                s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
            p = gl.exp2(s * qk_scale - gl.expand_dims(lse, 1))
            if MASKED:
                cols = t * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
                keep = gl.expand_dims(cols < N_K, 0)
                if IS_CAUSAL:
                    keep = keep & (gl.expand_dims(rows, 1) >= gl.expand_dims(cols, 0))
                # where, not a multiply: a masked score may overflow exp2 to inf, and inf * 0 is NaN.
                p = gl.where(keep, p, 0.0)
            if SCHEDULE != "overlap":
                ring_wait(v_ready, t, STAGES)
                dp = warpgroup_mma(do_smem, v_bufs.index(stage).permute((1, 0)), zero_s, use_acc=False,
                                   is_async=True)
            dp = warpgroup_mma_wait(num_outstanding=0, deps=(dp,))
            ds = p * (dp - gl.expand_dims(delta, 1))
            ds_op = gl.convert_layout(ds.to(k_bufs.dtype), ds_layout)
            dq = warpgroup_mma(ds_op, k_tile, dq, is_async=True)
            dq, ds_op = warpgroup_mma_wait(num_outstanding=0, deps=(dq, ds_op))
            mbarrier.arrive(kv_empty.index(stage), count=1)  # this warpgroup is done with the stage
        return dq

    @gluon.jit
    def consumer(
        q_bufs, do_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty,
        dq_ptr, lse_ptr, delta_ptr, N_Q, N_K, qk_scale, scale,
        WARPGROUP: gl.constexpr, IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
        SCHEDULE: gl.constexpr,
    ):
        M: gl.constexpr = _M
        HEAD_DIM: gl.constexpr = q_bufs.type.shape[2]
        s_layout: gl.constexpr = acc_layout(BLOCK_N)  # S, P, dP, dS: rows = this warpgroup's queries
        dq_layout: gl.constexpr = acc_layout(HEAD_DIM)
        ds_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=dq_layout, k_width=2)

        m0 = gl.program_id(0) * (2 * M) + WARPGROUP * M  # this warpgroup's first query row
        rows = m0 + gl.arange(0, M, layout=gl.SliceLayout(1, s_layout))
        # lse and delta once, with plain loads (a TMA copy would need 16-byte aligned row starts,
        # which (b*H + h) * N_Q floats are not for odd N_Q). Rows past N_Q read lse = +inf: their
        # P is exp2(-inf) = 0 and their dS exactly 0.
        stat = gl.program_id(1).to(gl.int64) * N_Q + rows  # lse, delta are contiguous (B, H, N_Q)
        lse = gl.load(lse_ptr + stat, mask=rows < N_Q, other=float("inf"))
        delta = gl.load(delta_ptr + stat, mask=rows < N_Q, other=0.0)

        # Tiles [0, t_full) need no mask; [t_full, t_hi) are the diagonal (causal) and the
        # ragged last tile; [t_hi, t_all) are loaded for the other warpgroup only.
        t_full = N_K // BLOCK_N
        hi = N_K
        hi_all = N_K
        if IS_CAUSAL:
            t_full = gl.minimum(t_full, m0 // BLOCK_N)  # keys before m0 are visible to every row here
            hi = gl.minimum(N_K, m0 + M)
            hi_all = gl.minimum(N_K, gl.program_id(0) * (2 * M) + 2 * M)
        t_hi = gl.cdiv(hi, BLOCK_N)
        t_all = gl.cdiv(hi_all, BLOCK_N)

        dq = gl.zeros([M, HEAD_DIM], gl.float32, dq_layout)
        q_smem = q_bufs.index(WARPGROUP)
        do_smem = do_bufs.index(WARPGROUP)
        mbarrier.wait(q_bar, 0)
        dq = dq_tiles(q_smem, do_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, dq, lse, delta, rows,
                       0, t_full, N_K, qk_scale, False, IS_CAUSAL, BLOCK_N, STAGES, SCHEDULE, s_layout, ds_layout)
        dq = dq_tiles(q_smem, do_smem, k_bufs, v_bufs, k_ready, v_ready, kv_empty, dq, lse, delta, rows,
                       t_full, t_hi, N_K, qk_scale, True, IS_CAUSAL, BLOCK_N, STAGES, SCHEDULE, s_layout, ds_layout)
        release(k_ready, v_ready, kv_empty, t_hi, t_all, STAGES)

        # Program ids are read again rather than held across the loop (dkdv.py: held, they
        # were spilled there).
        out_rows = gl.program_id(0) * (2 * M) + WARPGROUP * M + gl.arange(0, M, layout=gl.SliceLayout(1, dq_layout))
        cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, dq_layout))
        # dq is contiguous (B, H, N_Q, D), so (batch, head) is one row index; int64: it passes
        # 2**31 on large tensors.
        first_row = gl.program_id(1).to(gl.int64) * N_Q
        offsets = (first_row + gl.expand_dims(out_rows, 1)) * HEAD_DIM + gl.expand_dims(cols, 0)
        # Rows past N_Q are the next head's (or zeros): never stored.
        gl.store(dq_ptr + offsets, (dq * scale).to(dq_ptr.dtype.element_ty),
                 mask=gl.expand_dims(out_rows < N_Q, 1))

    @gluon.jit
    def producer(
        q_desc, do_desc, k_desc, v_desc, q_bufs, do_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty,
        H, H_KV, N_Q, N_K, IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
    ):
        M: gl.constexpr = _M
        pid_m = gl.program_id(0)
        bh = gl.program_id(1)
        b = bh // H
        hk = (bh % H) // (H // H_KV)  # grouped-query attention: H // H_KV query heads share a k/v head
        # The descriptors view q, dO as (B*H*N_Q, D) and k, v as (B*H_KV*N_K, D); the launcher
        # checks those row counts fit TMA's int32 coordinates.
        q_row = bh * N_Q + pid_m * (2 * M)
        kv_row = (b * H_KV + hk) * N_K

        mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes + 2 * do_desc.block_type.nbytes)
        for half in gl.static_range(2):  # one 64-row tile of each per consumer warpgroup
            tma_load(q_desc, [q_row + half * M, 0], q_bar, q_bufs.index(half))
            tma_load(do_desc, [q_row + half * M, 0], q_bar, do_bufs.index(half))

        hi = N_K
        if IS_CAUSAL:
            hi = gl.minimum(N_K, pid_m * (2 * M) + 2 * M)  # the program's last row sees no key past it
        for t in range(gl.cdiv(hi, BLOCK_N)):
            stage = ring_free(kv_empty, t, STAGES)
            # K and V land on separate barriers: the consumers start S = Q K^T before V arrives.
            mbarrier.expect(k_ready.index(stage), k_desc.block_type.nbytes)
            tma_load(k_desc, [kv_row + t * BLOCK_N, 0], k_ready.index(stage), k_bufs.index(stage))
            mbarrier.expect(v_ready.index(stage), v_desc.block_type.nbytes)
            tma_load(v_desc, [kv_row + t * BLOCK_N, 0], v_ready.index(stage), v_bufs.index(stage))

    @gluon.jit
    def hopper_dq_kernel(
        q_desc, do_desc, k_desc, v_desc, dq_ptr, lse_ptr, delta_ptr,
        H, H_KV, N_Q, N_K, qk_scale, scale,
        IS_CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
        CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr, SCHEDULE: gl.constexpr,
    ):
        M: gl.constexpr = _M
        HEAD_DIM: gl.constexpr = q_desc.block_type.shape[1]
        gl.static_assert(q_desc.block_type.shape[0] == M, "a Q tile is one warpgroup's 64 rows")
        gl.static_assert(do_desc.block_type.shape[0] == M, "a dO tile is one warpgroup's 64 rows")
        gl.static_assert(k_desc.block_type.shape[0] == BLOCK_N, "K tiles are BLOCK_N rows")
        gl.static_assert(HEAD_DIM % 16 == 0, "wgmma's K step is 16 for 16-bit inputs")
        dtype: gl.constexpr = q_desc.dtype

        q_bufs = gl.allocate_shared_memory(dtype, [2, M, HEAD_DIM], q_desc.layout)  # resident
        do_bufs = gl.allocate_shared_memory(dtype, [2, M, HEAD_DIM], do_desc.layout)
        k_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)  # the ring
        v_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
        k_ready, v_ready, kv_empty = ring_barriers(STAGES)  # K and V land apart
        fence_async_shared()  # make the initialised barriers visible to the copy engine

        gl.warp_specialize([
            (consumer, (q_bufs, do_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty,
                         dq_ptr, lse_ptr, delta_ptr, N_Q, N_K, qk_scale, scale, 0, IS_CAUSAL, BLOCK_N, STAGES,
                         SCHEDULE)),
            (consumer, (q_bufs, do_bufs, k_bufs, v_bufs, q_bar, k_ready, v_ready, kv_empty,
                         dq_ptr, lse_ptr, delta_ptr, N_Q, N_K, qk_scale, scale, 1, IS_CAUSAL, BLOCK_N, STAGES,
                         SCHEDULE)),
            (producer, (q_desc, do_desc, k_desc, v_desc, q_bufs, do_bufs, k_bufs, v_bufs,
                         q_bar, k_ready, v_ready, kv_empty, H, H_KV, N_Q, N_K, IS_CAUSAL, BLOCK_N, STAGES)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


# ----------------------------------------------------------------------------- launch


def hopper_dq_problem(q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor,
                      do4: torch.Tensor | None = None) -> str | None:
    """Why the Gluon dQ kernel cannot take these (B, H, N, D) inputs, or None if it can: the
    same scope as the dK/dV kernel (``dkdv.hopper_bwd_problem``, dO checked when given)."""
    return hopper_bwd_problem(q4, k4, v4, do4)


def auto_applies(q4, k4, v4, scale: float) -> bool:
    """Whether the router's backward should run this dQ kernel by itself: where it runs the Gluon
    dK/dV kernel (``dkdv.auto_applies``) and this kernel takes the inputs too. The caller hands
    it a contiguous dO."""
    return dkdv_auto_applies(q4, k4, v4, scale) and hopper_dq_problem(q4, k4, v4) is None


# Launch plans of the dQ kernel (common.LaunchPlan), one per dkdv.backward_plan_key.
PLANS = PlanCache()


def _plan(key, bases, B, H, H_KV, NQ, NK, causal, scale, block_n, stages, schedule) -> LaunchPlan:
    """The dQ kernel's launch for ``key``, built from the first call's checked tensors."""
    q2, do2, k2, v2 = bases
    templates = tuple(template(d) for d in (descriptor(q2, ROWS), descriptor(do2, ROWS), descriptor(k2, block_n),
                                            descriptor(v2, block_n)))
    return LaunchPlan(key=key, grid=(triton.cdiv(NQ, BLOCK_ROWS), B * H), templates=templates,
                      scalars=(H, H_KV, NQ, NK, scale * LOG2E, scale),
                      constexprs=dict(IS_CAUSAL=causal, BLOCK_N=block_n, STAGES=stages, CONSUMER_REGS=CONSUMER_REGS,
                                      PRODUCER_REGS=PRODUCER_REGS, SCHEDULE=schedule),
                      options=dict(num_warps=4, maxnreg=MAXNREG))


def hopper_dq(q4, k4, v4, do4, lse, delta, causal: bool, scale: float, *, block_n: int | None = None,
              stages: int | None = None, schedule: str = DEFAULT_SCHEDULE):
    """dQ of attention on (B, H, N, D) inputs that ``hopper_dq_problem`` accepts.

    ``lse``: the forward's log2-sum-exp2 per query row (B, H, Nq), fp32 (what
    ``flash.flash_forward`` returns); ``delta``: rowsum(dO * O) per query row, fp32
    (``flash.flash_preprocess``). ``block_n`` (64 or 128) and ``stages`` override the key
    tile and the (K, V) ring's depth of ``TILES``; ``schedule`` is one of SCHEDULES.
    Returns dq shaped like q.
    """
    key = backward_plan_key("dq", q4, k4, v4, do4, lse, delta, causal, scale, block_n, stages, schedule)
    plan = PLANS.get(key)
    if plan is None:  # a new key: the full checks, then the plan (none for an empty problem)
        key = checked_plan_key("hopper_dq", "dq", q4, k4, v4, do4, lse, delta, causal, scale, block_n, stages,
                               schedule)
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    if plan is None:
        default_block_n, default_stages = TILES[D]
        block_n = default_block_n if block_n is None else block_n
        stages = default_stages if stages is None else stages
        if block_n not in (64, 128):
            raise ValueError(f"hopper_dq: block_n must be 64 or 128, got {block_n!r}")
        if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
            raise ValueError(f"hopper_dq: stages must be a positive int, got {stages!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"hopper_dq: schedule must be one of {SCHEDULES}, got {schedule!r}")
        if NQ == 0 or NK == 0:
            return new_output(q4.shape, dtype=q4.dtype, device=q4.device).zero_()  # no key: empty gradients
    dq = new_output(q4.shape, dtype=q4.dtype, device=q4.device)
    bases = (q4.view(B * H * NQ, D), do4.view(B * H * NQ, D), k4.view(B * H_KV * NK, D), v4.view(B * H_KV * NK, D))
    if plan is None:
        plan = PLANS.put(key, _plan(key, bases, B, H, H_KV, NQ, NK, causal, scale, block_n, stages, schedule))
    # As in dkdv.hopper_dkdv: the plan's descriptors, then the compiled kernel's own entry.
    plan.launch(DIRECT, "gluon-dq", hopper_dq_kernel, bases, (dq, lse, delta))
    return dq
