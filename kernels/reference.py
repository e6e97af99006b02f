"""The reference every kernel is checked against: plain PyTorch in float64."""

from __future__ import annotations

import math

import torch

from ._runtime import MAX_HEAD_DIM


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(scale * q @ k^T [+ causal mask]) @ v, computed in float64.

    q: (..., Nq, D); k, v: (..., Nk, D) with matching leading dims, or with fewer
    heads (dim -3) than q for grouped-query attention. ``causal`` is top-left
    aligned, as in ``scaled_dot_product_attention(is_causal=True)``: query i sees
    keys j <= i. Returns (..., Nq, D) in q's dtype. Differentiable (autograd runs
    through the float64 graph).
    """
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"reference_attention: {arg} must be a torch.Tensor")
        if t.dim() < 2:
            raise ValueError(f"reference_attention: {arg} needs at least 2 dims, got {t.dim()}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"reference_attention: {arg} must be floating point, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"reference_attention: mixed dtypes {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"reference_attention: mixed devices {q.device}, {k.device}, {v.device}")
    d = q.shape[-1]
    if k.shape[-1] != d or v.shape[-1] != d:
        raise ValueError("reference_attention: q, k and v must share the head dim D")
    if not 0 < d <= MAX_HEAD_DIM:
        raise ValueError(f"reference_attention: head dim D={d} outside 1..{MAX_HEAD_DIM}")
    if k.shape[-2] != v.shape[-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError("reference_attention: k and v shapes differ")
    if k.shape[-2] == 0:
        raise ValueError("reference_attention: Nk=0, softmax over no keys is undefined")
    if q.shape[:-2] != k.shape[:-2]:
        if q.dim() < 3 or q.shape[:-3] != k.shape[:-3] or q.shape[-3] % k.shape[-3]:
            raise ValueError(
                f"reference_attention: leading dims {tuple(q.shape[:-2])} and "
                f"{tuple(k.shape[:-2])} do not match"
            )
        group = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(group, dim=-3)
        v = v.repeat_interleave(group, dim=-3)
    if scale is None:
        scale = 1.0 / math.sqrt(d)

    q64, k64, v64 = q.double(), k.double(), v.double()
    s = (q64 @ k64.transpose(-1, -2)) * scale  # (..., Nq, Nk)
    if causal:
        nq, nk = s.shape[-2], s.shape[-1]
        keep = torch.ones(nq, nk, dtype=torch.bool, device=s.device).tril()
        # -inf (not a large negative number) so masked keys get exactly zero weight.
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return (p @ v64).to(q.dtype)
