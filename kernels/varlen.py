"""Packed documents: ``flash_attention_varlen``, FlashAttention's ``flash_attn_varlen_func`` interface.

A training loop that packs documents of different lengths into one row keeps them apart with
``cu_seqlens``: document b is rows ``cu_seqlens[b]:cu_seqlens[b + 1]`` of the (total, H, D)
inputs. One launch covers every document: the grid is (max_seqlen blocks, documents x heads)
and each program reads its document's start and length from ``cu_seqlens``
(``kernels/variants.py``, ``IS_VARLEN``); programs past their document's end store nothing.
No padding is read or written.
"""

from __future__ import annotations

import torch

from .attention import PRECISIONS, _check_backend, run_variant, variant_setup
from .runtime import MAX_GRID_Y, check_attention_inputs

NAME = "flash_attention_varlen"


def check_cu_seqlens(arg: str, cu: torch.Tensor, total: int, max_seqlen, device) -> list[int]:
    """Validate one ``cu_seqlens``: int32, 1-D, on ``device``, starting at 0, non-decreasing, ending at
    ``total``, with no document longer than ``max_seqlen``. Returns it as a list (one host copy)."""
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"{NAME}: {arg} must be a torch.Tensor, got {type(cu).__name__}")
    if cu.dtype != torch.int32:
        raise TypeError(f"{NAME}: {arg} must be int32 (as FlashAttention's), got {cu.dtype}")
    if cu.device != torch.device(device):
        raise ValueError(f"{NAME}: {arg} is on {cu.device} but q on {device}")
    if cu.dim() != 1 or cu.numel() < 2:
        raise ValueError(f"{NAME}: {arg} must be 1-D of length documents + 1 >= 2, got shape {tuple(cu.shape)}")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < 0:
        raise TypeError(f"{NAME}: max_seqlen for {arg} must be an int >= 0, got {max_seqlen!r}")
    if torch.compiler.is_compiling():
        return []  # data-dependent checks need the values on the host: skipped inside a compiled graph
    values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"{NAME}: {arg} must start at 0, got {values[0]}")
    lengths = [b - a for a, b in zip(values, values[1:])]
    if min(lengths) < 0:
        bad = next(i for i, n in enumerate(lengths) if n < 0)
        raise ValueError(f"{NAME}: {arg} must be non-decreasing, but {arg}[{bad + 1}] = {values[bad + 1]} < "
                         f"{arg}[{bad}] = {values[bad]}")
    if values[-1] != total:
        raise ValueError(f"{NAME}: {arg} must end at the number of packed tokens, {total}, got {values[-1]}")
    if max(lengths) > max_seqlen:
        raise ValueError(f"{NAME}: a document of {arg} has {max(lengths)} tokens, more than max_seqlen = {max_seqlen}")
    return values


def flash_attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                           cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, *,
                           causal: bool = False, scale: float | None = None, window_size: tuple[int, int] = (-1, -1),
                           softcap: float = 0.0, alibi_slopes: torch.Tensor | None = None,
                           sinks: torch.Tensor | None = None, backend: str = "auto",
                           precision: str = "ieee") -> torch.Tensor:
    """Attention within each packed document, one launch for all (FlashAttention's varlen interface).

    q: (total_q, Hq, D); k, v: (total_k, Hkv, D), Hq a multiple of Hkv. ``cu_seqlens_q`` and
    ``cu_seqlens_k``: int32 (documents + 1,) on q's device, 0 first, non-decreasing, the total
    last; document b's queries are q[cu_seqlens_q[b]:cu_seqlens_q[b + 1]] and it attends to its own
    keys only. ``max_seqlen_q``/``max_seqlen_k``: the longest document (sizes the grid). A
    document may have 0 queries or 0 keys (its rows are then 0). ``causal`` is bottom-right
    aligned in each document, as in FlashAttention (the window (left, 0)); the other keywords
    are ``flash_attention``'s, ``alibi_slopes`` (Hq,) or (documents, Hq). Returns (total_q, Hq, D).
    Reads ``cu_seqlens`` on the host once to check it (outside ``torch.compile``).
    """
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{NAME}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{NAME}: {arg} must be (total, H, D), got shape {tuple(t.shape)}")
    # The shared checks read (..., N, D): look at the inputs as (H, total, D).
    scale = check_attention_inputs(NAME, q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), causal, scale,
                                   allow_gqa=True)
    _check_backend(backend)
    if precision not in PRECISIONS:
        raise ValueError(f"{NAME}: precision must be one of {PRECISIONS}, got {precision!r}")
    cq = check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q, q.device)
    ck = check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k, q.device)
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(f"{NAME}: cu_seqlens_q and cu_seqlens_k must have the same length (documents + 1), got "
                         f"{cu_seqlens_q.numel()} and {cu_seqlens_k.numel()}")
    docs = cu_seqlens_q.numel() - 1
    if docs * q.shape[1] > MAX_GRID_Y:
        raise ValueError(f"{NAME}: {docs} documents x {q.shape[1]} heads = {docs * q.shape[1]} programs along the "
                         f"grid's second axis, more than {MAX_GRID_Y}: split the batch")
    del cq, ck
    setup = variant_setup(NAME, q, k, v, causal, window_size, softcap, alibi_slopes, sinks, None, backend,
                          varlen=(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, docs))
    if q.shape[0] == 0:
        return q * 0.0 + (sinks.sum() * 0.0 if sinks is not None else 0.0)
    precision = precision if q.dtype == torch.float32 else "ieee"
    o4 = run_variant(setup, q.permute(1, 0, 2)[None], k.permute(1, 0, 2)[None], v.permute(1, 0, 2)[None],
                     scale, precision)
    return o4[0].permute(1, 0, 2)
