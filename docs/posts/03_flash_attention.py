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
# [Post 2](../02_vectorized_attention/) ended with three problems: every query re-read all
# of $K$ and $V$, one program could not hold a long sequence, and one query per program
# left the tensor cores out. FlashAttention fixes all three with one idea: give each
# program a *block* of queries, stream the keys and values past it in fixed-size tiles,
# and keep the softmax **online**, so no program ever needs all scores at once
# ([FlashAttention, Dao et al. 2022](https://arxiv.org/abs/2205.14135);
# [FlashAttention-2, Dao 2023](https://arxiv.org/abs/2307.08691), whose loop order and
# work split this kernel follows; [Triton's fused-attention tutorial](https://triton-lang.org/main/getting-started/tutorials/06-fused-attention.html)
# is the closest Triton relative). This post builds the forward pass, causal masking, batch and heads
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
#
# Where the data comes from, which kernel ran, and the full lists of measured ratios are in
# the [measurement notes](#measurement-notes) at the end.

# %%
import math

import torch

import kernels
from blog import figures, fmt, query, tables
from blog.notebook import md, show, show_source
from perfdata import traffic

print("Examples on this page ran on:", kernels.mode_description())
notes = {}  # title -> text of the measurement notes, filled where the numbers are computed, shown at the end

# %% [markdown]
# ## The online softmax, on real numbers
#
# The trick is the online softmax of [Milakov and Gimelshein (2018)](https://arxiv.org/abs/1805.02867),
# also used for memory-efficient attention by [Rabe and Staats (2021)](https://arxiv.org/abs/2112.05682).
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

show(online_softmax.figure())
out_err, lse_err = online_softmax.kernel_check(causal=False)
cout_err, clse_err = online_softmax.kernel_check(causal=True)
md(
    f"The figure is computed in float64 by re-running the kernel's loop in NumPy. On the same inputs the Triton "
    f"kernel itself ({kernels.mode_description()}, fp32) agrees with it to {max(out_err, cout_err):.1e} in the "
    f"output and {max(lse_err, clse_err):.1e} in the log-sum-exp, with and without the mask.")

# %% [markdown]
# The kernel does the same with a whole block of `BLOCK_M` rows at once ($m$ and $\ell$
# become vectors, $a$ a `(BLOCK_M, D)` tile) and two matrix products per key tile:
# $S = QK_j^\top$ and $a \mathrel{+}= P V_j$, both through `tl.dot`. With fp16 or bf16
# inputs `tl.dot` runs on the tensor cores (post 4's compiler report finds Hopper's `wgmma`
# in every fp16 kernel it measured). With fp32 inputs it depends on the precision asked
# for ([`tl.dot`'s `input_precision`](https://triton-lang.org/main/python-api/generated/triton.language.dot.html)):
# `"tf32"` uses the tensor cores with a shortened mantissa, while this kernel's default,
# `"ieee"`, asks for IEEE fp32 products, which the H100's tensor cores do not compute, so
# they run on the ordinary FP32 units. The examples on this page are fp32 with IEEE products.
#
# ## The forward kernel
#
# The grid is `(cdiv(Nq, BLOCK_M), batch × heads)`. Each program loads its `Q` tile once,
# then calls the tile loop twice: first over key tiles that need no mask at all, then over
# the ragged last tile and, when causal, the tiles that straddle the diagonal. Keeping the
# masks out of the common case keeps the inner loop to two `tl.dot`s and a handful of
# vector operations.

# %% tags=["hide-input"]
show_source(kernels.tiles.fwd_tiles)

# %% [markdown]
# Two choices deserve a word. The scores are kept in **log base 2**: the softmax scale and
# $1/\ln 2$ are folded into one constant (`qk_scale`), so each exponential is a single
# `exp2`, the instruction the hardware actually has. In the unmasked loop the row max is
# taken over the raw scores, so scaling and subtracting the max become one fused
# multiply-add per score (valid because the scale is positive; the launcher falls back
# otherwise). The `SOFTMAX` argument and the other switches in the kernel's signature
# exist for [post 4](../04_optimizing_flash/), which turns each optimization off and on
# and measures it; their defaults are the kernel described here. And the kernel stores, per row, the
# log-sum-exp $m + \log_2 \ell$: the backward pass rebuilds every weight from it as
# $P = 2^{(QK^\top) \cdot \text{qk\_scale} - \text{lse}}$, with no second pass for the max
# or the sum. Here $QK^\top$ is the raw, unscaled product (the kernel never forms $S$ itself),
# $\text{qk\_scale} = s \log_2 e$ folds the softmax scale into the base change, and lse is in
# log-2 units.

# %% tags=["hide-input"]
show_source(kernels.flash.flash_fwd_kernel, start="    pid_m", end="    out = acc")

# %% [markdown]
# ## Causal masking by tiles
#
# Under a causal mask, query $i$ sees keys $j \le i$. Tiles entirely to the right of the
# diagonal contribute nothing, so the loop stops before them; tiles entirely to the left
# need no mask; only the tiles that straddle the diagonal pay for the comparison:

# %% tags=["hide-input"]
show(figures.causal_tiles(n=512, block_m=128, block_n=64))

# %% tags=["hide-input"]
def causal_tile_counts(n, block_m, block_n):
    """(computed, masked, total) key tiles over all query tiles, as the forward kernel visits them."""
    computed = masked = 0
    for i in range(math.ceil(n / block_m)):
        hi = min(n, (i + 1) * block_m)  # SKIP_FUTURE: stop after the diagonal
        computed += math.ceil(hi / block_n)
        masked += math.ceil(hi / block_n) - min(n, i * block_m) // block_n
    return computed, masked, math.ceil(n / block_m) * math.ceil(n / block_n)


computed, masked, total = causal_tile_counts(512, 128, 64)
big = causal_tile_counts(16384, 128, 64)
md(
    f"Here, at N=512 with 128×64 tiles, the causal pass computes {computed} of {total} tiles "
    f"({computed / total:.0%} of the work, {masked} of them masked), not half: the diagonal tiles are paid in "
    f"full. The share falls towards one half as N grows ({big[0] / big[2]:.1%} at N=16384). The FLOP "
    "convention used for throughput below counts a causal pass as exactly half of a full one, so at short "
    "lengths it credits a causal kernel with less arithmetic than it performs.")

# %% [markdown]
# Now pick a tile from the menu (the kernel's own candidates at $D = 128$) and move the slider
# over $N$. Left: the full pass; right: causal. The text under each grid gives the share of
# tiles computed without a mask, with one, and skipped. Below the grids, each SM's busy time
# when all the grids of a batch of heads run at once, in a simple model: programs start in
# launch order on the first free slot and take time in proportion to the key tiles they visit.
# Look for the tail (the last, partly filled wave) and for how uneven the causal programs are.

# %% tags=["hide-input"]
from blog.explore import schedule  # noqa: E402

sm_doc = query.load("production")[0]
show(schedule.figure(sm_doc["provenance"]["sm_count"]))
notes["The schedule model"] = (f"The SM count, {sm_doc['provenance']['sm_count']}, is the "
                              f"{sm_doc['provenance']['gpu']}'s, as recorded by the benchmark.")

# %% [markdown]
# ## Batch, heads and grouped-query attention
#
# The second grid axis enumerates (batch, head) pairs; each program turns its index into
# a batch `b` and head `h` and offsets every pointer with the tensor's own strides, so
# `(B, N, H, D)` memory viewed as `(B, H, N, D)` runs without a copy. For grouped-query
# attention, `k` and `v` have fewer heads than `q`: query head `h` reads k/v head
# `h // GROUP`. No copy of $K$ or $V$ is made.
#
# **Causal alignment.** The mask is `offs_m >= cols`: query $i$ sees keys $j \le i$,
# counted from the top-left corner of the score matrix. That is what PyTorch's
# `scaled_dot_product_attention(..., is_causal=True)` does
# ([`torch.nn.attention.bias.CausalVariant`](https://docs.pytorch.org/docs/stable/nn.attention.bias.html):
# `UPPER_LEFT`). When $N_q = N_k$ the two usual conventions agree. When they differ they do
# not: with $N_q < N_k$, for instance one new query decoding against a cache of $N_k$ keys,
# the new query is position $N_k - 1$ and should see every key, which is the bottom-right
# alignment (`causal_lower_right` in PyTorch; the default of the `flash-attn` package since
# version 2.1, as [its README](https://github.com/Dao-AILab/flash-attention#21-change-behavior-of-causal-flag)
# notes). Top-left, that query sees only key 0. So for decoding with a KV cache do not pass
# `causal=True` here: a single new query attends to the whole cache with `causal=False`,
# and a chunk of new queries needs the bottom-right mask, which this kernel does not offer.

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
show(schedule.gqa_figure())

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
# together, so `loss.backward()` just works. The dK/dV kernel, with its `K` and `V` tile held
# on chip while every query tile of every query head in its group streams past:

# %% tags=["hide-input"]
show_source(kernels.flash.flash_bwd_dkdv_kernel, start="    pid_n", end="    mask = ")

# %% [markdown]
# and its inner loop, which works with $P^\top$ so that $dK$ and $dV$ come out row-major:

# %% tags=["hide-input"]
show_source(kernels.flash.bwd_dkdv_tiles)

# %% [markdown]
# Checked against the float64 reference's gradients:

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
# The dQ kernel's inner loop, with a `Q` tile held while the key tiles stream past:

# %% tags=["hide-input"]
show_source(kernels.flash.bwd_dq_tiles)

# %% [markdown]
# Why two kernels? Every gradient tile needs $P$ and $dS$ for one (query tile, key tile)
# pair, but $dK$ and $dV$ sum over query tiles while $dQ$ sums over key tiles, so no single
# loop order accumulates all three on chip. There are three common answers:
#
# - **Atomic dQ** ([FlashAttention-2](https://arxiv.org/abs/2307.08691), section 3.2):
#   one program per key tile accumulates $dK$, $dV$ on chip and adds its share of $dQ$ to
#   global memory with atomic adds. One pass, but the result depends on the order of the
#   atomics, and every program writes into every query tile's $dQ$.
# - **One kernel in two phases** ([Triton's fused-attention tutorial](https://triton-lang.org/main/getting-started/tutorials/06-fused-attention.html)):
#   after a small launch that computes $\delta = \mathrm{rowsum}(dO \circ O)$
#   (`_attn_bwd_preprocess`), each program of the main launch (`_attn_bwd`) first computes
#   $dK$, $dV$ for one key tile, then $dQ$ for one query tile. No atomics and two launches;
#   $P$ is recomputed in each phase.
# - **Two kernels** (this one): the same preprocess, then the two phases as two launches of
#   their own, so each kernel gets its own tile shape and autotuning. The cost is a third launch and,
#   as in the two-phase kernel, recomputing $P$ and $dP$ twice.

# %% tags=["hide-input"]
import inspect  # noqa: E402

dots = {name: inspect.getsource(fn.fn).count("tl.dot(")
        for name, fn in (("forward", kernels.tiles.fwd_tiles), ("dK/dV", kernels.flash.bwd_dkdv_tiles),
                         ("dQ", kernels.flash.bwd_dq_tiles))}
backward = dots["dK/dV"] + dots["dQ"]
md(
    f"Counted in the source: the forward loop does {dots['forward']} matrix products per tile pair, the dK/dV "
    f"loop {dots['dK/dV']} (recompute $S$, then $dV$, $dP$, $dK$) and the dQ loop {dots['dQ']} (recompute $S$, then "
    f"$dP$, $dQ$): {backward} in all, {backward / dots['forward']:.1f}× the forward's. The FlashAttention papers "
    "count a backward pass as 2.5× the forward (5 products: recompute $S$, then $dV$, $dP$, $dQ$, $dK$), which is "
    "what an atomic-dQ kernel does. Throughput figures below use that convention for every backend, so they "
    f"compare times fairly, but our backward kernels perform {backward / 5:.1f}× the arithmetic the convention "
    "credits them with.")

# %% [markdown]
# The two backward kernels walk the same grid in different directions. Move the slider over
# the program id: a dK/dV program holds one column of key tiles and walks down the query
# tiles; a dQ program holds one row and walks along the keys. With the causal mask on, the
# dK/dV program starts at the diagonal instead of the top.

# %% tags=["hide-input"]
show(schedule.backward_figure())

# %% [markdown]
# ## Traffic: per query against per block
#
# Each query *block* now reads $K$ and $V$ once, so the re-reads fall by a factor of
# `BLOCK_M` compared with post 2, and the $N_q \times N_k$ score matrix never reaches
# memory, unlike in eager PyTorch. For a production-sized head ($N = 4096$, $D = 128$, fp16,
# 128×64 tiles):

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
prod = query.load("production")[0]
ceil, prod_gpu = prod["provenance"]["ceilings"], prod["provenance"]["gpu"]
ridge = ceil["matmul_fp16_tflops"] * 1e12 / (ceil["copy_gbps"] * 1e9)
# The same shape measured: requested bytes (model, all heads) over the measured time.
rec = query.ok(prod["records"], provider="flash", direction="fwd", dtype="float16", causal=False, D=d, Nq=n)
rec = [r for r in rec if r["shape"]["H"] == r["shape"]["Hkv"]][0]
heads = rec["shape"]["B"] * rec["shape"]["H"]
implied = traffic.flash(n, n, d, elem_bytes=2, heads=heads).bytes_total / (rec["p50"] * 1e-3) / 1e9
md(
    f"The {prod_gpu}'s ridge point, its measured fp16 matrix-multiply rate over its measured copy bandwidth, is "
    f"about **{ridge:.0f} FLOPs per byte**. Counted against *requested* bytes the tiled kernel sits at "
    f"{t.intensity:.0f}, below the ridge; against the compulsory traffic it would sit at "
    f"{t.flops / t.compulsory_bytes:.0f}. Where it really sits depends on how many of the re-reads of $K$ and $V$ "
    "a cache serves" + (f": the timing alone shows at least {1 - ceil['copy_gbps'] / implied:.0%} of them came from "
                        "a cache ([how](#measurement-notes))." if implied > ceil["copy_gbps"] else
                        ", which a timing cannot show."))
notes["What the timing bounds"] = (
    f"At B={rec['shape']['B']}, H={rec['shape']['H']}, N={n}, D={d} the measured forward pass took "
    f"{fmt.ms(rec['p50'])}, so its requested bytes (assuming the 128×64 tile, the autotuner's pick at D=128 in "
    f"post 4's measurements) moved at {implied:.0f} GB/s, {implied / ceil['copy_gbps']:.2f}× the measured copy "
    "bandwidth" + (f": at least {1 - ceil['copy_gbps'] / implied:.0%} of them therefore came from a cache, not DRAM."
                   if implied > ceil["copy_gbps"] else ", so the timing alone cannot rule out that DRAM is the limit."))

# %% tags=["hide-input"]
prof = query.same_gpu_doc(query.load("profile"), prod_gpu)  # the GPU the timings above came from
pp = prof["provenance"]
measured = sorted((r for r in prof["records"] if r["group"] == "flash" and r["status"] == "ok"
                   and None not in (r["measured"]["dram_read_bytes"], r["measured"]["dram_write_bytes"])),
                  key=lambda r: (-r["shape"]["D"], r["shape"]["Nq"], r["causal"]))
show(tables.profile_table(prof))
focus = next((r for r in measured if r["shape"]["Nq"] == n and r["shape"]["D"] == d and not r["causal"]), None)
if focus is not None:
    m, mod = focus["measured"], focus["model"]
    dram = m["dram_read_bytes"] + m["dram_write_bytes"]
    from_cache = 1 - m["dram_read_bytes"] / mod["requested_read_bytes"]
    text = (f"In the profiled case (N={n}, D={d}, "
            f"B={focus['shape']['B']}, H={focus['shape']['H']}) the loads asked for, by the model's count, "
            f"{mod['requested_read_bytes'] / 1e9:.2f} GB and DRAM delivered {m['dram_read_bytes'] / 1e9:.2f} GB of "
            "it. In all, DRAM moved " f"{dram / 1e9:.2f} GB, {dram / mod['compulsory_bytes']:.2f}× the compulsory "
            "bytes" + (f", and the L2 cache handled {m['l2_bytes'] / 1e9:.2f} GB of requests"
                       if m["l2_bytes"] is not None else "") + ".")
    body = ("Nsight Compute measures it: in the case above, " +
            (f"**{from_cache:.0%} of the requested bytes came from a cache** (L1 or L2), not from DRAM"
             if from_cache > 0 else "no cache saved any DRAM reads"))
    if pp["gpu"] == prod_gpu:
        rate = dram / (m["duration_ns"] * 1e-9) / 1e9
        text += (f" Over the profiled launch ({fmt.ms(m['duration_ns'] / 1e6)}; the timed benchmark's "
                 f"median was {fmt.ms(rec['p50'])}) that is {rate:.0f} GB/s, "
                 f"{rate / ceil['copy_gbps']:.0%} of the copy bandwidth measured on the same GPU.")
        body += (f", and DRAM ran at {rate / ceil['copy_gbps']:.0%} of its measured copy bandwidth. "
                 + ("A kernel limited by DRAM would run close to that bandwidth; this one did not."
                    if rate < 0.5 * ceil["copy_gbps"] else
                    "That is close enough to the copy bandwidth that DRAM may be one of the limits here."))
    else:
        body += "."
    if m["tensor_pct"] is not None:
        body += (f" Its tensor pipe ran at {m['tensor_pct']:.0f}% of its peak rate over the cycles the SMs were "
                 "active; post 4 follows that number through each optimization step.")
    if pp["git_commit"] != prod["provenance"]["git_commit"]:
        text += (f" The profile ran the kernel at commit {pp['git_commit'][:7]}, the timings above at "
                 f"{prod['provenance']['git_commit'][:7]}.")
    md(body + " The bytes are in the [measurement notes](#measurement-notes).")
    notes["What Nsight Compute measured"] = text

# %% [markdown]
# The model above is FlashAttention's I/O argument made concrete. The FlashAttention paper
# ([Dao et al. 2022, theorem 2](https://arxiv.org/abs/2205.14135)) shows that with on-chip
# memory of $M$ elements, tiled attention needs $\Theta(N^2 d^2 / M)$ accesses to off-chip
# memory, against $\Theta(Nd + N^2)$ for the standard algorithm: the query block holds
# $\Theta(M)$ elements, so it has $\Theta(M/d)$ rows, and $K$ and $V$ ($2Nd$ elements) are
# streamed once per block, $N / (M/d)$ times. Our model is that count with its constant
# ([worked out for the measured kernel](#measurement-notes)).

# %% tags=["hide-input"]
abl = query.load("ablation")[0]
fixed = next(r for r in query.ablation_rows(abl, 128, False) if r["provider"] == "exp2-fma")
smem_elems = fixed["compiler"]["shared_bytes"] // 2  # fp16 elements of shared memory the kernel allocates
block_m = fixed["config"]["BLOCK_M"]
kv_model = 2 * n * d * math.ceil(n / block_m)  # elements of K and V read, from traffic.flash's count
theta = n * n * d * d / smem_elems
notes["The I/O bound, with its constant"] = (
    f"With the measured kernel's shared memory as $M$ ({smem_elems} fp16 elements for the 128×64 tile at "
    f"D={d}, from the compiler report in post 4) and BLOCK_M={block_m}, $N^2d^2/M$ is {theta / 1e6:.1f} M elements "
    f"at N={n}, and the model's K/V reads are {kv_model / 1e6:.1f} M: {kv_model / theta:.0f}× the bare "
    f"expression, because the query block takes {block_m * d / smem_elems:.0%} of $M$ (the rest holds the "
    "pipelined K/V tiles), and $K$ and $V$ are two matrices.")

# %% [markdown]
# ## Performance at production shapes
#
# Batch 4, 32 heads of 64 or 16 heads of 128, sequences from 1k to 16k, fp16 and bf16,
# forward and backward, measured in one run by `scripts/benchmark.py` against PyTorch's
# `scaled_dot_product_attention` forced to each of its backends (FlashAttention-2, cuDNN,
# memory-efficient), FlashAttention-4 where the run includes it (the legend says), and eager
# PyTorch where its score matrix fits in memory. Throughput
# uses the FlashAttention convention: $4BHN^2D$ FLOPs forward, half that when causal, and
# 2.5 times the forward for the backward pass.

# %% tags=["hide-input"]
prod_docs = query.load("production")
prod = prod_docs[0]
show(figures.production_tflops(prod_docs, "fwd"))

# %% tags=["hide-input"]
show(figures.production_tflops(prod_docs, "bwd"))

# %% tags=["hide-input"]
f_lo, f_hi = query.ratio_summary(prod, "fwd", "sdpa-flash")
c_lo, c_hi = query.ratio_summary(prod, "fwd", "sdpa-cudnn")
bf_lo, bf_hi = query.ratio_summary(prod, "bwd", "sdpa-flash")
bc_lo, bc_hi = query.ratio_summary(prod, "bwd", "sdpa-cudnn")
md(
    f"At $N \\ge 4096$ on the {prod['provenance']['gpu']}, the forward pass runs at **{f_lo:.2f}–{f_hi:.2f}×** "
    f"PyTorch's FlashAttention-2 backend and **{c_lo:.2f}–{c_hi:.2f}×** its cuDNN backend; the backward pass at "
    f"{bf_lo:.2f}–{bf_hi:.2f}× FlashAttention-2 and {bc_lo:.2f}–{bc_hi:.2f}× cuDNN. Read the FlashAttention-2 "
    "ratio with care: PyTorch's FlashAttention-2 backend was written for the A100 and does not use Hopper's "
    "`wgmma` matrix instructions or its TMA copy engine (the [FlashAttention-3 paper](https://arxiv.org/abs/2407.08608) "
    "measures it at about a third of the H100's peak), while Triton emits `wgmma` for our `tl.dot` by itself. "
    "Any Hopper-aware kernel should beat it; cuDNN is the Hopper reference. "
    + ("On this Hopper GPU, at long sequences, `flash_attention` ran [post 5](../05_gluon_hopper/)'s Gluon kernels "
       "rather than this post's (the [measurement notes](#measurement-notes) give the rule it followed). "
       if query.dispatch_note(prod) else "")
    + "The next post measures where the pointer kernel's speed comes from and where the gap remains.")
notes["The references"] = (
    "The Hopper references are cuDNN and FlashAttention-4, both timed in the same run; "
    "[FlashAttention-3](https://github.com/Dao-AILab/flash-attention/tree/main/hopper) is not timed here."
    if query.ok(prod["records"], provider="fa4") else
    "The Hopper references are cuDNN, timed in the same run, and FlashAttention-4 and "
    "[FlashAttention-3](https://github.com/Dao-AILab/flash-attention/tree/main/hopper), not timed in it.")

# %% tags=["hide-input"]
md(f"Every fp16 production shape on the {query.gpu_label(prod)}, with our throughput and its ratio to the two "
   "fastest backends measured in the same run (the bf16 tables"
   + (", and the other GPUs'," if prod_docs[1:] else "") + " are in the [measurement notes](#measurement-notes)):")
show(tables.production_ratio_table(prod, "float16", "fwd"))
show(tables.production_ratio_table(prod, "float16", "bwd"))

# %% [markdown]
# **Grouped-query attention.** The production run also timed a grouped-query shape: 32
# query heads sharing 8 k/v heads at $D = 128$, against PyTorch's
# `scaled_dot_product_attention(..., enable_gqa=True)` with its default backend choice
# (which backend it chose is not recorded):

# %% tags=["hide-input"]
by_case = {}  # the benchmark's case name -> provider -> record, for the grouped-query cases
for r in query.square(prod["records"]):  # decoding cases (one query) are not part of this table
    if r["shape"]["H"] != r["shape"]["Hkv"]:
        by_case.setdefault(r["case"], {})[r["provider"]] = r
rows = ["| causal | N | pass | ours TFLOP/s | SDPA default TFLOP/s | ours ÷ SDPA |", "|---|---|---|---|---|---|"]
for case, rs in sorted(by_case.items(), key=lambda kv: (kv[1]["flash"]["causal"], kv[1]["flash"]["shape"]["Nq"],
                                                          kv[1]["flash"]["direction"])):
    ours, sdpa = rs["flash"], rs.get("sdpa")
    if ours["status"] == "ok" and sdpa and sdpa["status"] == "ok":
        rows.append(f"| {'yes' if ours['causal'] else 'no'} | {ours['shape']['Nq']} | {ours['direction']} | "
                    f"{ours['tflops']:.0f} | {sdpa['tflops']:.0f} | {ours['tflops'] / sdpa['tflops']:.2f} |")
shape = ours["shape"]
md("\n".join(rows) + f"\n\nB={shape['B']}, H={shape['H']}, H_kv={shape['Hkv']}, D={shape['D']}, {ours['dtype']}.")

# %% [markdown]
# **Rounding $P$.** With fp16 or bf16 inputs the kernel rounds the weights to the input type
# before the second product (`p.to(v.dtype)` in the loop above), because the tensor cores
# take both operands in that type; the running sum $\ell$ is kept from the unrounded fp32
# weights. Every fused fp16/bf16 kernel compared here faces the same choice. What it costs,
# computed exactly (float64) on a small random problem:

# %%
torch.manual_seed(0)
qr, kr, vr = (torch.randn(256, 64, dtype=torch.float64) for _ in range(3))
weights = torch.exp(qr @ kr.T / 8 - (qr @ kr.T / 8).max(1, keepdim=True).values)  # unnormalised P
exact = weights @ vr / weights.sum(1, keepdim=True)
for dtype in (torch.float16, torch.bfloat16):
    rounded = weights.to(dtype).double() @ vr / weights.sum(1, keepdim=True)
    unit = torch.finfo(dtype).eps / 2
    error = (rounded - exact).abs().max() / exact.abs().max()
    print(f"P rounded to {str(dtype)[6:]:8}: max |error| / max |O| = {error:.1e}; "
          f"storing O itself in {str(dtype)[6:]} may cost up to {unit:.1e}")

# %% [markdown]
# The error from rounding the weights stays below what storing the output in the same type
# costs anyway, because each output is an average of many rounded weights whose errors
# partly cancel.

# %% tags=["hide-input"]
errs = {}  # dtype -> our max error / cuDNN's, per forward case where both ran
by_case = {}
for r in query.ok(prod["records"], direction="fwd"):
    by_case.setdefault(r["case"], {})[r["provider"]] = r
for rs in by_case.values():
    if "flash" in rs and "sdpa-cudnn" in rs:
        errs.setdefault(rs["flash"]["dtype"], []).append(rs["flash"]["max_err"] / rs["sdpa-cudnn"]["max_err"])
md("On the GPU, the benchmark checks every output against the float64 reference before timing it, and our "
   "largest errors are of the same order as cuDNN's on the same inputs, as expected when both round the weights to "
   "the input type ([the ratios](#measurement-notes)).")
notes["Errors against cuDNN's"] = (
    "Over the production forward cases, our largest error divided by cuDNN's on the same inputs ranges over "
    + "; ".join(f"{min(v):.2f}–{max(v):.2f}× in {dt}" for dt, v in sorted(errs.items())) + ".")

# %% [markdown]
# And back at post 2's sizes (one head, fp32), the tiled kernel is no longer refused at any
# length:

# %% tags=["hide-input"]
seed = query.load("seed")[0]
show(tables.seed_table(seed, providers=["vectorized", "flash", "flash-tf32", "eager", "sdpa"]))

# %% tags=["hide-input"]
sms = seed["provenance"]["sm_count"]
slower_vec, slower_eager, splits = [], [], []
for n_s, d_s in sorted({(r["shape"]["Nq"], r["shape"]["D"]) for r in seed["records"]}):
    f, v, e = (query.ok(seed["records"], provider=p, Nq=n_s, D=d_s) for p in ("flash", "vectorized", "eager"))
    if f and v and query.gpu_time(f[0]) > query.gpu_time(v[0]):
        slower_vec.append(f"{query.gpu_time(f[0]) / query.gpu_time(v[0]):.1f}× at {n_s}×{d_s}")
    if f and e and query.gpu_time(f[0]) > query.gpu_time(e[0]):
        slower_eager.append(f"{query.gpu_time(f[0]) / query.gpu_time(e[0]):.1f}× at {n_s}×{d_s}")
    s_count = kernels.splitk.planned_splits(1, 1, n_s, d_s, n_s, torch.float32, sms)
    splits.append(f"{s_count} at {n_s}×{d_s}")
md(
    "It is not faster everywhere: in GPU time the tiled kernel with IEEE fp32 products is slower than post 2's "
    f"vectorized kernel at {len(slower_vec)} of {len(splits)} sizes and slower than eager PyTorch at {len(slower_eager)} "
    f"([which, and by how much](#measurement-notes)). With one head the grid has only N / BLOCK_M programs for the "
    f"{sms} SMs, so `flash_attention` cuts each query tile's keys into slices handled by separate programs and "
    "merges their partial results (each slice's output and log-sum-exp) in a second, small kernel: split-K, the "
    "scheme FlashAttention's authors call [Flash-Decoding](https://crfm.stanford.edu/2023/10/12/flashdecoding.html) "
    "(`kernels/splitk.py`). Where it splits, more SMs get work, but IEEE fp32 products still run on the FP32 units, "
    "not the tensor cores (the TF32 column shows what those give), and eager PyTorch's cuBLAS matrix products are "
    "better tuned for them.")
notes["Post 2's sizes"] = (
    "GPU time is the CUDA-graph replay where the table shows one, which leaves out the host's launch cost, and the "
    "plain median elsewhere. The tiled kernel with IEEE fp32 products is slower than post 2's vectorized kernel "
    + ("by " + ", ".join(slower_vec) if slower_vec else "at no size") + ", and slower than eager PyTorch "
    + ("by " + ", ".join(slower_eager) if slower_eager else "at no size") + ". The split-K heuristic picks "
    + ", ".join(splits) + " slices on this GPU.")


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
for r in query.ok(prod["records"], provider="flash"):
    for p in vs:
        other = query.ok(prod["records"], provider=p, case=r["case"])
        if other and r["shape"]["Nq"] >= 2048:
            vs[p].append(other[0]["p50"] / r["p50"])  # > 1: ours is faster
spreads = sorted(query.round_spread(prod["records"]))
noise = spreads[len(spreads) // 2]  # median spread between timing rounds in this run
beat_fa2 = sum(x > 1 + noise for x in vs["sdpa-flash"])
beat_cudnn = sum(x > 1 + noise for x in vs["sdpa-cudnn"])
tie_cudnn = sum(abs(x - 1) <= noise for x in vs["sdpa-cudnn"])
md(
    f"- Measured, a few hundred lines of Triton are faster than PyTorch's FlashAttention-2 backend, by more "
    f"than this run's median timing noise ({noise:.1%}), at {beat_fa2} of {len(vs['sdpa-flash'])} shapes from "
    "2k up, forward and backward. That backend targets sm80 and uses neither wgmma nor TMA, so this says more "
    f"about it than about us. Against cuDNN: faster at {beat_cudnn}, within the noise at {tie_cudnn}, "
    f"slower at {len(vs['sdpa-cudnn']) - beat_cudnn - tie_cudnn} of {len(vs['sdpa-cudnn'])}."
    + (" On this Hopper GPU the long sequences ran [post 5](../05_gluon_hopper/)'s Gluon kernels, not this "
       "post's" + (", in the backward pass too" if "dkdv" in query.gluon_backward_passes(prod) else
                   " (forward only; the backward pass is this post's)")
       + ": the [measurement notes](#measurement-notes) give the rule."
       if query.dispatch_note(prod) else ""))

# %% [markdown]
# ## What is next
#
# [Post 4](../04_optimizing_flash/) takes this kernel apart: each optimization becomes a
# switch, each step is measured against a prediction written before it ran, and the
# compiler's report shows what each step changed.

# %% [markdown]
# ## Measurement notes
#
# The fine print of the measurements above: where the data comes from, which kernel ran,
# and the numbers behind each summary.

# %% tags=["hide-input"]
md("**Data.** " + " ".join(f"{query.gpu_label(doc)} production run: {query.provenance_line(doc)}."
                           for doc in prod_docs)
   + f" Post 2's sizes: {query.provenance_line(seed)}. Profile: {query.provenance_line(prof)}."
   + (" " + query.dispatch_note(prod_docs) if query.dispatch_note(prod_docs) else ""))
md("\n\n".join(f"**{title}.** {text}" for title, text in notes.items()))
md(f"**The {query.gpu_label(prod)}'s production run in bf16**, shape by shape:")
show(tables.production_ratio_table(prod, "bfloat16", "fwd", details=True))
show(tables.production_ratio_table(prod, "bfloat16", "bwd", details=True))
for other in prod_docs[1:]:  # every further GPU the benchmark ran on (an H200, when one was lent)
    md(f"**The {query.gpu_label(other)}'s production run**, shape by shape:")
    show(tables.production_ratio_table(other, "float16", "fwd", details=True))
    show(tables.production_ratio_table(other, "float16", "bwd", details=True))
