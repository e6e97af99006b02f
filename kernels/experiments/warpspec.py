"""Post 4 experiment: the forward kernel with on-device tensor descriptors (TMA loads) and
Triton's automatic warp specialisation of the key loop (``tl.range(..., warp_specialize=)``).

Producer/consumer warp specialisation is how cuDNN and FlashAttention-3 overlap the softmax
with the matmuls on Hopper. Triton can split a loop into a loading partition and compute
partitions by itself when the loads are tensor-descriptor loads; upstream enabled this for
Hopper attention in 2025. This file is the measurement of what it does here: the production
kernel's algorithm (unmasked interior tiles, masked diagonal and ragged tiles, exp2 with the
scale and max in one FMA) rewritten around descriptors, with the loop's ``warp_specialize``
flag as a switch. ``scripts/benchmark.py --suite warpspec`` times both settings; post 4
reports the result. The router never runs this kernel: it is an experiment, kept because post 4
shows it and its measurement.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..runtime import as_batch_heads, check_attention_inputs, new_output, next_pow2
from ..settings import INTERPRET
from ..tiles import LOG2E


@triton.jit
def ws_tiles(
    acc, l_i, m_i, q, k_desc, v_desc, lo, hi, offs_m, offs_n, N_K, qk_scale,
    MASKED: tl.constexpr, IS_CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    for start_n in tl.range(lo, hi, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k = k_desc.load([start_n, 0])  # (BLOCK_N, HEAD_DIM); rows past N_K arrive as zeros
        qk = tl.dot(q, tl.trans(k))  # (BLOCK_M, BLOCK_N), unscaled
        if MASKED:
            cols = start_n + offs_n
            keep = (cols < N_K)[None, :]
            if IS_CAUSAL:
                keep = keep & (offs_m[:, None] >= cols[None, :])
            # Zero-filled rows would score 0, not nothing: -inf gives them weight exp2(-inf) = 0.
            s = tl.where(keep, qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp2(s - m_new[:, None])
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)  # qk_scale > 0 (launcher checks)
            p = tl.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        v = v_desc.load([start_n, 0])  # (BLOCK_N, HEAD_DIM)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _warpspec_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    H, GROUP, N_Q, N_K, D, qk_scale,
    HEAD_DIM: tl.constexpr, IS_CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    tl.static_assert(BLOCK_M % BLOCK_N == 0, "the causal split needs BLOCK_M % BLOCK_N == 0")
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # int64: b * stride_qb passes 2**31 on large tensors
    b = bh // H
    h = bh % H
    hk = h // GROUP
    # One 2-D descriptor per (batch, head): the copy engine zero-fills rows past N and
    # columns past D on loads, and clips them on the store.
    q_desc = tl.make_tensor_descriptor(q_ptr + b * stride_qb + h * stride_qh, shape=[N_Q, D],
                                       strides=[stride_qn, 1], block_shape=[BLOCK_M, HEAD_DIM])
    k_desc = tl.make_tensor_descriptor(k_ptr + b * stride_kb + hk * stride_kh, shape=[N_K, D],
                                       strides=[stride_kn, 1], block_shape=[BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(v_ptr + b * stride_vb + hk * stride_vh, shape=[N_K, D],
                                       strides=[stride_vn, 1], block_shape=[BLOCK_N, HEAD_DIM])
    o_desc = tl.make_tensor_descriptor(o_ptr + b * stride_ob + h * stride_oh, shape=[N_Q, D],
                                       strides=[stride_on, 1], block_shape=[BLOCK_M, HEAD_DIM])
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q = q_desc.load([pid_m * BLOCK_M, 0])  # (BLOCK_M, HEAD_DIM)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)

    full_n = (N_K // BLOCK_N) * BLOCK_N
    hi = N_K
    if IS_CAUSAL:
        full_n = tl.minimum(full_n, pid_m * BLOCK_M)
        hi = tl.minimum(N_K, (pid_m + 1) * BLOCK_M)
    acc, l_i, m_i = ws_tiles(acc, l_i, m_i, q, k_desc, v_desc, 0, full_n, offs_m, offs_n, N_K, qk_scale,
                             False, IS_CAUSAL, BLOCK_N, WARP_SPECIALIZE)
    # The diagonal and ragged tiles are few: kept out of the specialised loop.
    acc, l_i, m_i = ws_tiles(acc, l_i, m_i, q, k_desc, v_desc, full_n, hi, offs_m, offs_n, N_K, qk_scale,
                             True, IS_CAUSAL, BLOCK_N, False)
    o_desc.store([pid_m * BLOCK_M, 0], (acc / l_i[:, None]).to(o_ptr.dtype.element_ty))
    tl.store(lse_ptr + bh * N_Q + offs_m, m_i + tl.log2(l_i), mask=offs_m < N_Q)


def _global_scratch(size: int, alignment: int, stream):
    # On-device descriptors live in a small global scratch buffer Triton asks us for.
    return torch.empty(size, dtype=torch.int8, device="cuda")


@functools.cache
def _install_allocator() -> None:
    triton.set_allocator(_global_scratch)  # once per process


def warpspec_launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, tile: tuple = (128, 64, 8, 3), warp_specialize: bool = True) -> tuple:
    """Forward attention through tensor descriptors, optionally warp-specialised (no autograd);
    returns (output, compiled kernel), the latter for `kernels.ablation.compiler_report`.

    q: (..., Hq, Nq, D); k, v: (..., Hkv, Nk, D), Hq a multiple of Hkv; fp16 or bf16 on a
    CUDA GPU of compute capability 9.0 or newer (Hopper). The feature dim must be contiguous
    and every other stride a multiple of 16 bytes (a rule of the copy engine). ``tile`` is
    (BLOCK_M, BLOCK_N, num_warps, num_stages). The output is (..., Hq, Nq, D).
    """
    name = "warpspec_attention"
    scale = check_attention_inputs(name, q, k, v, causal, scale, allow_gqa=True)
    if INTERPRET or q.device.type != "cuda":
        raise RuntimeError(f"{name}: tensor descriptors need a CUDA GPU; use flash_attention on this machine")
    if torch.cuda.get_device_capability(q.device)[0] < 9:
        raise RuntimeError(f"{name}: tensor descriptors need compute capability >= 9.0 (Hopper), "
                           f"got {torch.cuda.get_device_capability(q.device)}; use flash_attention")
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"{name}: fp16 or bf16 only, got {q.dtype}")
    if not scale > 0:
        raise ValueError(f"{name}: scale must be > 0 (the fused exp2 form needs it), got {scale}")
    bm, bn, warps, stages = tile
    if bm % bn or bm & (bm - 1) or bn & (bn - 1):
        raise ValueError(f"{name}: tile {tile}: BLOCK_M and BLOCK_N must be powers of 2 with BLOCK_M % BLOCK_N == 0")
    if q.numel() == 0:
        return q * 0.0, None
    q4, k4, v4 = as_batch_heads(q), as_batch_heads(k), as_batch_heads(v)
    B, H, NQ, D = q4.shape
    H_KV, NK = k4.shape[1], k4.shape[2]
    o4 = new_output((B, H, NQ, D), dtype=q.dtype, device=q.device)
    for arg, t in (("q", q4), ("k", k4), ("v", v4), ("out", o4)):
        if t.stride(3) != 1 and D > 1:
            raise ValueError(f"{name}: {arg} must have a contiguous feature dim (stride 1), got strides {t.stride()}")
        bad = [s for s in t.stride()[:3] if (s * t.element_size()) % 16]
        if bad or t.data_ptr() % 16:
            raise ValueError(f"{name}: {arg} needs a 16-byte aligned start and strides that are multiples of "
                             f"16 bytes (D a multiple of 8 when contiguous), got strides {t.stride()}")
    lse = new_output((B, H, NQ), dtype=torch.float32, device=q.device)
    _install_allocator()
    compiled = _warpspec_fwd_kernel[(triton.cdiv(NQ, bm), B * H)](
        q4, k4, v4, o4, lse,
        *q4.stride()[:3], *k4.stride()[:3], *v4.stride()[:3], *o4.stride()[:3],
        H, H // H_KV, NQ, NK, D, scale * LOG2E,
        HEAD_DIM=max(16, next_pow2(D)), IS_CAUSAL=causal, BLOCK_M=bm, BLOCK_N=bn,
        WARP_SPECIALIZE=warp_specialize, num_warps=warps, num_stages=stages,
    )
    return o4.reshape(q.shape), compiled


def warpspec_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                       scale: float | None = None, tile: tuple = (128, 64, 8, 3),
                       warp_specialize: bool = True) -> torch.Tensor:
    """`warpspec_launch`'s output alone: q (..., Hq, Nq, D); k, v (..., Hkv, Nk, D) -> (..., Hq, Nq, D)."""
    return warpspec_launch(q, k, v, causal=causal, scale=scale, tile=tile, warp_specialize=warp_specialize)[0]
