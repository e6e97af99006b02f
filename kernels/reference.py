"""The reference every kernel is checked against: plain PyTorch in float64."""

from __future__ import annotations

import math

import torch

from .runtime import check_shapes


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
    check_shapes("reference_attention", q, k, v, allow_gqa=True)
    if q.shape[:-2] != k.shape[:-2]:  # grouped-query: check_shapes made Hq a multiple of Hkv
        group = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(group, dim=-3)
        v = v.repeat_interleave(group, dim=-3)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])

    q64, k64, v64 = q.double(), k.double(), v.double()
    s = (q64 @ k64.transpose(-1, -2)) * scale  # (..., Nq, Nk)
    if causal:
        nq, nk = s.shape[-2], s.shape[-1]
        keep = torch.ones(nq, nk, dtype=torch.bool, device=s.device).tril()
        # -inf (not a large negative number) so masked keys get exactly zero weight.
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return (p @ v64).to(q.dtype)
