"""Split-K forward (flash-decoding): the keys of one query tile are shared among several programs.

``flash_attention`` launches one program per (query tile, batch*head). With one head, or with
one query (decoding), that grid has fewer programs than the GPU has SMs, and each program walks
every key alone. Here the grid gains a third axis, SPLITS: each program walks only its slice of
the key tiles and writes an unnormalised partial result (its own softmax output and log-sum-exp)
in fp32 to a workspace; a second, small kernel merges the SPLITS partials of each row with the
log-sum-exp rule. The final lse has the units and layout of ``kernels/flash.py``'s (log2), so the
existing backward runs unchanged on a split forward.

The tile loop is ``kernels/tiles.py``'s ``fwd_tiles``, the one post 3's forward runs; only the slice bounds and the merge are new.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .launch import DIRECT
from .runtime import new_output, next_pow2
from .settings import INTERPRET
from .tiles import LOG2E, fwd_tiles, load_tile, padded_head_dim


@triton.jit
def _splitk_partial_kernel(
    q_ptr, k_ptr, v_ptr, part_o_ptr, part_lse_ptr,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_pbh, stride_ps, stride_pn, stride_pd,  # part_o: (B*H, SPLITS, N_Q, D)
    stride_lbh, stride_ls,  # part_lse: (B*H, SPLITS, N_Q), rows contiguous
    H, GROUP, N_Q, N_K, D, SPLITS, qk_scale,
    HEAD_DIM: tl.constexpr, PAD_D: tl.constexpr, IS_CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SOFTMAX: tl.constexpr,
):
    # No divisibility rule between BLOCK_M and BLOCK_N here (flash's forward needs BLOCK_N | BLOCK_M):
    # the unmasked/masked boundary below is rounded down to a key tile, so decoding can pair a
    # 16-row query tile with 64-key tiles.
    tl.static_assert(HEAD_DIM >= 16 and BLOCK_M >= 16 and BLOCK_N >= 16, "tl.dot needs every dimension >= 16")
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: b * stride_qb passes 2**31 on large tensors
    split = tl.program_id(2)
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

    # The keys this query tile needs (causal: up to its last row), cut into SPLITS slices of
    # whole key tiles, so each slice starts on a tile boundary like flash's loops do.
    n_needed = N_K
    if IS_CAUSAL:
        n_needed = tl.minimum(N_K, (pid_m + 1) * BLOCK_M)
    per_split = tl.cdiv(tl.cdiv(n_needed, BLOCK_N), SPLITS) * BLOCK_N
    lo = split * per_split
    hi = tl.minimum(lo + per_split, n_needed)  # hi <= lo: an empty slice (more splits than tiles)
    full_n = (N_K // BLOCK_N) * BLOCK_N  # tiles wholly inside N_K need no key mask
    if IS_CAUSAL:
        first_row = pid_m * BLOCK_M  # keys before it are visible to every row of the tile
        full_n = tl.minimum(full_n, (first_row // BLOCK_N) * BLOCK_N)
        # A row that sees none of its slice's keys keeps a max of -inf, and exp2(-inf - -inf) is
        # NaN. Every row sees key lo when lo <= first_row, so the slice that reaches the first
        # row takes all the remaining (diagonal) keys and every later slice stays empty.
        hi = tl.where(lo > first_row, lo, tl.where(hi > first_row, n_needed, hi))
    mid = tl.maximum(lo, tl.minimum(hi, full_n))  # [lo, mid) unmasked, [mid, hi) masked

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # running max (log2 units)
    l_i = tl.zeros((BLOCK_M,), tl.float32)  # running sum of exp2(s - m_i)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)  # running, unnormalised output
    acc, l_i, m_i = fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                              lo, mid, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                              False, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION, SOFTMAX)
    acc, l_i, m_i = fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                              mid, hi, offs_m, offs_n, offs_d, N_K, D, qk_scale,
                              True, IS_CAUSAL, PAD_D, BLOCK_N, PRECISION, SOFTMAX)

    # An empty slice has l = 0, acc = 0 and m = -inf: it writes o = 0 and lse = -inf, which the
    # merge weighs by exp2(-inf) = 0. (Dividing by l there would write 0/0 = NaN, and 0 * NaN
    # is NaN.) A NaN l (NaN inputs) still divides by 1 and keeps acc's NaN.
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    lse = m_i + tl.log2(l_i)  # log2-sum-exp2 of this slice's scores
    row_ok = offs_m < N_Q
    part = part_o_ptr + bh * stride_pbh + split * stride_ps
    tl.store(part + offs_m[:, None] * stride_pn + offs_d[None, :] * stride_pd, out,
             mask=row_ok[:, None] & (offs_d < D)[None, :])
    tl.store(part_lse_ptr + bh * stride_lbh + split * stride_ls + offs_m, lse, mask=row_ok)


@triton.jit
def _splitk_merge_kernel(
    part_o_ptr, part_lse_ptr, o_ptr, lse_ptr,
    stride_pbh, stride_ps, stride_pn, stride_pd,
    stride_lbh, stride_ls,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N_Q, D, SPLITS,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: b * stride_ob passes 2**31 on large tensors
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_Q
    mask = row_ok[:, None] & (offs_d < D)[None, :]
    lse_rows = part_lse_ptr + bh * stride_lbh + offs_m  # (BLOCK_M,) pointers; + s * stride_ls per split
    part = part_o_ptr + bh * stride_pbh + offs_m[:, None] * stride_pn + offs_d[None, :] * stride_pd

    # Pass 1: the largest slice lse of each row, so every weight in pass 2 is exp2(<= 0): no overflow.
    # (Split 0 is never empty for a real row: every row sees key 0.)
    lse_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    for s in range(0, SPLITS):
        lse_max = tl.maximum(lse_max, tl.load(lse_rows + s * stride_ls, mask=row_ok, other=float("-inf")))
    # Pass 2: slice s summed l_s = exp2(lse_s - m_s) weights under its own max m_s; rescaled to the
    # common max, O = sum_s w_s O_s / sum_s w_s with w_s = exp2(lse_s - lse_max).
    total = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    for s in range(0, SPLITS):
        w = tl.exp2(tl.load(lse_rows + s * stride_ls, mask=row_ok, other=float("-inf")) - lse_max)
        total += w
        acc += w[:, None] * tl.load(part + s * stride_ps, mask=mask, other=0.0)

    out = acc / total[:, None]
    o_ptrs = o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=mask)
    tl.store(lse_ptr + bh * N_Q + offs_m, lse_max + tl.log2(total), mask=row_ok)  # flash's layout and units


# ----------------------------------------------------------------------------- tiles and heuristic

# Split-path tiles (BLOCK_M, BLOCK_N, num_warps, num_stages). Few query rows in fp16/bf16
# (decoding): the smallest query tile tl.dot takes, long key tiles. fp32: 32x32, flash's best
# candidate at the draft's sizes (PERF_NOTES), small enough that fp32 K/V stages fit in shared
# memory at D = 256 (there is no autotuner here to drop a tile that does not fit). Otherwise a
# tensor-core tile. The first of each list is the default; scripts/tune_splitk.py times them all.
_TILES = {
    "decode": {64: [(16, 64, 4, 3), (16, 128, 4, 2), (16, 32, 4, 2)],
               128: [(16, 64, 4, 3), (16, 128, 4, 2), (16, 32, 4, 2)],
               256: [(16, 32, 4, 2), (16, 64, 4, 1)]},
    "fp32": {64: [(32, 32, 4, 2), (64, 64, 8, 2), (64, 32, 4, 2), (16, 32, 4, 2)],
             128: [(32, 32, 4, 2), (64, 64, 8, 2), (64, 32, 4, 2), (16, 32, 4, 2)],
             256: [(32, 32, 4, 2), (32, 32, 8, 1), (16, 32, 4, 1)]},
    "tensor": {64: [(64, 64, 4, 3), (128, 64, 8, 3), (32, 64, 4, 3)],
               128: [(64, 64, 4, 3), (128, 64, 8, 3), (32, 64, 4, 3)],
               256: [(64, 32, 4, 2), (32, 32, 4, 2)]},
}
_INTERPRETER_TILE = (16, 32)  # under the interpreter only the block sizes count
DECODE_MAX_ROWS = 16  # up to this many query rows, one 16-row tile holds them all

# The heuristic's constants (see choose_splits).
MAX_SPLITS = 16
TARGET_WAVES = 2  # aim for programs >= TARGET_WAVES * SMs: one program per SM leaves it latency-bound
MIN_KEY_TILES = 8  # fewer key tiles per program: the saving is below the second launch's host cost
MIN_TILES_PER_SPLIT = {"fp32": 2, "decode": 4, "tensor": 4}  # an exact fp32 tile costs microseconds


def tile_class(n_q: int, dtype: torch.dtype) -> str:
    """Which tile table the split path uses: "fp32", "decode" (fp16/bf16, Nq <= DECODE_MAX_ROWS)
    or "tensor" (fp16/bf16)."""
    if dtype == torch.float32:
        return "fp32"
    return "decode" if n_q <= DECODE_MAX_ROWS else "tensor"


def candidate_tiles(n_q: int, head_dim: int, dtype: torch.dtype) -> list[tuple]:
    """The split path's tile candidates (BLOCK_M, BLOCK_N, num_warps, num_stages) for a padded
    head dim; the first is the one it uses unless told otherwise."""
    bucket = 64 if head_dim <= 64 else 128 if head_dim <= 128 else 256
    return list(_TILES[tile_class(n_q, dtype)][bucket])


def choose_splits(programs: int, key_tiles: int, sm_count: int, min_tiles_per_split: int) -> int:
    """How many slices to cut the keys into: 1 (no split) or a power of two up to MAX_SPLITS.

    ``programs``: the unsplit grid (query tiles x batch*heads) at the split path's tile;
    ``key_tiles``: key tiles one program walks unsplit; ``sm_count``: the GPU's SMs (0 when
    unknown: never split). Splits only a grid smaller than the GPU whose programs walk at least
    MIN_KEY_TILES tiles, doubling while the grid is under TARGET_WAVES * sm_count programs and
    every slice keeps at least ``min_tiles_per_split`` tiles.
    """
    for name, value in (("programs", programs), ("key_tiles", key_tiles), ("sm_count", sm_count),
                        ("min_tiles_per_split", min_tiles_per_split)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"choose_splits: {name} must be an int, got {type(value).__name__}")
        if value < (1 if name == "min_tiles_per_split" else 0):
            raise ValueError(f"choose_splits: {name} must be {'>= 1' if name == 'min_tiles_per_split' else '>= 0'}, "
                             f"got {value}")
    if programs >= sm_count or key_tiles < MIN_KEY_TILES:
        return 1
    splits = 1
    while (splits < MAX_SPLITS and programs * splits < TARGET_WAVES * sm_count
           and key_tiles >= 2 * splits * min_tiles_per_split):
        splits *= 2
    return splits


@functools.cache
def sm_count(device_index: int) -> int:
    """The GPU's SM count, read once per device (never at import: the interpreter has no driver)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def auto_splits(q4: torch.Tensor, k4: torch.Tensor) -> int:
    """The heuristic's choice for (B, H, N, D) inputs: 1 under the interpreter (no SM count)."""
    if INTERPRET:
        return 1
    return _auto_splits(*q4.shape, k4.shape[2], q4.dtype, q4.device.index)


def planned_splits(B: int, H: int, n_q: int, d: int, n_k: int, dtype: torch.dtype, sms: int) -> int:
    """The heuristic's choice for a (B, H, n_q, d) query and n_k keys on a GPU with ``sms`` SMs
    (pure: pages compute it for a recorded GPU without one)."""
    block_m, block_n = candidate_tiles(n_q, padded_head_dim(d), dtype)[0][:2]
    return choose_splits(triton.cdiv(n_q, block_m) * B * H, triton.cdiv(n_k, block_n), sms,
                         MIN_TILES_PER_SPLIT[tile_class(n_q, dtype)])


@functools.lru_cache(maxsize=4096)  # every forward call asks: a dict lookup instead of the arithmetic
def _auto_splits(B: int, H: int, n_q: int, d: int, n_k: int, dtype: torch.dtype,
                 device_index: int | None) -> int:
    device = device_index if device_index is not None else torch.cuda.current_device()
    return planned_splits(B, H, n_q, d, n_k, dtype, sm_count(device))


def check_splits(splits) -> int:
    if isinstance(splits, bool) or not isinstance(splits, int):
        raise TypeError(f"flash_attention: splits must be an int, got {type(splits).__name__}")
    if splits < 1:
        raise ValueError(f"flash_attention: splits must be >= 1, got {splits}")
    return splits


# ----------------------------------------------------------------------------- launch


def splitk_forward(q4, k4, v4, causal: bool, scale: float, precision: str, splits: int, *, tile=None):
    """The split-K forward on (B, H, N, D) inputs; returns (o4, lse in log2 units, (compiled
    partial kernel, config)) like ``flash.flash_forward``. ``splits`` >= 1 slices (1 still runs
    both kernels: the tests use it); ``tile`` forces (BLOCK_M, BLOCK_N, num_warps, num_stages)."""
    check_splits(splits)
    B, H, n_q, d = q4.shape
    h_kv, n_k = k4.shape[1], k4.shape[2]
    head_dim = padded_head_dim(d)
    if tile is None:
        tile = (*_INTERPRETER_TILE, 4, 1) if INTERPRET else candidate_tiles(n_q, head_dim, q4.dtype)[0]
    if len(tile) != 4 or not all(isinstance(x, int) and x > 0 for x in tile):
        raise ValueError(f"flash_attention: tile must be 4 positive ints (BLOCK_M, BLOCK_N, warps, stages), got {tile}")
    block_m, block_n, warps, stages = tile
    launch_options = {} if INTERPRET else dict(num_warps=warps, num_stages=stages)

    # The workspace is fp32 whatever the inputs: the merge rescales partials by up to 2**(lse gap).
    part_o = new_output((B * H, splits, n_q, d), dtype=torch.float32, device=q4.device)
    part_lse = new_output((B * H, splits, n_q), dtype=torch.float32, device=q4.device)
    o4 = new_output((B, H, n_q, d), dtype=q4.dtype, device=q4.device)
    lse = new_output((B, H, n_q), dtype=torch.float32, device=q4.device)
    # The fused exp2 form takes the row max before scaling, so it holds for scale > 0 only.
    softmax = "exp2-fma" if scale > 0 else "exp2"
    config = dict(BLOCK_M=block_m, BLOCK_N=block_n, SPLITS=splits, **launch_options)
    compiled = DIRECT(
        "splitk-partial", _splitk_partial_kernel, (triton.cdiv(n_q, block_m), B * H, splits),
        (q4, k4, v4, part_o, part_lse),
        (*q4.stride(), *k4.stride(), *v4.stride(), *part_o.stride(), *part_lse.stride()[:2],
         H, H // h_kv, n_q, n_k, d, splits, scale * LOG2E),
        dict(HEAD_DIM=head_dim, PAD_D=head_dim != d, IS_CAUSAL=causal, PRECISION=precision,
             BLOCK_M=block_m, BLOCK_N=block_n, SOFTMAX=softmax, **launch_options),
    )
    merge_rows = min(16, next_pow2(n_q))  # a decode step merges one row per head: no idle lanes
    DIRECT(
        "splitk-merge", _splitk_merge_kernel, (triton.cdiv(n_q, merge_rows), B * H),
        (part_o, part_lse, o4, lse),
        (*part_o.stride(), *part_lse.stride()[:2], *o4.stride(), H, n_q, d, splits),
        dict(HEAD_DIM=head_dim, BLOCK_M=merge_rows),
    )
    return o4, lse, (compiled, config)
