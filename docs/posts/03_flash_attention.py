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
# # FlashAttention: tiles and an online softmax
#
# [Post 2](02_vectorized_attention.py) ended with two problems: every query re-read all of
# $K$ and $V$, and one program could not hold a long sequence. FlashAttention fixes both
# with one idea: give each program a *block* of queries, stream the keys and values past
# it in fixed-size tiles, and keep the softmax **online**, so no program ever needs all
# scores at once. This post builds the forward pass, causal masking, batch and heads
# (including grouped-query attention) and the backward pass, then measures the result
# against every attention backend PyTorch ships.
#
# **You will learn**
#
# - how a running max, a running sum and a rescaled accumulator give an exact softmax
#   over keys seen one tile at a time;
# - how tiles turn per-query re-reads into per-*block* re-reads, and what that does to traffic;
# - how causal masking skips whole tiles and masks only the diagonal ones;
# - how the backward pass rebuilds the attention weights from one saved number per row.

# %%
import math

import torch

import kernels
from kernels import charts, traffic

print("Examples on this page ran on:", kernels.mode_description())

# %% [markdown]
# ## The online softmax, on real numbers
#
# Take one query row of scores $s_1, \dots, s_n$ that arrive in tiles. Keep three things:
# the largest score so far $m$, the sum $\ell = \sum e^{s_j - m}$ over the scores so far,
# and the unnormalised output $a = \sum e^{s_j - m} v_j$. When a new tile raises the
# maximum from $m$ to $m'$, everything accumulated so far was scaled by $e^{-m}$ and must
# now be scaled by $e^{-m'}$, so both $\ell$ and $a$ are multiplied by
# $\alpha = e^{m - m'}$ before the new tile's terms are added. After the last tile,
# $O = a / \ell$, exactly the softmax-weighted sum. Here it is, executed on eight scores
# in two tiles of four:

# %%
torch.manual_seed(3)
scores = torch.randn(8, dtype=torch.float64) * 3
values = torch.randn(8, 2, dtype=torch.float64)  # two features per value, to keep it readable

m, l, acc = -math.inf, 0.0, torch.zeros(2, dtype=torch.float64)
for t, (s_tile, v_tile) in enumerate(zip(scores.split(4), values.split(4))):
    m_new = max(m, s_tile.max().item())
    alpha = math.exp(m - m_new)  # rescales what was summed under the old maximum
    p = torch.exp(s_tile - m_new)
    l = l * alpha + p.sum().item()
    acc = acc * alpha + p @ v_tile
    print(f"tile {t}: scores {[round(x, 2) for x in s_tile.tolist()]}")
    print(f"        max {m:.3f} -> {m_new:.3f}, alpha = exp({m:.3f} - {m_new:.3f}) = {alpha:.4f}, "
          f"running sum {l:.4f}, accumulator {[round(x, 4) for x in acc.tolist()]}")
    m = m_new

online = acc / l
direct = torch.softmax(scores, 0) @ values
print(f"\nonline  result {online.tolist()}")
print(f"direct  result {direct.tolist()}")
print(f"largest difference {(online - direct).abs().max().item():.1e}")
assert torch.allclose(online, direct, rtol=0, atol=1e-12)

# %% [markdown]
# The same recurrence, now as one program of the kernel runs it: eight query rows against
# 32 keys in tiles of eight, scores in log2 units. Move the slider tile by tile and watch
# $m$ jump where a tile holds a larger score, $\alpha$ drop below 1 exactly there, and the
# bottom-left panel (the partial output minus the direct softmax) fall to rounding error
# only after the last tile. The buttons switch the causal mask on; the masked entries then
# appear in grey in the last, diagonal tile.

# %% tags=["hide-input"]
from blog.explore import online_softmax  # noqa: E402

charts.show(online_softmax.figure())
out_err, lse_err = online_softmax.kernel_check(causal=False)
cout_err, clse_err = online_softmax.kernel_check(causal=True)
charts.md(
    f"The figure is computed in float64 by re-running the kernel's loop in NumPy. On the same inputs the Triton "
    f"kernel itself ({kernels.mode_description()}, fp32) agrees with it to {max(out_err, cout_err):.1e} in the "
    f"output and {max(lse_err, clse_err):.1e} in the log-sum-exp, with and without the mask.")

# %% [markdown]
# The kernel does the same with a whole block of `BLOCK_M` rows at once ($m$ and $\ell$
# become vectors, $a$ a `(BLOCK_M, D)` tile) and two matrix products per key tile:
# $S = QK_j^\top$ and $a \mathrel{+}= P V_j$, both on the tensor cores through `tl.dot`.
#
# ## The forward kernel
#
# The grid is `(cdiv(Nq, BLOCK_M), batch × heads)`. Each program loads its `Q` tile once,
# then calls the tile loop twice: first over key tiles that need no mask at all, then over
# the ragged last tile and, when causal, the tiles that straddle the diagonal. Keeping the
# masks out of the common case keeps the inner loop to two `tl.dot`s and a handful of
# vector operations.

# %% tags=["hide-input"]
charts.show_source(kernels.flash._fwd_tiles)

# %% [markdown]
# Two choices deserve a word. The scores are kept in **log base 2**: the softmax scale and
# $1/\ln 2$ are folded into one constant (`qk_scale`), so each exponential is a single
# `exp2`, the instruction the hardware actually has. In the unmasked loop the row max is
# taken over the raw scores, so scaling and subtracting the max become one fused
# multiply-add per score (valid because the scale is positive; the launcher falls back
# otherwise). The `SOFTMAX` argument and the other switches in the kernel's signature
# exist for [post 4](04_optimizing_flash.py), which turns each optimization off and on
# and measures it; their defaults are the kernel described here. And the kernel stores, per row, the
# log-sum-exp $m + \log_2 \ell$: the backward pass rebuilds every weight from it as
# $P = 2^{S \cdot \text{qk\_scale} - \text{lse}}$, with no second pass for the max or the sum.

# %% tags=["hide-input"]
charts.show_source(kernels.flash._flash_fwd_kernel, start="    pid_m", end="    out = acc")

# %% [markdown]
# ## Causal masking by tiles
#
# Under a causal mask, query $i$ sees keys $j \le i$. Tiles entirely to the right of the
# diagonal contribute nothing, so the loop stops before them; tiles entirely to the left
# need no mask; only the tiles that straddle the diagonal pay for the comparison. That is
# why a causal pass costs about half the FLOPs of a full one:

# %% tags=["hide-input"]
charts.show(charts.causal_tiles(n=512, block_m=128, block_n=64))

# %% [markdown]
# Now pick a tile from the menu (the kernel's own candidates at $D = 128$) and move the slider
# over $N$. Left: the full pass; right: causal. The text under each grid gives the share of
# tiles computed without a mask, with one, and skipped. Below the grids, each SM's busy time
# when all the grids of a batch of heads run at once, in a simple model: programs start in
# launch order on the first free slot and take time in proportion to the key tiles they visit.
# Look for the tail (the last, partly filled wave) and for how uneven the causal programs are.

# %% tags=["hide-input"]
from blog.explore import schedule  # noqa: E402

sm_doc = charts.load("production")[0]
charts.show(schedule.figure(sm_doc["provenance"]["sm_count"]))
charts.md(f"The SM count, {sm_doc['provenance']['sm_count']}, is the {sm_doc['provenance']['gpu']}'s, "
          "as recorded by the benchmark.")

# %% [markdown]
# ## Batch, heads and grouped-query attention
#
# The second grid axis enumerates (batch, head) pairs; each program turns its index into
# a batch `b` and head `h` and offsets every pointer with the tensor's own strides, so
# `(B, N, H, D)` memory viewed as `(B, H, N, D)` runs without a copy. For grouped-query
# attention, `k` and `v` have fewer heads than `q`: query head `h` reads k/v head
# `h // GROUP`. No copy of $K$ or $V$ is made.

# %%
torch.manual_seed(0)
device = "cpu" if kernels.INTERPRET else "cuda"
B, Hq, Hkv, N, D = (2, 4, 2, 100, 40) if kernels.INTERPRET else (2, 8, 2, 1000, 80)
q = torch.randn(B, N, Hq, D, device=device).transpose(1, 2)  # strided view, not contiguous
k = torch.randn(B, Hkv, N, D, device=device)
v = torch.randn(B, Hkv, N, D, device=device)
for causal in (False, True):
    out = kernels.flash_attention(q, k, v, causal=causal)
    ref = kernels.reference_attention(q, k, v, causal=causal)
    diff = (out.double() - ref.double()).abs()
    ok = bool(diff.max() <= 2e-5)
    print(f"GQA {Hq}:{Hkv} causal={causal!s:5} shape {tuple(out.shape)}  max |diff| {diff.max():.2e}  "
          f"mean |diff| {diff.mean():.2e}  within 2e-05: {ok}")
    assert ok

# %% [markdown]
# Press a group size to see which key/value head each of eight query heads reads.

# %% tags=["hide-input"]
charts.show(schedule.gqa_figure())

# %% [markdown]
# ## The backward pass
#
# With $dO$ the gradient of the loss with respect to $O$, and the weights $P$ rebuilt from
# the saved log-sum-exp:
#
# $$
# dV = P^\top dO,\quad dP = dO\,V^\top,\quad dS = P \circ (dP - \delta),\quad
# dQ = s\,dS\,K,\quad dK = s\,dS^\top Q,
# $$
#
# where $\delta_i = \sum_j P_{ij}\,dP_{ij} = \sum_d dO_{id} O_{id}$ is computed once per row by
# a small preprocessing kernel. Two kernels then share the work without atomics: one keeps
# a `K`, `V` tile on chip while query tiles stream past and accumulates $dK$, $dV$ (for
# grouped-query attention it also loops over the query heads that share the tile); the
# other keeps a `Q` tile and accumulates $dQ$. A `torch.autograd.Function` ties it
# together, so `loss.backward()` just works:

# %%
torch.manual_seed(1)
Bb, H, N, D = (1, 2, 70, 40) if kernels.INTERPRET else (2, 4, 1000, 80)
q, k, v = (torch.randn(Bb, H, N, D, device=device, requires_grad=True) for _ in range(3))
dout = torch.randn(Bb, H, N, D, device=device)
kernels.flash_attention(q, k, v, causal=True).backward(dout)

q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
kernels.reference_attention(q64, k64, v64, causal=True).backward(dout.double())
for name, ours, ref in (("dQ", q.grad, q64.grad), ("dK", k.grad, k64.grad), ("dV", v.grad, v64.grad)):
    err = (ours.double() - ref).abs().max().item()
    tol = 5e-5 * max(1.0, ref.abs().max().item())
    print(f"{name}: max |diff| {err:.2e}  (tolerance {tol:.1e}): {err <= tol}")
    assert err <= tol

# %% [markdown]
# The two backward kernels walk the same grid in different directions. Move the slider over
# the program id: a dK/dV program holds one column of key tiles and walks down the query
# tiles; a dQ program holds one row and walks along the keys. With the causal mask on, the
# dK/dV program starts at the diagonal instead of the top.

# %% tags=["hide-input"]
charts.show(schedule.backward_figure())

# %% [markdown]
# ## Traffic: per query against per block
#
# Each query *block* now reads $K$ and $V$ once, so the re-reads fall by a factor of
# `BLOCK_M` compared with post 2, and the $N_q \times N_k$ score matrix never reaches
# memory, unlike in eager PyTorch. For a production-sized head ($N = 4096$, $D = 128$, fp16):

# %%
n, d = 4096, 128
print(f"{'design':11} {'requested':>11} {'compulsory':>11}  {'FLOP/byte':>9}")
for name, fn in traffic.DESIGNS.items():
    t = fn(n, n, d, elem_bytes=2)
    print(f"{name:11} {t.bytes_total / 1e6:8.1f} MB {t.compulsory_bytes / 1e6:8.1f} MB  {t.intensity:9.1f}")
t = traffic.flash(n, n, d, elem_bytes=2)
print(f"\nflash reads Q once and K, V once per {n}/128 = {math.ceil(n / 128)} query tiles: "
      f"2 B x {d} x ({n} + 2 x {math.ceil(n / 128)} x {n}) = {t.bytes_read / 1e6:.1f} MB")

# %% tags=["hide-input"]
prov = charts.load("production")[0]["provenance"]
ceil, prod_gpu = prov["ceilings"], prov["gpu"]
ridge = ceil["matmul_fp16_tflops"] * 1e12 / (ceil["copy_gbps"] * 1e9)
charts.md(
    f"The {prod_gpu}'s ridge point, its measured fp16 matrix-multiply rate over its measured copy bandwidth, is "
    f"about **{ridge:.0f} FLOPs per byte**. Counted against *requested* bytes the tiled kernel sits at "
    f"{t.intensity:.0f}, below the ridge; but its re-reads of $K$ and $V$ are mostly served by the L2 cache, and "
    f"against the compulsory DRAM traffic its intensity is {t.flops / t.compulsory_bytes:.0f} FLOPs per byte. "
    "Either way the arithmetic, not DRAM, is what the kernel must make fast, which is where an attention kernel "
    "should be.")

# %% [markdown]
# ## Performance at production shapes
#
# Batch 4, 32 heads of 64 or 16 heads of 128, sequences from 1k to 16k, fp16 and bf16,
# forward and backward, measured in one run by `scripts/benchmark.py` against PyTorch's
# `scaled_dot_product_attention` forced to each of its backends (FlashAttention-2, cuDNN,
# memory-efficient) and eager PyTorch where its score matrix fits in memory. Throughput
# uses the FlashAttention convention: $4BHN^2D$ FLOPs forward, half that when causal, and
# 2.5 times the forward for the backward pass.

# %% tags=["hide-input"]
prod_docs = charts.load("production")
prod = prod_docs[0]
charts.show(charts.production_tflops(prod_docs, "fwd", "float16"))

# %% tags=["hide-input"]
charts.show(charts.production_tflops(prod_docs, "bwd", "float16"))

# %% tags=["hide-input"]
f_lo, f_hi = charts.ratio_summary(prod, "fwd", "sdpa-flash")
c_lo, c_hi = charts.ratio_summary(prod, "fwd", "sdpa-cudnn")
bf_lo, bf_hi = charts.ratio_summary(prod, "bwd", "sdpa-flash")
bc_lo, bc_hi = charts.ratio_summary(prod, "bwd", "sdpa-cudnn")
charts.md(
    f"At $N \\ge 4096$ on the {prod['provenance']['gpu']}, the forward pass runs at **{f_lo:.2f}–{f_hi:.2f}×** "
    f"PyTorch's FlashAttention-2 backend and **{c_lo:.2f}–{c_hi:.2f}×** its cuDNN backend; the backward pass at "
    f"{bf_lo:.2f}–{bf_hi:.2f}× FlashAttention-2 and {bc_lo:.2f}–{bc_hi:.2f}× cuDNN. cuDNN, NVIDIA's hand-tuned "
    "Hopper kernel, is still ahead; the next post measures where our kernel's speed comes from and where the "
    "gap remains.")

# %% [markdown]
# Every production shape, with our throughput and its ratio to the two fastest backends
# measured in the same run:

# %% tags=["hide-input"]
charts.show(charts.production_ratio_table(prod, "float16"))
charts.show(charts.production_ratio_table(prod, "bfloat16"))
for other in prod_docs[1:]:  # every further GPU the benchmark ran on (an H200, when one was lent)
    charts.show(charts.production_ratio_table(other, "float16"))

# %% [markdown]
# And back at the draft's sizes (one head, fp32), the tiled kernel is no longer refused
# at any length, but with a single head a short sequence makes only `N / BLOCK_M`
# programs for 132 SMs, and exact fp32 dot products cannot use the tensor cores' fast
# path; eager PyTorch's cuBLAS calls spread the same work over the whole GPU:

# %% tags=["hide-input"]
seed = charts.load("seed")[0]
charts.show(charts.seed_table(seed, providers=["vectorized", "flash", "flash-tf32", "eager", "sdpa"]))

# %% [markdown]
# ## Key takeaways
#
# - The online softmax (running max, running sum, rescaled accumulator) is exact, and
#   lets a program see the keys one tile at a time.
# - Tiling turns per-query re-reads into per-block re-reads: two orders of magnitude less
#   traffic, and the score matrix never touches memory.
# - Causal attention skips tiles past the diagonal and masks only the diagonal ones.
# - The backward pass needs only the output and one log-sum-exp per row; splitting it into
#   a dK/dV kernel and a dQ kernel avoids atomics.

# %% tags=["hide-input"]
vs = {p: [] for p in ("sdpa-flash", "sdpa-cudnn")}
for r in charts.ok(prod["records"], provider="flash"):
    for p in vs:
        other = charts.ok(prod["records"], provider=p, case=r["case"])
        if other and r["shape"]["Nq"] >= 2048:
            vs[p].append(other[0]["p50"] / r["p50"])  # > 1: ours is faster
beat_fa2 = sum(x > 1 for x in vs["sdpa-flash"])
beat_cudnn = sum(x >= 1 for x in vs["sdpa-cudnn"])
charts.md(
    f"- Measured, a few hundred lines of Triton beat PyTorch's FlashAttention-2 backend at {beat_fa2} of "
    f"{len(vs['sdpa-flash'])} shapes from 2k up, forward and backward, and match or beat cuDNN at "
    f"{beat_cudnn} of {len(vs['sdpa-cudnn'])}.")

# %% [markdown]
# ## What is next
#
# [Post 4](04_optimizing_flash.py) takes this kernel apart: each optimization becomes a
# switch, each step is measured against a prediction written before it ran, and the
# compiler's report shows what each step changed.
