"""Post 6's variants (kernels/variants.py) against the float64 reference, forward and backward.

Modelled on FlashAttention's own variant tests (tests/test_flash_attn.py): awkward lengths, Nq != Nk
(bottom-right alignment), windows of zero width and wider than the sequence, rows with no key,
grouped-query heads, packed documents of length 0 and 1, and every variant with its backward
(dq, dk, dv, and dsinks where the sinks are learned). Output buffers start as NaN
(KERNELS_POISON_OUTPUTS, tests/helpers.py), inputs are fresh per test. On the CPU the interpreter
runs small fp32 (and a few fp16) cases; on the GPU the same tests run larger, in fp16 and bf16,
against 2x PyTorch's own low-precision error.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl

import kernels
from helpers import DEVICE, DTYPES, INTERPRET, max_err, rand, tolerance
from kernels import attention
from kernels.block_mask import ABSENT, FULL, PARTIAL
from kernels.reference import alibi_bias, window_keep

pytestmark = [pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

B, H, HKV = (2, 2, 1) if INTERPRET else (2, 4, 2)
N_ALL = [1, 7, 63, 100, 257]
D_ALL = [16, 40, 64]
LOWP = [t for t in DTYPES if t != torch.float32]


# ----------------------------------------------------------------------------- yardsticks


def lowp_attention(q, k, v, *, keep=None, bias=None, softcap=0.0, sinks=None, scale=None):
    """PyTorch eager in q's dtype (fp32 softmax, as a fused kernel keeps it): the yardstick for
    fp16/bf16 error. ``keep``/``bias`` broadcast to (B, H, Nq, Nk)."""
    if q.shape[-3] != k.shape[-3]:
        g = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(g, dim=-3), v.repeat_interleave(g, dim=-3)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-1, -2)).float() * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + bias.float()
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(-1, keepdim=True)
    if sinks is not None:
        m = torch.maximum(m, sinks.float()[None, :, None, None])
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(s - m)
    den = e.sum(-1, keepdim=True)
    if sinks is not None:
        den = den + torch.exp(sinks.float()[None, :, None, None] - m)
    p = e / torch.where(den > 0, den, torch.ones_like(den))
    return p.to(q.dtype) @ v


def grads_of(fn, tensors, do):
    """(out, grads of every tensor) with fresh leaves."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(do)
    return out, [t.grad for t in leaves]


def assert_close(name, got, ref, dtype, theirs=None, *, grad=False):
    assert got is not None and got.shape == ref.shape, (name, None if got is None else got.shape, ref.shape)
    assert not got.isnan().any(), f"{name}: NaN (unwritten or 0/0) elements"
    scale_ = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    if dtype == torch.float32:
        tol = (5e-5 if grad else 2e-5) * scale_
    elif INTERPRET:
        tol = (2.0**-7 if grad else 2.0**-9) * scale_
    else:
        tol = tolerance(dtype, ref, max_err(theirs, ref))
    err = max_err(got, ref)
    assert err <= tol, f"{name}: max abs error {err:.3e} > {tol:.3e}"


def check(q, k, v, dtype, *, sinks=None, lowp_kw=None, **kw):
    """flash_attention(**kw) against reference_attention(**kw): output, dq, dk, dv (and dsinks)."""
    q, k, v = (t.to(dtype) for t in (q, k, v))
    do = torch.randn(q.shape, device=q.device).to(dtype)
    names = ["o", "dq", "dk", "dv"] + (["dsinks"] if sinks is not None else [])
    tensors = [q, k, v] + ([sinks] if sinks is not None else [])

    def ours(q_, k_, v_, *s):
        return kernels.flash_attention(q_, k_, v_, sinks=s[0] if s else None, **kw)

    def ref(q_, k_, v_, *s):
        return kernels.reference_attention(q_, k_, v_, sinks=s[0] if s else None, **kw)

    out, g = grads_of(ours, tensors, do)
    rout, rg = grads_of(ref, [t.double() for t in tensors], do.double())
    theirs = [None] * len(names)
    if dtype != torch.float32 and not INTERPRET:
        lw = dict(lowp_kw or {})

        def lowp(q_, k_, v_, *s):
            return lowp_attention(q_, k_, v_, sinks=s[0] if s else None, **lw)

        tout, tg = grads_of(lowp, tensors, do)
        theirs = [tout, *tg]
    for name, a, r, t in zip(names, [out, *g], [rout, *rg], theirs):
        assert_close(name, a, r.to(a.dtype) if name == "dsinks" else r, dtype, t, grad=name != "o")
    return out


def lowp_kw_of(nq, nk, *, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, scale=None):
    """The keyword arguments of ``lowp_attention`` equivalent to flash_attention's."""
    keep = window_keep(nq, nk, window_size, causal=causal, device=DEVICE)
    bias = None
    if alibi_slopes is not None:
        bias = torch.stack([alibi_bias(alibi_slopes, b, nq, nk) for b in range(B)]).float()
    return dict(keep=keep, bias=bias, softcap=softcap, scale=scale)


def qkv(nq, nk, d, hq=H, hkv=HKV):
    return rand(B, hq, nq, d), rand(B, hkv, nk, d), rand(B, hkv, nk, d)


def slopes(shape):
    # ALiBi's geometric slopes 2^(-8 i / H), times a random factor so each test sees new ones.
    h = shape[-1]
    base = torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)], device=DEVICE)
    return (base * (0.5 + torch.rand(shape, device=DEVICE))).float().contiguous()


def sink_logits(hq=H):
    return torch.randn(hq, device=DEVICE) * 2.0


# ----------------------------------------------------------------------------- each variant


# The interpreter takes seconds per launch at N = 257: there the variants run a diagonal of
# (N, D) and N = 257 only for the window, whose tile skipping is the point; the GPU runs all.
INTERPRETER_SQUARE = {(1, 16), (7, 40), (63, 64), (100, 40)}


def square_cases(variant):
    for n in N_ALL:
        for d in D_ALL:
            if INTERPRET and (n, d) not in INTERPRETER_SQUARE and not (variant == "window" and (n, d) == (257, 16)):
                continue
            yield pytest.param(n, d, id=f"N{n}-D{d}")


VARIANTS = {
    "window": lambda n: dict(window_size=(max(1, n // 4), max(0, n // 8))),
    "window-left-only": lambda n: dict(window_size=(n // 3, -1)),
    "causal-window": lambda n: dict(window_size=(n // 5, -1), causal=True),
    "softcap": lambda n: dict(softcap=2.5),
    "alibi": lambda n: dict(alibi_slopes=slopes((H,))),
    "alibi-batch": lambda n: dict(alibi_slopes=slopes((B, H))),
}


@pytest.mark.parametrize("variant,n,d", [pytest.param(v, *c.values, id=f"{v}-{c.id}") for v in VARIANTS
                                         for c in square_cases(v)])
def test_variant_square(variant, n, d):
    kw = VARIANTS[variant](n)
    check(*qkv(n, n, d), torch.float32, **kw)


@pytest.mark.parametrize("n,d", [(1, 16), (63, 40)] if INTERPRET else list(square_cases("sinks")))
def test_sinks_learned(n, d):
    check(*qkv(n, n, d), torch.float32, sinks=sink_logits().requires_grad_(), causal=True)


@pytest.mark.parametrize("dtype", LOWP)
@pytest.mark.parametrize("variant", ["window", "softcap", "alibi", "causal-window"])
@pytest.mark.parametrize("d", [40] if INTERPRET else [64, 128])
def test_variant_low_precision(variant, dtype, d):
    # D = 128 on the GPU: its dK/dV tile (8 warps) is where a transposed-tile dot miscompiled.
    n = 63 if INTERPRET else 257
    kw = VARIANTS[variant](n)
    check(*qkv(n, n, d), dtype, lowp_kw=lowp_kw_of(n, n, **kw), **kw)


@pytest.mark.parametrize("dtype", LOWP)
def test_sinks_low_precision(dtype):
    n, d = (63, 40) if INTERPRET else (257, 128)
    check(*qkv(n, n, d), dtype, sinks=sink_logits().requires_grad_(), lowp_kw=lowp_kw_of(n, n, causal=True),
          causal=True)


# ----------------------------------------------------------------------------- alignment and edge cases

NQ_NK = [(7, 63), (63, 7), (1, 100), (100, 1), (100, 257)] if not INTERPRET else [(7, 63), (63, 7), (1, 100), (100, 40)]


@pytest.mark.parametrize("nq,nk", NQ_NK, ids=[f"{a}x{b}" for a, b in NQ_NK])
@pytest.mark.parametrize("kw", [dict(window_size=(5, 3)), dict(window_size=(0, 0)), dict(window_size=(-1, 0)),
                                dict(window_size=(4, -1)), dict(alibi_slopes="H"), dict(softcap=1.5, causal=True)],
                         ids=["window5-3", "window0-0", "br-causal", "left4", "alibi", "softcap-causal"])
def test_nq_ne_nk(nq, nk, kw):
    kw = {key: (slopes((H,)) if val == "H" else val) for key, val in kw.items()}
    check(*qkv(nq, nk, 40), torch.float32, **kw)


def test_window_is_bottom_right_aligned_like_flash_attention():
    # Nq = 2, Nk = 10, window (2, 0): FlashAttention's query i sees keys i + 8 - 2 .. i + 8, so row 0
    # attends to keys 6..8 and row 1 to keys 7..9. Checked against plain softmax over those keys.
    q, k, v = rand(1, 1, 2, 16), rand(1, 1, 10, 16), rand(1, 1, 10, 16)
    out = kernels.flash_attention(q, k, v, window_size=(2, 0))
    for i, keys in ((0, slice(6, 9)), (1, slice(7, 10))):
        p = torch.softmax((q[0, 0, i].double() @ k[0, 0, keys].double().T) / 4.0, -1)
        assert max_err(out[0, 0, i], (p @ v[0, 0, keys].double()).float()) <= 1e-5


@pytest.mark.parametrize("trial", range(4))
def test_window_schedule_skips_only_invisible_tiles(trial):
    # The kernel's loop bounds (mirrored by variants.window_tile_kinds): a skipped tile holds no
    # visible (query, key) pair, an unmasked one holds only visible pairs; at awkward sizes.
    from kernels.variants import SKIPPED, UNMASKED, window_tile_kinds

    g = torch.Generator().manual_seed(trial)
    for _ in range(25):
        nq, nk = (int(x) for x in torch.randint(1, 400, (2,), generator=g))
        left, right = (int(x) for x in torch.randint(-1, 200, (2,), generator=g))
        bm, bn = [(128, 64), (64, 64), (32, 32), (128, 32)][int(torch.randint(0, 4, (1,), generator=g))]
        br = bool(torch.randint(0, 2, (1,), generator=g))
        keep = window_keep(nq, nk, (left, right)) if br else None
        if not br:  # top-left: the diagonal is j = i (plain causal, with right = 0, is this case)
            i, j = torch.arange(nq)[:, None], torch.arange(nk)[None, :]
            keep = torch.ones(nq, nk, dtype=torch.bool)
            keep &= (j >= i - left) if left >= 0 else keep
            keep &= (j <= i + right) if right >= 0 else keep
        if keep is None:
            keep = torch.ones(nq, nk, dtype=torch.bool)
        kinds = window_tile_kinds(nq, nk, (left, right), bottom_right=br, block_m=bm, block_n=bn)
        for a, row in enumerate(kinds):
            for c, kind in enumerate(row):
                tile = keep[a * bm:(a + 1) * bm, c * bn:(c + 1) * bn]
                if kind == SKIPPED:
                    assert not tile.any(), (nq, nk, left, right, br, bm, bn, a, c)
                if kind == UNMASKED:
                    # Rows past Nq may ride along (q = 0, never stored); keys past Nk may not.
                    assert tile.all() and tile.shape[1] == bn, (nq, nk, left, right, br, bm, bn, a, c)


@pytest.mark.parametrize("window", [(0, 0), (300, 300), (-1, 300), (300, -1), (0, -1)],
                         ids=["zero-width", "wider", "right-wide", "left-wide", "left0"])
def test_extreme_windows(window):
    n = 70
    out = check(*qkv(n, n, 16), torch.float32, window_size=window)
    if window == (300, 300):  # wider than the sequence: full attention
        q, k, v = qkv(n, n, 16)
        assert max_err(kernels.flash_attention(q, k, v, window_size=window), kernels.flash_attention(q, k, v)) <= 1e-5
    assert out.isfinite().all()


@pytest.mark.parametrize("with_sinks", [False, True], ids=["plain", "sinks"])
def test_rows_with_no_key_give_zero_and_no_nan(with_sinks):
    # Nq > Nk, window (0, 0): query i sees key i + Nk - Nq only, so rows i < Nq - Nk see nothing.
    nq, nk = 50, 20
    q, k, v = (t.requires_grad_() for t in qkv(nq, nk, 16))
    sinks = sink_logits().requires_grad_() if with_sinks else None
    out = kernels.flash_attention(q, k, v, window_size=(0, 0), sinks=sinks)
    assert (out[:, :, : nq - nk] == 0).all(), "rows with no key must be exactly 0"
    assert out.isfinite().all()
    out.backward(torch.randn_like(out))
    for name, t in (("q", q), ("k", k), ("v", v)) + ((("sinks", sinks),) if with_sinks else ()):
        assert t.grad.isfinite().all(), f"d{name} has NaN/inf"
    assert (q.grad[:, :, : nq - nk] == 0).all()
    check(*qkv(nq, nk, 16), torch.float32, window_size=(0, 0),
          sinks=sink_logits().requires_grad_() if with_sinks else None)


@pytest.mark.parametrize("hq,hkv", [(4, 2), (4, 1), (6, 3)], ids=["gqa4-2", "mqa4-1", "gqa6-3"])
def test_grouped_query_with_every_variant(hq, hkv):
    n = 45
    q, k, v = rand(B, hq, n, 40), rand(B, hkv, n + 9, 40), rand(B, hkv, n + 9, 40)
    check(q, k, v, torch.float32, window_size=(11, 4), softcap=3.0, alibi_slopes=slopes((B, hq)),
          sinks=sink_logits(hq).requires_grad_())


def test_composition_causal_window_softcap_alibi_sinks():
    n = 70 if INTERPRET else 257
    check(*qkv(n, n, 40), torch.float32, causal=True, window_size=(30, -1), softcap=4.0,
          alibi_slopes=slopes((H,)), sinks=sink_logits().requires_grad_())


def test_strided_inputs():
    n, d = 70, 40
    mk = lambda h: rand(B, n, h, d).transpose(1, 2)  # noqa: E731  (B, N, H, D) memory
    check(mk(H), mk(HKV), mk(HKV), torch.float32, window_size=(9, 9), softcap=2.0)


def test_sinks_without_grad_and_fp16_sinks():
    n = 40
    q, k, v = qkv(n, n, 16)
    s = sink_logits()
    ref = kernels.reference_attention(q, k, v, sinks=s)
    assert max_err(kernels.flash_attention(q, k, v, sinks=s), ref) <= 2e-5
    low = s.half()
    ref16 = kernels.reference_attention(q, k, v, sinks=low)
    assert max_err(kernels.flash_attention(q, k, v, sinks=low), ref16) <= 2e-5


# ----------------------------------------------------------------------------- packed documents


def packed(lens_q, lens_k, d, hq=H, hkv=HKV):
    cq = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    ck = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    q = rand(sum(lens_q), hq, d)
    k, v = rand(sum(lens_k), hkv, d), rand(sum(lens_k), hkv, d)
    return q, k, v, cq, ck


def check_varlen(lens_q, lens_k, d, dtype=torch.float32, *, sinks=None, **kw):
    q, k, v, cq, ck = packed(lens_q, lens_k, d, hq=kw.pop("hq", H), hkv=kw.pop("hkv", HKV))
    q, k, v = (t.to(dtype) for t in (q, k, v))
    mq, mk = max(lens_q), max(lens_k)
    do = torch.randn(q.shape, device=DEVICE).to(dtype)
    tensors = [q, k, v] + ([sinks] if sinks is not None else [])
    out, g = grads_of(lambda *t: kernels.flash_attention_varlen(t[0], t[1], t[2], cq, ck, mq, mk,
                                                                sinks=t[3] if len(t) > 3 else None, **kw),
                      tensors, do)
    rout, rg = grads_of(lambda *t: kernels.reference_attention_varlen(t[0], t[1], t[2], cq, ck,
                                                                      sinks=t[3] if len(t) > 3 else None, **kw),
                        [t.double() for t in tensors], do.double())
    for name, a, r in zip(["o", "dq", "dk", "dv", "dsinks"], [out, *g], [rout, *rg]):
        if dtype != torch.float32 and not INTERPRET:
            # The yardstick: the same documents one by one through PyTorch in dtype.
            assert not a.isnan().any(), name
            tol = 2 ** -6 * max(1.0, r.abs().max().item())
            assert max_err(a, r) <= tol, name
        else:
            assert_close(name, a, r.to(a.dtype), dtype, grad=name != "o")
    return out


DOCS = {
    "mixed": ([5, 40, 1, 17, 33], [5, 40, 1, 17, 33]),
    "empty-and-one": ([0, 1, 30, 0, 12], [0, 1, 30, 0, 12]),
    "q-ne-k": ([3, 20, 1, 9], [10, 7, 25, 1]),
    "no-keys": ([4, 6, 8], [4, 0, 8]),
}
if not INTERPRET:
    DOCS["long"] = ([128, 1, 700, 257, 63], [128, 1, 700, 257, 63])

VARLEN_KW = {
    "plain": dict(),
    "causal": dict(causal=True),
    "window": dict(window_size=(6, 2)),
    "causal-window-softcap": dict(causal=True, window_size=(5, -1), softcap=2.0),
    "alibi-docs": "alibi",
    "gqa-sinks": "sinks",
}


@pytest.mark.parametrize("docs", list(DOCS))
@pytest.mark.parametrize("variant", list(VARLEN_KW))
def test_varlen(docs, variant):
    lens_q, lens_k = DOCS[docs]
    kw = VARLEN_KW[variant]
    if kw == "alibi":
        kw = dict(alibi_slopes=slopes((len(lens_q), H)), causal=True)
    elif kw == "sinks":
        kw = dict(sinks=sink_logits(4).requires_grad_(), hq=4, hkv=2, causal=True)
    else:
        kw = dict(kw)
    d = 40 if docs != "mixed" else 16
    check_varlen(lens_q, lens_k, d, **kw)


def test_varlen_every_variant_at_once():
    lens_q, lens_k = [9, 1, 0, 40, 14], [12, 1, 3, 40, 0]
    check_varlen(lens_q, lens_k, 40, causal=True, window_size=(7, -1), softcap=3.0, hq=4, hkv=2,
                 alibi_slopes=slopes((len(lens_q), 4)), sinks=sink_logits(4).requires_grad_())


@pytest.mark.parametrize("dtype", LOWP)
def test_varlen_low_precision(dtype):
    lens = [33, 1, 64, 0, 20] if INTERPRET else [511, 1, 1024, 0, 300]
    check_varlen(lens, lens, 64, dtype, causal=True, window_size=(50, -1), softcap=5.0)


def test_varlen_matches_one_call_per_document():
    lens = [9, 30, 1, 22]
    q, k, v, cq, ck = packed(lens, lens, 16)
    out = kernels.flash_attention_varlen(q, k, v, cq, ck, max(lens), max(lens), causal=True, softcap=3.0)
    for a, b in zip(cq.tolist(), cq.tolist()[1:]):
        one = kernels.flash_attention(q[a:b].transpose(0, 1)[None], k[a:b].transpose(0, 1)[None],
                                      v[a:b].transpose(0, 1)[None], causal=True, softcap=3.0)
        assert max_err(out[a:b], one[0].transpose(0, 1)) <= 1e-5


# ----------------------------------------------------------------------------- block masks


@triton.jit
def causal_mask(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


@triton.jit
def sliding_window_mask(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx <= 40)


@triton.jit
def prefix_lm_mask(b, h, q_idx, kv_idx, prefix_ptr):
    # Bidirectional over each batch row's prefix, causal after it.
    return (kv_idx <= q_idx) | (kv_idx < tl.load(prefix_ptr + b))


@triton.jit
def document_mask(b, h, q_idx, kv_idx, doc_ptr):
    # Tokens see earlier tokens of their own document only (doc_ptr: a document id per token).
    return (tl.load(doc_ptr + q_idx) == tl.load(doc_ptr + kv_idx)) & (q_idx >= kv_idx)


def prefix_twin(b, h, q_idx, kv_idx, prefix):
    return (kv_idx <= q_idx) | (kv_idx < prefix[b])


def document_twin(b, h, q_idx, kv_idx, doc):
    return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)


def check_block_mask(mask, q, k, v, *, twin=None, aux=None, **kw):
    dtype = q.dtype
    do = torch.randn(q.shape, device=DEVICE).to(dtype)
    sinks = kw.pop("sinks", None)
    tensors = [q, k, v] + ([sinks] if sinks is not None else [])
    out, g = grads_of(lambda *t: kernels.flash_attention(t[0], t[1], t[2], block_mask=mask,
                                                         sinks=t[3] if len(t) > 3 else None, **kw), tensors, do)
    rout, rg = grads_of(lambda *t: kernels.reference_attention(t[0], t[1], t[2], mask_mod=twin or mask.mask_mod,
                                                               mask_aux=aux, sinks=t[3] if len(t) > 3 else None,
                                                               **kw),
                        [t.double() for t in tensors], do.double())
    for name, a, r in zip(["o", "dq", "dk", "dv", "dsinks"], [out, *g], [rout, *rg]):
        assert_close(name, a, r.to(a.dtype), torch.float32, grad=name != "o")
    return out


BLOCK = 64 if INTERPRET else 128


@pytest.mark.parametrize("n", [130] if INTERPRET else [257, 1000])
def test_block_mask_sliding_window_and_causal(n):
    q, k, v = qkv(n, n, 40)
    for fn in (causal_mask, sliding_window_mask):
        mask = kernels.block_mask(fn, 1, 1, n, n, block=BLOCK)
        counts = mask.counts()
        assert counts["absent"] > 0 and counts["full"] + counts["partial"] > 0
        check_block_mask(mask, q, k, v)
    # The sliding window as a block mask and as window_size give the same attention.
    mask = kernels.block_mask(sliding_window_mask, 1, 1, n, n, block=BLOCK)
    assert max_err(kernels.flash_attention(q, k, v, block_mask=mask),
                   kernels.flash_attention(q, k, v, window_size=(40, 0))) <= 1e-5


def test_block_mask_prefix_lm_per_batch_row():
    n = 150 if INTERPRET else 700
    prefix = torch.tensor([37, 90][:B] + [5] * max(0, B - 2), dtype=torch.int32, device=DEVICE)
    mask = kernels.block_mask(prefix_lm_mask, B, 1, n, n, block=BLOCK, aux=prefix)
    q, k, v = qkv(n, n, 16)
    check_block_mask(mask, q, k, v, twin=prefix_twin, aux=prefix, softcap=3.0)


def test_block_mask_documents_with_gqa_sinks_and_alibi():
    lens = [30, 1, 70, 19] if INTERPRET else [300, 1, 900, 199]
    n = sum(lens)
    doc = torch.repeat_interleave(torch.arange(len(lens), device=DEVICE), torch.tensor(lens, device=DEVICE))
    doc = doc.to(torch.int32)
    mask = kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=doc)
    assert mask.counts()["absent"] > 0
    q, k, v = rand(B, 4, n, 16), rand(B, 2, n, 16), rand(B, 2, n, 16)
    check_block_mask(mask, q, k, v, twin=document_twin, aux=doc.long(), sinks=sink_logits(4).requires_grad_(),
                     alibi_slopes=slopes((4,)))


def test_ready_made_mask_mods_per_batch_row():
    # kernels.block_mask's packed_documents (ids per batch row via document_aux) and prefix_lm.
    from kernels.block_mask import document_aux, packed_documents, prefix_lm

    n = 140 if INTERPRET else 600
    lens = [[20, 1, 60, 59], [100, 40]] if INTERPRET else [[200, 1, 250, 149], [500, 100]]
    doc = torch.stack([torch.repeat_interleave(torch.arange(len(row)), torch.tensor(row)) for row in lens]).to(DEVICE)
    q, k, v = rand(2, 2, n, 16), rand(2, 1, n, 16), rand(2, 1, n, 16)
    mask = kernels.block_mask(packed_documents, 2, 1, n, n, block=BLOCK, aux=document_aux(doc))
    assert mask.counts()["absent"] > 0
    check_block_mask(mask, q, k, v, twin=lambda b, h, qi, ki, d: (d[b, qi] == d[b, ki]) & (qi >= ki), aux=doc)
    prefix = torch.tensor([30, 100], dtype=torch.int32, device=DEVICE)
    mask = kernels.block_mask(prefix_lm, 2, 1, n, n, block=BLOCK, aux=prefix)
    check_block_mask(mask, q, k, v, twin=prefix_twin, aux=prefix.long())


def test_block_mask_nq_ne_nk_and_ragged_blocks():
    nq, nk = 70, 150
    mask = kernels.block_mask(causal_mask, B, H, nq, nk, block=BLOCK)
    check_block_mask(mask, *qkv(nq, nk, 40))


def test_block_mask_kinds_match_a_dense_evaluation():
    n = 200
    mask = kernels.block_mask(sliding_window_mask, 1, 1, n, n, block=BLOCK)
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    dense = (i >= j) & (i - j <= 40)
    nb = triton.cdiv(n, BLOCK)
    for qb in range(nb):
        for kb in range(nb):
            tile = dense[qb * BLOCK:(qb + 1) * BLOCK, kb * BLOCK:(kb + 1) * BLOCK]
            want = FULL if tile.all() else PARTIAL if tile.any() else ABSENT
            assert int(mask.kind[0, 0, qb, kb]) == want, (qb, kb)
    full, part = mask.kv_num[0, 0].tolist()[1]
    assert full + part == int((mask.kind[0, 0, 1] != ABSENT).sum())


def _relabel(mask, qb, kb, kind):
    """``mask`` with tile (qb, kb) of every (b, h) relabelled ``kind``, lists rebuilt (both directions)."""
    import dataclasses

    from kernels.block_mask import _lists

    table = mask.kind.clone()
    table[:, :, qb, kb] = kind
    kv_num, kv_idx = _lists(table)
    q_num, q_idx = _lists(table.transpose(-1, -2))
    return dataclasses.replace(mask, kind=table, kv_num=kv_num, kv_idx=kv_idx, q_num=q_num, q_idx=q_idx)


@pytest.mark.parametrize("relabel", ["absent", "full"])
def test_kernel_follows_the_block_lists(relabel):
    # The kernel never visits an ABSENT tile and never calls mask_mod in a FULL one: relabel one
    # partial (diagonal) tile and the result is the dense mask with that tile all-False / all-True.
    n = 2 * BLOCK + 10
    mask = kernels.block_mask(causal_mask, 1, 1, n, n, block=BLOCK)
    assert int(mask.kind[0, 0, 1, 1]) == PARTIAL
    edited = _relabel(mask, 1, 1, ABSENT if relabel == "absent" else FULL)
    tile = slice(BLOCK, 2 * BLOCK)

    def twin(b, h, q_idx, kv_idx):
        keep = (q_idx >= kv_idx).expand(1, 1, n, n).clone()
        keep[..., tile, tile] = relabel == "full"
        return keep

    check_block_mask(edited, *qkv(n, n, 16), twin=twin)


def test_block_mask_build_is_cached():
    a = kernels.block_mask(causal_mask, 1, 1, 90, 90, block=BLOCK)
    assert kernels.block_mask(causal_mask, 1, 1, 90, 90, block=BLOCK) is a
    assert kernels.block_mask(causal_mask, 1, 1, 91, 90, block=BLOCK) is not a
    # Two query blocks at any BLOCK: one document makes key block 0 FULL for query block 1; a
    # second document starting inside key block 0 makes it PARTIAL, so the counts must change.
    n = BLOCK + 30
    doc = torch.zeros(n, dtype=torch.int32, device=DEVICE)
    m1 = kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=doc)
    assert m1.counts() == {"full": 1, "partial": 2, "absent": 1}
    assert kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=doc) is m1
    doc[BLOCK // 2:] = 1  # writing into aux bumps its version: the mask is built anew
    m2 = kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=doc)
    assert m2 is not m1 and m2.counts() == {"full": 0, "partial": 3, "absent": 1}
    assert kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=doc) is m2
    # A different tensor with other contents never gets the old mask, even if the allocator hands
    # it the freed memory of an earlier one: the cache holds the tensors it was built from.
    del doc, m1, m2
    for _ in range(3):
        fresh = torch.zeros(n, dtype=torch.int32, device=DEVICE)
        fresh[BLOCK // 2:] = 1
        assert kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=fresh).counts()["full"] == 0
        fresh = torch.zeros(n, dtype=torch.int32, device=DEVICE)
        assert kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=fresh).counts()["full"] == 1
    # A non-contiguous aux (copied for the kernel) still hits the cache when passed again.
    wide = torch.zeros((n, 2), dtype=torch.int32, device=DEVICE)[:, 0]
    m3 = kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=wide)
    assert kernels.block_mask(document_mask, 1, 1, n, n, block=BLOCK, aux=wide) is m3


# ----------------------------------------------------------------------------- router, plan, compile


def test_plan_and_backends_for_variants():
    q, k, v = qkv(40, 40, 16)
    p = kernels.plan(q, k, v, softcap=2.0, window_size=(4, 4), backward=True)
    assert (p.forward, p.dkdv, p.dq) == ("pointer", "pointer", "pointer")
    assert "softcap" in p.why["forward"] and "window_size" in p.why["forward"]
    for backend in ("gluon", "splitk"):
        with pytest.raises(ValueError, match=rf"backend='{backend}' has no sinks"):
            kernels.flash_attention(q, k, v, sinks=sink_logits(), backend=backend)
        with pytest.raises(ValueError, match="alibi_slopes"):
            kernels.plan(q, k, v, alibi_slopes=slopes((H,)), backend=backend)
    out = kernels.flash_attention(q, k, v, softcap=2.0, backend="pointer")
    assert max_err(out, kernels.reference_attention(q, k, v, softcap=2.0)) <= 2e-5
    # No variant: the plain router, unchanged.
    assert kernels.plan(q, k, v, window_size=(-1, -1)).why == kernels.plan(q, k, v).why


def test_variant_custom_ops_pass_torch_library_checks():
    q, k, v = (t.requires_grad_() for t in qkv(9, 17, 16))
    s = sink_logits().requires_grad_()
    torch.library.opcheck(attention.variant_fwd_op,
                          (q, k, v, slopes((H,)), s, None, None, 0.25, "ieee", 3, 0, True, True, 2.0, 0, 0),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_varlen_custom_op_passes_torch_library_checks():
    q, k, v, cq, ck = packed([5, 0, 12], [7, 3, 12], 16)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    torch.library.opcheck(attention.variant_fwd_op,
                          (q, k, v, None, None, cq, ck, 0.25, "ieee", 4, 0, True, True, 0.0, 12, 12),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_torch_compile_fullgraph_with_variants():
    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sinks = torch.nn.Parameter(sink_logits())

        def forward(self, q, k, v):
            return kernels.flash_attention(q, k, v, causal=True, window_size=(8, -1), softcap=3.0,
                                           sinks=self.sinks) * 2.0

    q, k, v = qkv(20, 20, 16)
    do = rand(*q.shape)
    model = Attn()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = grads_of(lambda *t: compiled(*t), [q, k, v], do)
    got_sinks = model.sinks.grad.clone()
    model.sinks.grad = None
    want = grads_of(lambda *t: model(*t), [q, k, v], do)
    for g, w in zip([got[0], *got[1]], [want[0], *want[1]]):
        assert max_err(g, w) <= 1e-6
    assert max_err(got_sinks, model.sinks.grad) <= 1e-6


def test_torch_compile_fullgraph_varlen():
    q, k, v, cq, ck = packed([5, 0, 12, 3], [5, 0, 12, 3], 16)
    s = sink_logits()

    def f(q_, k_, v_, s_):
        return kernels.flash_attention_varlen(q_, k_, v_, cq, ck, 12, 12, causal=True, softcap=2.0, sinks=s_) * 2.0

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    do = torch.randn(q.shape, device=DEVICE)
    got = grads_of(compiled, [q, k, v, s], do)
    want = grads_of(f, [q, k, v, s], do)
    for g, w in zip([got[0], *got[1]], [want[0], *want[1]]):
        assert max_err(g, w) <= 1e-6


def test_block_mask_under_compile_is_a_clear_error():
    n = 64
    mask = kernels.block_mask(causal_mask, 1, 1, n, n, block=64)
    q, k, v = qkv(n, n, 16)
    torch._dynamo.reset()
    fn = torch.compile(lambda a, b, c: kernels.flash_attention(a, b, c, block_mask=mask), fullgraph=True,
                       backend="aot_eager")
    with pytest.raises(Exception, match="block_mask is not supported under torch.compile"):
        fn(q, k, v)


# ----------------------------------------------------------------------------- bad input


def _bad_cases():
    q, k, v = qkv(16, 16, 16)
    cu = torch.tensor([0, 6, 16], dtype=torch.int32, device=DEVICE)
    p = (q[0].transpose(0, 1).contiguous(), k[0].transpose(0, 1).contiguous(), v[0].transpose(0, 1).contiguous())
    fa = kernels.flash_attention

    def varlen(cq=cu, ck=cu, mq=10, mk=10, **kw):
        return lambda: kernels.flash_attention_varlen(*p, cq, ck, mq, mk, **kw)

    mask = kernels.block_mask(causal_mask, 1, 1, 16, 16, block=64)
    return {
        "window below -1": (lambda: fa(q, k, v, window_size=(-2, 0)), ValueError, r"window_size left must be >= -1"),
        "window not a pair": (lambda: fa(q, k, v, window_size=4), TypeError, r"window_size must be a pair"),
        "window float": (lambda: fa(q, k, v, window_size=(1.5, 0)), TypeError, r"window_size left must be an int"),
        "softcap negative": (lambda: fa(q, k, v, softcap=-1.0), ValueError, r"softcap must be finite and >= 0"),
        "softcap inf": (lambda: fa(q, k, v, softcap=float("inf")), ValueError, r"softcap must be finite"),
        "softcap nan": (lambda: fa(q, k, v, softcap=float("nan")), ValueError, r"softcap must be finite"),
        "softcap str": (lambda: fa(q, k, v, softcap="1"), TypeError, r"softcap must be a float"),
        "alibi shape": (lambda: fa(q, k, v, alibi_slopes=slopes((H + 1,))), ValueError, r"alibi_slopes must have shape"),
        "alibi 3-d": (lambda: fa(q, k, v, alibi_slopes=slopes((1, B, H))), ValueError, r"alibi_slopes must have shape"),
        "alibi dtype": (lambda: fa(q, k, v, alibi_slopes=slopes((H,)).double()), TypeError, r"alibi_slopes must be float32"),
        "alibi not tensor": (lambda: fa(q, k, v, alibi_slopes=[0.5] * H), TypeError, r"alibi_slopes must be a torch.Tensor"),
        "sinks shape": (lambda: fa(q, k, v, sinks=sink_logits(H + 1)), ValueError, r"sinks must have shape"),
        "sinks 2-d": (lambda: fa(q, k, v, sinks=sink_logits()[None]), ValueError, r"sinks must have shape"),
        "sinks int": (lambda: fa(q, k, v, sinks=torch.ones(H, dtype=torch.int32, device=DEVICE)), TypeError,
                      r"sinks must be floating point"),
        "causal window nq != nk": (lambda: fa(q[:, :, :8], k, v, causal=True, window_size=(3, -1)), ValueError,
                                   r"causal with window_size needs Nq == Nk"),
        "block mask sizes": (lambda: fa(q[:, :, :8], k, v, block_mask=mask), ValueError, r"block_mask was built for"),
        "block mask type": (lambda: fa(q, k, v, block_mask="causal"), TypeError, r"block_mask must be a"),
        "block mask + causal": (lambda: fa(q, k, v, block_mask=mask, causal=True), ValueError,
                                r"block_mask does not compose with causal"),
        "block mask + window": (lambda: fa(q, k, v, block_mask=mask, window_size=(2, 2)), ValueError,
                                r"does not compose with causal or window_size"),
        "cu not int32": (varlen(cq=cu.long()), TypeError, r"cu_seqlens_q must be int32"),
        "cu decreasing": (varlen(cq=torch.tensor([0, 10, 6, 16], dtype=torch.int32, device=DEVICE),
                                 ck=torch.tensor([0, 5, 10, 16], dtype=torch.int32, device=DEVICE)),
                          ValueError, r"cu_seqlens_q must be non-decreasing"),
        "cu wrong end": (varlen(ck=torch.tensor([0, 6, 15], dtype=torch.int32, device=DEVICE)), ValueError,
                         r"cu_seqlens_k must end at the number of packed tokens, 16"),
        "cu wrong start": (varlen(cq=torch.tensor([1, 6, 16], dtype=torch.int32, device=DEVICE)), ValueError,
                           r"must start at 0"),
        "cu lengths differ": (varlen(ck=torch.tensor([0, 16], dtype=torch.int32, device=DEVICE), mk=16), ValueError,
                              r"same length"),
        "cu 2-d": (varlen(cq=cu[None]), ValueError, r"must be 1-D"),
        "cu not tensor": (varlen(cq=[0, 6, 16]), TypeError, r"cu_seqlens_q must be a torch.Tensor"),
        "max_seqlen too small": (varlen(mq=5), ValueError, r"more than max_seqlen = 5"),
        "max_seqlen type": (varlen(mk=10.0), TypeError, r"max_seqlen"),
        "varlen 4-d": (lambda: kernels.flash_attention_varlen(q, k, v, cu, cu, 10, 10), ValueError, r"\(total, H, D\)"),
        "varlen alibi shape": (varlen(alibi_slopes=slopes((3, H))), ValueError, r"alibi_slopes must have shape"),
        "varlen gluon": (varlen(backend="gluon"), ValueError, r"backend='gluon' has no varlen"),
        "bm mask_mod": (lambda: kernels.block_mask(lambda b, h, q, kv: q >= kv, 1, 1, 8, 8), TypeError,
                        r"@triton.jit"),
        "bm block": (lambda: kernels.block_mask(causal_mask, 1, 1, 8, 8, block=100), ValueError, r"block must be one of"),
        "bm sizes": (lambda: kernels.block_mask(causal_mask, 1, 0, 8, 8), ValueError, r"H must be >= 1"),
    }


def _bad_names():
    return ["window below -1", "window not a pair", "window float", "softcap negative", "softcap inf", "softcap nan",
            "softcap str", "alibi shape", "alibi 3-d", "alibi dtype", "alibi not tensor", "sinks shape", "sinks 2-d",
            "sinks int", "causal window nq != nk", "block mask sizes", "block mask type", "block mask + causal",
            "block mask + window", "cu not int32", "cu decreasing", "cu wrong end", "cu wrong start",
            "cu lengths differ", "cu 2-d", "cu not tensor", "max_seqlen too small", "max_seqlen type", "varlen 4-d",
            "varlen alibi shape", "varlen gluon", "bm mask_mod", "bm block", "bm sizes"]


@pytest.mark.parametrize("case", _bad_names())
def test_bad_input(case):
    call, exc, msg = _bad_cases()[case]
    with pytest.raises(exc, match=msg):
        call()


def test_every_bad_case_is_listed():
    assert set(_bad_names()) == set(_bad_cases())


def test_cu_seqlens_on_another_device():
    if INTERPRET:
        pytest.skip("needs a GPU: on the CPU there is no other device")
    q, k, v = (rand(16, H, 16) for _ in range(3))
    cu = torch.tensor([0, 6, 16], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"cu_seqlens_q is on cpu"):
        kernels.flash_attention_varlen(q, k, v, cu, cu.to(DEVICE), 10, 10)
    with pytest.raises(ValueError, match=r"alibi_slopes is on cpu"):
        kernels.flash_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                alibi_slopes=torch.ones(H))


# ----------------------------------------------------------------------------- scripts/bench_variants.py

SCRIPTS = __import__("pathlib").Path(__file__).resolve().parent.parent / "scripts"


def test_bench_import_has_no_side_effects():
    import subprocess
    import sys

    code = ("import os, sys; sys.path.insert(0, 'scripts'); before = dict(os.environ); import bench_variants; "
            "assert 'kernels' not in sys.modules and 'torch' not in sys.modules, 'importing it imported kernels'; "
            "assert dict(os.environ) == before; print('clean')")
    done = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr


@pytest.mark.skipif(not INTERPRET, reason="the pipeline check runs in the interpreter, in-process")
def test_bench_pipeline_writes_checked_records_and_fails_loud(tmp_path, monkeypatch):
    import json
    import sys

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench_variants

    out = tmp_path / "variants.json"
    assert bench_variants.main(["--interpret", "--only", "sinks", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == bench_variants.SCHEMA and "flops_convention" in doc["provenance"]
    ours = [r for r in doc["records"] if r["provider"] == "ours"]
    assert {r["direction"] for r in ours} == {"fwd", "bwd"}
    assert all(r["status"] == "ok" and r["p50"] > 0 and r["max_err"] <= r["tol"] for r in ours)
    sdpa = [r for r in doc["records"] if r["provider"] == "sdpa-dense"]
    assert sdpa and all(r["status"] == "unsupported" for r in sdpa)
    # A provider with a wrong result stops the run and leaves the file as it was.
    before = out.read_text()
    monkeypatch.setattr(bench_variants, "_eager", lambda case: (lambda: case.q * 0.0 + 1.0))
    with pytest.raises(RuntimeError, match="nothing written"):
        bench_variants.main(["--interpret", "--only", "sinks", "--out", str(out)])
    assert out.read_text() == before
    assert "bench_variants" in sys.modules
