# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Attention variants: masks, score mods and block sparsity
#
# [Post 3](../03_flash_attention/)'s kernel computes full and causal attention, with
# grouped-query heads. Real models ask for more: a sliding window (Mistral, Gemma), soft-capped
# scores (Gemma 2), ALiBi's distance bias (BLOOM, MPT), attention sinks (StreamingLLM, gpt-oss),
# documents packed into one row, and arbitrary block-sparse masks such as prefix-LM.
# [FlashAttention](https://github.com/Dao-AILab/flash-attention) ships the first five as
# arguments of one interface; PyTorch's
# [FlexAttention](https://docs.pytorch.org/docs/stable/nn.attention.flex_attention.html) generates
# a Triton kernel from a user's `score_mod` and `mask_mod` and a `BlockMask`. This post adds each
# variant to post 3's kernel, forward and backward, with FlashAttention's names and conventions,
# so code written for it ports with renames only.
#
# **You will learn**
#
# - where each variant changes the kernel: the loop bounds, the score, the softmax's seed, the
#   program's first row;
# - why skipping whole tiles, not masking scores, is where a masked kernel's speed comes from;
# - what the backward must add: the soft cap's derivative, the sinks' gradient, the same tile
#   bounds turned around;
# - how a block-sparse mask sorts tiles into full, partial and absent.
#
# Where the examples ran, which tiles the maps use, and the state of the measurements are in
# the [measurement notes](#measurement-notes) at the end.

# %%
import torch

import kernels
from blog import figures, query, tables
from blog.notebook import md, show, show_source
from kernels import variants
from kernels.block_mask import document_aux, packed_documents, prefix_lm

print("Examples on this page ran on:", kernels.mode_description())
device = "cpu" if kernels.INTERPRET else "cuda"
notes = {}  # title -> text of the measurement notes, filled where the numbers are computed, shown at the end


def compare(title, ours, ref, tensors, names):
    """Run ``ours`` on fresh leaves and ``ref`` on float64 copies; print the largest error of the
    output and of each gradient, and check it against post 3's tolerance."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = ours(*leaves)
    dout = torch.randn_like(out)
    out.backward(dout)
    leaves64 = [t.detach().double().requires_grad_(True) for t in tensors]
    ref_out = ref(*leaves64)
    ref_out.backward(dout.double())
    rows = [("O", out, ref_out, 2e-5)] + [(f"d{n}", a.grad, r.grad, 5e-5) for n, a, r in zip(names, leaves, leaves64)]
    cells = []
    for name, got, want, tol in rows:
        err = (got.double() - want).abs().max().item()
        bound = tol * max(1.0, want.abs().max().item())
        assert err <= bound and not got.isnan().any(), (title, name, err, bound)
        cells.append(f"{name} {err:.1e}")
    print(f"{title:34} max |error|: " + ", ".join(cells))


# %% [markdown]
# ## One kernel, one switch per variant
#
# The variants live in `kernels/variants.py`: post 3's three kernels (forward, dK/dV, dQ) with
# one `tl.constexpr` switch per variant (`HAS_WINDOW`, `HAS_SOFTCAP`, `HAS_ALIBI`, `HAS_SINKS`,
# `IS_VARLEN`, `HAS_BLOCK_MASK`). Triton compiles one kernel per combination of switches, so a
# call pays only for what it uses, and a call with no variant still runs post 3's kernel
# untouched. Every variant's score change sits in one helper that all three kernels call:

# %% tags=["hide-input"]
show_source(variants.scores)

# %% [markdown]
# The scores stay in log-2 units, as in post 3 (`qk_scale` folds the softmax scale and
# $\log_2 e$ together). Post 3's fused form, the row max of the raw products and one
# multiply-add per score, survives only in unmasked tiles without a soft cap or a bias; every
# other tile forms the scores first.
#
# ## The conventions, FlashAttention's
#
# - **`window_size=(left, right)`**, `-1` meaning unbounded on that side: with $d = N_k - N_q$,
#   query $i$ sees key $j$ when
#
#   $$i + d - \text{left} \;\le\; j \;\le\; i + d + \text{right}.$$
#
#   The window sits on the **bottom-right** diagonal, so with fewer queries than keys (a chunk of new
#   queries against a cache) the last query is aligned with the last key, as in
#   [FlashAttention's interface](https://github.com/Dao-AILab/flash-attention/blob/main/flash_attn/flash_attn_interface.py)
#   and [its README](https://github.com/Dao-AILab/flash-attention#21-change-behavior-of-causal-flag).
#   A causal sliding window of $w$ keys, [Mistral 7B](https://arxiv.org/abs/2310.06825)'s, is
#   `window_size=(w, 0)`.
# - `causal=True` alone keeps post 3's top-left meaning (PyTorch's `is_causal`); with a
#   window it sets `right = 0`, and then the kernel asks for $N_q = N_k$, where the two
#   alignments agree, rather than guess which one the caller meant.
# - **`softcap=c`** replaces each *scaled* score $s$ by $c \tanh(s / c)$ before the softmax,
#   as in [Gemma 2](https://arxiv.org/abs/2408.00118) and FlashAttention's `softcap`.
# - **`alibi_slopes`**, `(H,)` or `(B, H)`: the bias $-m_h \lvert i + N_k - N_q - j \rvert$
#   of [ALiBi](https://arxiv.org/abs/2108.12409), bottom-right aligned like FlashAttention's.
# - **`sinks`**, `(H,)`: one learned logit per head that joins every row's softmax denominator
#   and carries no value, the attention sink of [StreamingLLM](https://arxiv.org/abs/2309.17453)
#   in the learned form of [gpt-oss](https://github.com/openai/gpt-oss).
#
# Bottom-right alignment, executed: 3 queries against 6 keys, window (2, 0). Each row of the
# reference's mask is one query, a 1 a key it sees:

# %%
keep = kernels.reference.window_keep(3, 6, (2, 0))
print(keep.int())
torch.manual_seed(0)
q, k, v = torch.randn(1, 2, 3, 32), torch.randn(1, 2, 6, 32), torch.randn(1, 2, 6, 32)
compare("window (2, 0), Nq=3, Nk=6", lambda q, k, v: kernels.flash_attention(q, k, v, window_size=(2, 0)),
        lambda q, k, v: kernels.reference_attention(q, k, v, window_size=(2, 0)), (q, k, v), "QKV")

# %% [markdown]
# The last query sees the last three keys; top-left alignment would have given the first
# query only key 0. Every check on this page is of this form: the kernel against the float64
# reference (`kernels/reference.py`, which builds each mask densely and shares no code with
# the kernels) on fresh random inputs, output and gradients.
#
# ## Sliding windows: skip at the loop bounds, mask only the edges
#
# A window is a band around the diagonal. For a block of query rows $[m_0, m_0 + \text{BLOCK\_M})$
# the keys any row sees form one range, and inside it a smaller range every row sees in full.
# The forward computes both ranges once per program, before its loops:

# %% tags=["hide-input"]
show_source(variants.window_tiles)

# %% [markdown]
# and walks three loops where post 3 had two: masked tiles at the window's left edge, the
# unmasked interior, masked tiles at the right edge (and the ragged last tile). Tiles outside
# $[\text{lo}, \text{hi})$ are never loaded:

# %% tags=["hide-input"]
show_source(variants.variant_fwd_kernel, start="        if HAS_WINDOW:", end="    # A row with no key")

# %% [markdown]
# The cost of a window is then proportional to the tiles inside the band, not to $N^2$, and
# the mask's comparisons are paid only in the edge tiles. The backward's dK/dV kernel holds a
# key tile and needs the opposite question, which query rows see these keys; it is the same
# inequality solved for $i$:

# %% tags=["hide-input"]
show_source(variants.variant_dkdv_kernel, start="            if HAS_WINDOW:", end="            else:\n                lo = 0")

# %% [markdown]
# Checked with a window narrower than a tile, a window wider than the sequence, a causal
# window, and $N_q \ne N_k$:

# %%
torch.manual_seed(1)
for n_q, n_k, window in ((100, 100, (20, 0)), (100, 100, (300, 300)), (70, 130, (16, 8)), (130, 70, (40, 0))):
    q, k, v = torch.randn(1, 2, n_q, 32), torch.randn(1, 2, n_k, 32), torch.randn(1, 2, n_k, 32)
    compare(f"window {window}, Nq={n_q}, Nk={n_k}",
            lambda q, k, v: kernels.flash_attention(q, k, v, window_size=window),
            lambda q, k, v: kernels.reference_attention(q, k, v, window_size=window), (q, k, v), "QKV")

# %% [markdown]
# With $N_q > N_k$ and a causal window, the first $N_q - N_k$ query rows see no key at all.
# They get output 0 and a log-sum-exp of $+\infty$, so the backward's $P = 2^{s - \text{lse}}$
# is exactly 0 on them: no NaN, in either pass.
#
# ## The tile map
#
# Pick a mask and move the slider: the map shows one head's tiles as the kernel package
# schedules them, skipped, partial (the mask is evaluated inside) or full (no mask), and the
# text under it the share of the dense FLOPs the skipped tiles save. Causal and the sliding
# window come from the forward's own loop bounds, run on the host
# (`variants.window_tile_kinds`); packed documents and prefix-LM from the block masks that
# `kernels.block_mask` builds (below). The slider sets the window's width, the documents' mean
# length and the prefix's length.

# %% tags=["hide-input"]
from blog.explore import tile_map  # noqa: E402

show(tile_map.figure())
win_small, win_large = tile_map.window_map(min(tile_map.LENGTHS)), tile_map.window_map(max(tile_map.LENGTHS))
causal_map = tile_map.window_map(-1, variant="causal")
long_n, long_window = 16384, 4096  # issue 24's window shape, as scripts/bench_variants.py times it
long_map = tile_map.window_map(long_window, long_n)
md(f"At N = {tile_map.N} the causal map skips {causal_map.shares()['skipped']:.0%} of the dense work, not half: "
   "the diagonal tiles are paid in full, as in post 3. A window of "
   f"{win_small.param} keys skips {win_small.shares()['skipped']:.0%}, one of {win_large.param} keys "
   f"{win_large.shares()['skipped']:.0%}. At a fixed window the skipped share grows with N, since the band's area "
   f"grows as N while the square grows as N²: at the benchmark's shape, a window of {long_window} keys at "
   f"N = {long_n}, the same schedule skips {long_map.shares()['skipped']:.0%}.")

# %% [markdown]
# ## Soft-capping: one more function in the score, its derivative in the backward
#
# The forward applies $c \tanh(s/c)$ in `scores` (above), with `softcap_in` $= s_{\text{scale}}/c$
# and `softcap_out` $= c \log_2 e$ folded on the host. `tanh` is written with one `exp2`,
# which saturates to exactly $\pm 1$ for large arguments:

# %% tags=["hide-input"]
show_source(variants.tanh)

# %% [markdown]
# The backward needs the derivative. With $t = \tanh(x / c)$, $\frac{d}{dx}\, c\tanh(x/c) = 1 - t^2$,
# so after the usual $dS = P \circ (dP - \delta)$ both backward kernels multiply by $1 - t^2$,
# and `scores` returns $t$ for exactly this:

# %% tags=["hide-input"]
show_source(variants.variant_dq_tiles, start="        ds = p * (dp - delta", end="        dq = tl.dot(ds")

# %% [markdown]
# ALiBi adds a bias that depends only on $(i, j)$, so its derivative with respect to the
# score is 1: the backward only rebuilds the same scores. Both, with grouped-query heads:

# %%
torch.manual_seed(2)
q, k, v = torch.randn(1, 4, 90, 32), torch.randn(1, 2, 90, 32), torch.randn(1, 2, 90, 32)
slopes = torch.tensor([2.0 ** (-8 * (h + 1) / 4) for h in range(4)])  # ALiBi's geometric slopes, 4 heads
compare("softcap 2.0, GQA 4:2", lambda q, k, v: kernels.flash_attention(q * 4, k, v, softcap=2.0),
        lambda q, k, v: kernels.reference_attention(q * 4, k, v, softcap=2.0), (q, k, v), "QKV")
compare("ALiBi, causal window (30, 0)",
        lambda q, k, v: kernels.flash_attention(q, k, v, alibi_slopes=slopes, window_size=(30, 0)),
        lambda q, k, v: kernels.reference_attention(q, k, v, alibi_slopes=slopes, window_size=(30, 0)),
        (q, k, v), "QKV")

# %% [markdown]
# (The queries are scaled by 4 in the soft-capped case so that the cap of 2 actually bends
# the scores.)
#
# ## Sinks: seed the online softmax
#
# A sink is a key that every row sees, with logit $z_h$ and no value. In the online softmax it
# is simply the first key: start the running max at $z_h$ and the running sum at
# $2^{z_h - z_h} = 1$, and the loop body is unchanged:

# %% tags=["hide-input"]
show_source(variants.variant_fwd_kernel, start="    if HAS_SINKS:", end="    acc = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)\n    live")

# %% [markdown]
# The sink's weight in row $i$ is $P_{i,\text{sink}} = 2^{z_h - \text{lse}_i}$, with $z_h$ in log-2 units. Its gradient
# follows the softmax rule $dS = P(dP - \delta)$ with $dP_{\text{sink}} = 0$, since the sink has
# no value: $\partial L / \partial z_h = -\sum_i P_{i,\text{sink}}\, \delta_i$, summed over the
# rows of head $h$ in every batch row. It needs only the saved log-sum-exp and $\delta$, so it is a few tensor
# operations after the kernels, not a kernel of its own:

# %% tags=["hide-input"]
show_source(variants.Launch.backward, start="        dsinks = None", end="        return dq, dk, dv, dsinks")

# %%
torch.manual_seed(3)
q, k, v = (torch.randn(2, 2, 75, 32) for _ in range(3))
sinks = torch.randn(2)
compare("sinks, causal", lambda q, k, v, s: kernels.flash_attention(q, k, v, causal=True, sinks=s),
        lambda q, k, v, s: kernels.reference_attention(q, k, v, causal=True, sinks=s), (q, k, v, sinks),
        ["Q", "K", "V", "sinks"])

# %% [markdown]
# ## Packed documents: the program looks up its document
#
# A training loop that packs documents of different lengths into one row keeps them apart
# with `cu_seqlens`, FlashAttention's `flash_attn_varlen_func` interface: document $b$ is rows
# `cu_seqlens[b]:cu_seqlens[b+1]` of `(total, H, D)` inputs. One launch covers every document:
# the grid is (blocks of the longest document, documents × heads), and each program reads its
# document's first row and length before anything else:

# %% tags=["hide-input"]
show_source(variants.doc_bounds)

# %% [markdown]
# From there the program is an ordinary one on a sequence of `n_q` queries and `n_k` keys,
# offset by `q0` and `k0`; a program whose block starts past its document's end (`live` is
# false) runs no loop and stores nothing. No padding is read or written, and the backward's two
# kernels make the same lookup. Causal here is bottom-right in each document, as in
# FlashAttention's varlen interface. Documents of 1, 0 and 37 tokens among longer ones:

# %%
torch.manual_seed(4)
lengths = [1, 37, 0, 64, 20]
cu = torch.tensor([0] + [sum(lengths[:i + 1]) for i in range(len(lengths))], dtype=torch.int32)
total = int(cu[-1])
q, k, v = (torch.randn(total, 2, 32) for _ in range(3))
for kw in (dict(causal=True), dict(causal=True, window_size=(10, 0), softcap=3.0)):
    compare(f"varlen {', '.join(kw)}",
            lambda q, k, v: kernels.flash_attention_varlen(q, k, v, cu, cu, max(lengths), max(lengths), **kw),
            lambda q, k, v: kernels.reference_attention_varlen(q, k, v, cu, cu, **kw), (q, k, v), "QKV")

# %% [markdown]
# ## Block-sparse masks: full, partial, absent
#
# A window is one fixed pattern. For any other, `kernels.block_mask(mask_mod, B, H, N_q, N_k,
# block=...)` evaluates a `mask_mod(b, h, q_idx, kv_idx)`, a Triton function (decorated with `triton.jit`) that
# returns True where a query may see a key, over every block × block tile, and sorts each tile
# into one of three kinds: **full** (every pair kept: the kernel runs it without a mask),
# **partial** (some kept: the kernel calls `mask_mod` inside it) and **absent** (none kept:
# never visited). It is FlexAttention's `BlockMask` idea. The two ready-made masks used here:

# %% tags=["hide-input"]
show_source(prefix_lm)
show_source(packed_documents)

# %% [markdown]
# The mask is built by a small Triton kernel that calls the same `mask_mod` the attention
# kernel calls in partial tiles, so the build and the kernel agree by construction; the result
# is cached per (mask_mod, sizes, block, device, aux), so a training loop builds each mask
# once. The forward reads, per query block, how many key blocks are full and how many partial,
# then walks the two lists:

# %% tags=["hide-input"]
show_source(variants.variant_fwd_kernel, start="    if HAS_BLOCK_MASK:", end="    else:\n        if HAS_WINDOW:")

# %% [markdown]
# The full blocks' loop is compiled with the mask off (`MASKED` is false unless the key length
# is ragged), the partial blocks' with `mask_mod` on. The dK/dV kernel, which holds a key
# block, walks the transposed lists (`q_num`, `q_idx`: per key block, the query blocks that see
# it), built at the same time. Checked on two batch rows with different prefixes, and on a
# document mask over a padded batch, with sinks:

# %%
torch.manual_seed(5)
B, N = 2, 130
q, k, v = (torch.randn(B, 2, N, 32) for _ in range(3))
prefix = torch.tensor([40, 9], dtype=torch.int32)
mask = kernels.block_mask(prefix_lm, B, 1, N, N, block=64, aux=prefix)
compare("prefix-LM block mask", lambda q, k, v: kernels.flash_attention(q, k, v, block_mask=mask),
        lambda q, k, v: kernels.reference_attention(q, k, v, mask_aux=prefix,
                                                    mask_mod=lambda b, h, i, j, p: (j <= i) | (j < p[b])),
        (q, k, v), "QKV")
print("prefix-LM tiles:", mask.counts())
doc_ids = torch.stack([torch.repeat_interleave(torch.arange(3), torch.tensor(s)) for s in ([50, 17, 63], [90, 1, 39])])
docs = kernels.block_mask(packed_documents, B, 1, N, N, block=64, aux=document_aux(doc_ids))
compare("document block mask, sinks", lambda q, k, v, s: kernels.flash_attention(q, k, v, block_mask=docs, sinks=s),
        lambda q, k, v, s: kernels.reference_attention(
            q, k, v, sinks=s, mask_aux=doc_ids, mask_mod=lambda b, h, i, j, d: (d[b, i] == d[b, j]) & (i >= j)),
        (q, k, v, torch.randn(2)), ["Q", "K", "V", "sinks"])
print("document tiles:", docs.counts())
same = kernels.block_mask(prefix_lm, B, 1, N, N, block=64, aux=prefix)
print("the second build of the same mask is the cached object:", same is mask)

# %% [markdown]
# A block mask does not compose with `causal` or `window_size`, each a schedule of its own;
# writing them into the `mask_mod` does the same, and the call says so with a `ValueError`
# instead of guessing. Packed documents have two forms, then: `cu_seqlens`, where no padding
# exists, and a document `mask_mod` over ordinary batch rows, FlexAttention's way, which
# composes with any other rule a `mask_mod` can express.
#
# ## Measured against FlexAttention, FlashAttention-4 and a dense mask

# %% tags=["hide-input"]
variant_docs = figures.load_variants()
if variant_docs:
    vdoc = variant_docs[0]
    show(figures.variants_comparison(vdoc, "fwd"))
    show(figures.variants_comparison(vdoc, "bwd"))
    spans = []
    for direction, word in (("fwd", "forward"), ("bwd", "backward")):
        flex = [r["flex"] for rows in figures.variant_ratios(vdoc, direction).values() for r in rows.values()
                if "flex" in r]
        if flex:
            spans.append(f"{min(flex):.2f}–{max(flex):.2f}× FlexAttention's speed in the {word} pass "
                         f"({len(flex)} cases)")
    md(f"On the {vdoc['provenance']['gpu']}, ours ran at " + ("; ".join(spans) if spans else
                                                               "no case that FlexAttention also ran")
       + ". Every case, with the other peers, is in the [measurement notes](#measurement-notes).")
    notes["The variants run"] = "Provenance: " + query.provenance_line(vdoc) + "."
else:
    md("This comparison has not been measured yet: `python scripts/bench_variants.py` on a CUDA GPU writes "
       "`docs/data/variants.json`, and this section draws it from there.")
    notes["The variants run"] = ("No `docs/data/variants*.json` exists yet, so the page shows no timing. "
                                 "`scripts/bench_variants.py` times ours, FlexAttention "
                                 "(`torch.compile(flex_attention)` with the equivalent `score_mod` and `BlockMask`), "
                                 "FlashAttention-4 where it takes the variant's arguments, SDPA with a dense mask "
                                 "and eager PyTorch, in one run on one GPU, after checking each provider's output "
                                 "against the float64 reference.")

# %% [markdown]
# ## Key takeaways
#
# - A mask is cheap only where whole tiles are skipped: the sliding window's loop bounds and a
#   block mask's absent blocks cost nothing, and the comparisons are paid in edge tiles only.
# - Score changes (soft cap, ALiBi) live in one function shared by the three kernels; the
#   backward adds the soft cap's $1 - t^2$.
# - A sink is the softmax's first key: seed the running max and sum, and its gradient is
#   $-\sum_i P_{i,\text{sink}}\delta_i$, from what the backward already has.
# - Packed documents need no padding: each program looks up its document in `cu_seqlens`.

# %% [markdown]
# ## Measurement notes

# %% tags=["hide-input"]
block_m, block_n = tile_map.forward_tile()
notes["Where the examples ran"] = (
    f"{kernels.mode_description()}. The checks are fp32, at small sizes, against "
    "`kernels/reference.py` in float64; the tolerance is post 3's, 2e-5 for the output and 5e-5 for the gradients, "
    "times the largest reference value where it exceeds 1. `tests/test_variants.py` runs the same comparisons "
    "over more sizes, dtypes and combinations.")
notes["The tile maps"] = (
    f"Causal and window maps use the forward's first candidate tile at D = 128, {block_m}×{block_n} (the tile "
    "with autotuning off; on a GPU the autotuner may pick another, which moves the edges but not the band). "
    f"Block-mask maps use {tile_map.MASK_BLOCK}×{tile_map.MASK_BLOCK} blocks. The FLOPs saved are the skipped "
    "tiles' (query, key) pairs over the dense N × N, in the forward pass; the backward kernels skip by the same rule "
    "on their own tile shapes.")
md("\n\n".join(f"**{title}.** {text}" for title, text in notes.items()))
if variant_docs:
    for direction in ("fwd", "bwd"):
        show(tables.variants_table(vdoc, direction))
