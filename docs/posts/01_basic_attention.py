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
# # Basic attention: one program per query
#
# Attention is three small steps: compare a query with every key, turn the comparisons
# into weights with a softmax, and average the values with those weights. This first
# post writes those three steps as a Triton kernel in the most direct way there is, runs
# it, checks it against a float64 reference, and measures where its time goes. Every
# later post starts from this one.
#
# **You will learn**
#
# - what one Triton *program* is, and how a launch grid maps programs to queries;
# - how to load a row of a tensor through pointers, strides and a mask;
# - why the softmax subtracts its maximum, and the simplest (not the cheapest) way for a
#   kernel to get that maximum;
# - how to count the bytes a kernel moves, so a timing can be judged rather than admired.
#
# ## What the kernel computes
#
# For one head, with queries $Q \in \mathbb{R}^{N_q \times D}$, keys and values
# $K, V \in \mathbb{R}^{N_k \times D}$ and a scale $s$ (by default $1/\sqrt{D}$):
#
# $$
# S = s\,QK^\top,\qquad P_{ij} = \frac{e^{S_{ij} - m_i}}{\sum_{j'} e^{S_{ij'} - m_i}},\qquad O = PV,
# $$
#
# where $m_i = \max_j S_{ij}$. Subtracting $m_i$ changes nothing mathematically but keeps
# every exponent at or below zero, so nothing overflows however large the scores get.
# With `causal=True`, query $i$ may only look at keys $j \le i$ (the same top-left
# convention as PyTorch's `is_causal=True`).

# %%
import torch

import kernels
from blog import figures, fmt, query, tables
from blog.notebook import md, show, show_source
from perfdata import traffic

print("Examples on this page ran on:", kernels.mode_description())

# %% [markdown]
# ## The kernel
#
# A Triton kernel is written for **one program instance**; the launch grid says how many
# instances run. Here the grid is `(Nq, batch × heads)`: program `(i, bh)` owns query row
# `i` of one head and writes exactly one output row. Inside, it holds the query in
# registers and walks the keys one at a time.
#
# A program cannot keep a row of $N_k$ scores unless it knows a bound on $N_k$ when the
# kernel is compiled, and this first version does not want one. It therefore walks the
# keys three times: once to find the largest score, once to add up the exponentials, and
# once to build the weighted sum of values, recomputing each score every time. That
# mirrors the textbook order (scores, then softmax, then weighted sum) and is a deliberate
# starting point, not a necessity. A single pass works too: keep a running maximum and
# rescale the running sum and the running output whenever the maximum grows. That needs
# no more registers than this kernel holds (one maximum, one sum, one output row). It is
# the *online softmax* ([Milakov and Gimelshein, 2018](https://arxiv.org/abs/1805.02867)),
# and [post 3](../03_flash_attention/) builds on it. Here we keep the three passes, because they are
# the easiest to check and they make the cost of re-reading the keys plain.

# %% tags=["hide-input"]
show_source(kernels.basic._basic_attention_kernel)

# %% [markdown]
# Three details carry most of the weight:
#
# - **Strides, not shapes.** Every address is `base + index × stride`, with the strides
#   passed in from PyTorch. The kernel never assumes a contiguous layout, so a
#   `(batch, seq, heads, dim)` tensor viewed as `(batch, heads, seq, dim)` works without a copy.
# - **A mask for the head dimension.** `tl.arange` needs a power-of-two length, so
#   `BLOCK_D` rounds $D$ up (40 becomes 64), and `mask=offs_d < D` keeps the extra lanes
#   from touching memory. `other=0.0` fills them with zeros, which add nothing to a dot product.
# - **fp32 inside.** Inputs may be fp16; the arithmetic runs in fp32 and only the stored
#   result is rounded back.
#
# The launcher checks its inputs (shapes, dtypes, devices, sizes) before anything reaches
# Triton, so a mistake raises a `ValueError` or `TypeError` that names it:

# %%
try:
    kernels.basic_attention(torch.randn(8, 16), torch.randn(8, 16), torch.randn(9, 16))
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## Does it compute attention?
#
# Fresh random inputs, compared with `reference_attention` (PyTorch in float64). On a
# machine without a GPU this runs through Triton's CPU interpreter, which executes every
# program one after another in NumPy, so the sizes are kept small there.

# %%
torch.manual_seed(0)
device = "cpu" if kernels.INTERPRET else "cuda"
B, H, N, D = (1, 2, 16, 24) if kernels.INTERPRET else (2, 4, 512, 128)
q, k, v = (torch.randn(B, H, N, D, device=device) for _ in range(3))

for causal in (False, True):
    out = kernels.basic_attention(q, k, v, causal=causal)
    ref = kernels.reference_attention(q, k, v, causal=causal)
    diff = (out.double() - ref.double()).abs()
    tol = 2e-5  # fp32 round-off over a few hundred terms
    ok = bool(diff.max() <= tol)
    print(f"causal={causal!s:5}  shape {tuple(out.shape)}  max |diff| {diff.max():.2e}  "
          f"mean |diff| {diff.mean():.2e}  within {tol:g}: {ok}")
    assert ok, "basic_attention disagrees with the reference"

# %% [markdown]
# ## What it costs in memory traffic
#
# Count what each program asks of global memory. It reads its query once ($D$ elements),
# the keys three times ($3 N_k D$) and the values once ($N_k D$), and writes one output row.
# Over all $N_q$ programs that is about $4 N_q N_k D$ elements read, against the
# $2(N_q + N_k)D$ that attention needs at the least (each of $Q, K, V$ read once and $O$
# written once). The `kernels.traffic` module does this count for every design; for 512
# queries, 512 keys, $D = 128$ and fp32 (the size post 2 starts from):

# %%
nq = nk = 512
d = 128
t = traffic.basic(nq, nk, d, elem_bytes=4)
print(f"requested reads : 4 B x {d} x ({nq} + 4 x {nq} x {nk}) = {t.bytes_read / 1e6:8.1f} MB")
print(f"compulsory bytes: 4 B x {d} x 2 x ({nq} + {nk})     = {t.compulsory_bytes / 1e6:8.1f} MB")
print(f"ratio: {t.bytes_read / t.compulsory_bytes:.0f}x more than the minimum")
print(f"FLOPs (4·Nq·Nk·D): {t.flops / 1e6:.0f} MFLOP -> {t.intensity:.2f} FLOP per requested byte")

# %% [markdown]
# Whether those re-reads come from DRAM or from a cache, the count alone cannot say. The
# measured time can bound it: divide the requested bytes by the time the kernel took and
# compare the result with the GPU's measured copy bandwidth.

# %% tags=["hide-input"]
seed = query.load("seed")[0]
copy_gbps = seed["provenance"]["ceilings"]["copy_gbps"]
basic_ms = query.median(seed, "basic", Nq=nq, D=d)
implied_gbps = t.bytes_total / (basic_ms * 1e-3) / 1e9
md(
    f"On the {seed['provenance']['gpu']} the kernel took {fmt.ms(basic_ms)} at this size, so it moved its "
    f"requested bytes at {implied_gbps:.0f} GB/s: {implied_gbps / copy_gbps:.0%} of the {copy_gbps:.0f} GB/s that "
    "a plain device-to-device copy reached on the same GPU. Even if every requested byte came from DRAM, "
    "bandwidth would not be the limit. The likelier limit is the walk itself: each step is a short, "
    "dependent chain (load a key, multiply, reduce, compare) that leaves the memory system waiting on one "
    "small request at a time, $3N_k$ times per program, with one program per query.")

# %% [markdown]
# ## How fast is it?
#
# Measured on a GPU next to eager PyTorch (`softmax(q @ k.T) @ v`) and PyTorch's fused
# `scaled_dot_product_attention` (how it was timed is in the
# [measurement notes](#measurement-notes)):

# %% tags=["hide-input"]
seed = query.load("seed")[0]
show(tables.seed_table(seed, providers=["basic", "eager", "sdpa"]))

# %% tags=["hide-input"]
rows = []
for n, d in [(512, 128), (4096, 128)]:
    b, e = query.median(seed, "basic", Nq=n, D=d), query.median(seed, "eager", Nq=n, D=d)
    rows.append(f"at {n}×{d} it takes {fmt.ms(b)} where eager PyTorch takes {fmt.ms(e)} "
                f"(**{b / e:.0f}× slower**)")
md(f"On the {seed['provenance']['gpu']}, " + "; ".join(rows) + ". The kernel is correct and it is "
          "slow, and not for want of bandwidth (the section above rules that out) but from latency: each "
          "program does its work one key at a time, each step waiting on the one before.")

# %% [markdown]
# How the time grows with the sequence length, from a second benchmark run that holds
# $D = 64$ and one head and doubles $N$. Both axes are logarithmic: a slope of 1 means
# linear growth, 2 quadratic.

# %% tags=["hide-input"]
show(figures.scaling(query.load("ladder")[0], providers=("basic", "eager", "sdpa")))

# %% [markdown]
# ## Key takeaways
#
# - A Triton kernel is written for one program; the grid decides how many run. One
#   program per query is the most natural first grid.
# - Pointers are `base + index × stride`, masks guard the padded lanes, and `other=0.0`
#   makes the padding harmless.
# - The max-subtracted softmax needs the maximum before the exponentials are summed. This
#   kernel gets it the simplest way, by walking the keys three times; a running maximum
#   (the online softmax of post 3) would do it in one walk with no more registers.
# - Count bytes and FLOPs before trusting a timing: this kernel asks for many times the
#   bytes it needs, and its steps are too small to keep a GPU busy.
#
# ## What is next
#
# [Post 2](../02_vectorized_attention/) removes the walk: each program loads *all* keys at
# once as a 2-D tile with broadcast offsets. The post measures at which sizes that is
# faster than this kernel and than PyTorch, where the design stops scaling, and why.

# %% [markdown]
# ## Measurement notes
#
# **Timing.** `scripts/benchmark.py` timed one head in fp32: medians of many runs, with
# warm-up outside the timed region, each output checked against the float64 reference
# first.

# %% tags=["hide-input"]
md(f"**Data.** The sizes of the table: {query.provenance_line(seed)}. The scaling chart: "
   f"{query.provenance_line(query.load('ladder')[0])}. The copy bandwidth above is the benchmark's own "
   "measurement on the same GPU.")
