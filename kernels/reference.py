"""The reference every kernel is checked against: plain PyTorch in float64.

``reference_attention`` covers full and causal attention and every variant of post 6 (sliding
window, soft-capping, ALiBi, sinks, a mask from a ``mask_mod``); ``reference_attention_varlen``
runs packed documents one at a time through it. Written from FlashAttention's test reference
(``attention_ref``, ``construct_local_mask``, ``attn_bias_from_alibi_slopes``) and gpt-oss's
sink formula, with the masks built densely so nothing here shares code with the kernels.
"""

from __future__ import annotations

import math

import torch

from .runtime import check_shapes


def window_keep(nq: int, nk: int, window_size=(-1, -1), *, causal: bool = False, device=None) -> torch.Tensor | None:
    """(nq, nk) bool: keys each query sees under ``window_size`` and ``causal``, or None (all).

    Without a window, ``causal`` is top-left aligned (query i sees keys j <= i, as
    ``scaled_dot_product_attention(is_causal=True)`` and the plain kernels). With a window,
    FlashAttention's convention: bottom-right aligned (the diagonal is j = i + nk - nq), query i
    sees keys i + nk - nq - left <= j <= i + nk - nq + right, -1 meaning unbounded on that side,
    and ``causal`` sets right = 0.
    """
    left, right = window_size
    i = torch.arange(nq, device=device)[:, None]
    j = torch.arange(nk, device=device)[None, :]
    if left < 0 and right < 0:
        return (j <= i) if causal else None
    if causal:
        right = 0
    diag = i + nk - nq
    keep = torch.ones(nq, nk, dtype=torch.bool, device=device)
    if left >= 0:
        keep &= j >= diag - left
    if right >= 0:
        keep &= j <= diag + right
    return keep


def alibi_bias(slopes: torch.Tensor, b: int, nq: int, nk: int) -> torch.Tensor:
    """(H, nq, nk) float64: -slope * |i + nk - nq - j| for batch row ``b`` (FlashAttention's bias)."""
    s = slopes.double()
    s = s if s.dim() == 1 else s[b]
    i = torch.arange(nq, device=s.device)[:, None]
    j = torch.arange(nk, device=s.device)[None, :]
    return -s[:, None, None] * (i + nk - nq - j).abs().double()


def _attend(q4, k4, v4, scale, keep, bias, softcap, sinks):
    # q4 (B, H, Nq, D) float64; keep broadcastable to (B, H, Nq, Nk) bool or None; bias the same, float64.
    s = (q4 @ k4.transpose(-1, -2)) * scale  # (B, H, Nq, Nk)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    if keep is not None:
        # -inf (not a large negative number) so masked keys get exactly zero weight.
        s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    if sinks is not None:
        m = torch.maximum(m, sinks.double()[None, :, None, None])
    # The shift cancels in the softmax, so it may be detached; a row with no key shifts by 0.
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(s - m)
    den = e.sum(dim=-1, keepdim=True)
    if sinks is not None:
        den = den + torch.exp(sinks.double()[None, :, None, None] - m)  # the sink: a weight, no value
    p = e / torch.where(den > 0, den, torch.ones_like(den))  # a row with no key: all weights 0, output 0
    return p @ v4


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    mask_mod=None,
    mask_aux: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(scale * q @ k^T [+ variants]) @ v, computed in float64.

    q: (..., Nq, D); k, v: (..., Nk, D) with matching leading dims, or with fewer
    heads (dim -3) than q for grouped-query attention. ``causal`` alone is top-left
    aligned, as in ``scaled_dot_product_attention(is_causal=True)``: query i sees
    keys j <= i; with a ``window_size`` see ``window_keep`` (FlashAttention's bottom-right
    convention). ``softcap`` > 0: scores s -> softcap * tanh(s / softcap) after scaling.
    ``alibi_slopes`` (H,) or (B, H): the bias -slope * |i + Nk - Nq - j| after the soft cap.
    ``sinks`` (H,): one logit per query head in every row's softmax denominator.
    ``mask_mod(b, h, q_idx, kv_idx[, mask_aux])``: keys where it is True are kept; it is called
    once on broadcast int64 index tensors (B,1,1,1), (1,H,1,1), (1,1,Nq,1), (1,1,1,Nk), so a
    ``@triton.jit`` mask written with operators only runs as is (its ``.fn``), else pass a
    plain-PyTorch twin. Rows with no key give 0. Returns (..., Nq, D) in q's dtype.
    Differentiable (autograd runs through the float64 graph, sinks included).
    """
    check_shapes("reference_attention", q, k, v, allow_gqa=True)
    if q.shape[:-2] != k.shape[:-2]:  # grouped-query: check_shapes made Hq a multiple of Hkv
        group = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(group, dim=-3)
        v = v.repeat_interleave(group, dim=-3)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    shape = q.shape

    def four(t):
        return t.reshape(-1, *t.shape[-3:]) if t.dim() >= 3 else t.reshape(1, 1, *t.shape)

    q4, k4, v4 = four(q).double(), four(k).double(), four(v).double()
    B, H, nq, _ = q4.shape
    nk = k4.shape[2]
    keep = window_keep(nq, nk, tuple(window_size), causal=causal, device=q.device)
    if mask_mod is not None:
        fn = getattr(mask_mod, "fn", mask_mod)  # a @triton.jit function's plain Python body
        idx = [torch.arange(n, device=q.device).reshape(*[n if a == d else 1 for a in range(4)])
               for d, n in enumerate((B, H, nq, nk))]
        dense = fn(*idx, mask_aux) if mask_aux is not None else fn(*idx)
        dense = torch.as_tensor(dense, device=q.device).to(torch.bool).expand(B, H, nq, nk)
        keep = dense if keep is None else dense & keep
    bias = None
    if alibi_slopes is not None:
        bias = torch.stack([alibi_bias(alibi_slopes, b, nq, nk) for b in range(B)])
    out = _attend(q4, k4, v4, scale, keep, bias, softcap, sinks)
    return out.reshape(shape).to(q.dtype)


def reference_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal: bool = False, scale=None,
                               window_size=(-1, -1), softcap: float = 0.0, alibi_slopes=None, sinks=None):
    """Packed documents, one at a time: q (total_q, Hq, D), k, v (total_k, Hkv, D), document b
    being rows cu_seqlens_q[b]:cu_seqlens_q[b+1] of q and the same of cu_seqlens_k for k, v.
    As FlashAttention's ``flash_attn_varlen_func``, ``causal`` is bottom-right aligned in each
    document (it is the window (left, 0)). ``alibi_slopes`` (H,) or (B, H): row b for document b.
    Returns (total_q, Hq, D) in q's dtype; a document with no key gives 0 rows."""
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs = []
    window = tuple(window_size)
    if causal:
        window = (window[0], 0)  # FlashAttention: causal is the window's right edge at the diagonal
    for b in range(len(cq) - 1):
        qd = q[cq[b]:cq[b + 1]].transpose(0, 1)  # (Hq, n_q, D)
        kd = k[ck[b]:ck[b + 1]].transpose(0, 1)
        vd = v[ck[b]:ck[b + 1]].transpose(0, 1)
        if qd.shape[1] == 0:
            continue
        if kd.shape[1] == 0:
            outs.append(torch.zeros_like(qd).transpose(0, 1))
            continue
        slopes = None
        if alibi_slopes is not None:
            slopes = alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[b]
        o = reference_attention(qd[None], kd[None], vd[None], scale=scale, window_size=window, softcap=softcap,
                                alibi_slopes=slopes, sinks=sinks)
        outs.append(o[0].transpose(0, 1))
    if not outs:
        return q * 0.0
    return torch.cat(outs, dim=0)
