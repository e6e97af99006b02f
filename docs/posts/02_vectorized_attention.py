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
# # Vectorized attention: all keys in one tile
#
# [Post 1](01_basic_attention.py) walked the keys one at a time, three times over. This
# post keeps one program per query but lets each program load **every** key and value in
# a single 2-D tile, compute all scores with one reduction, and produce its output row
# with another. The loops disappear. We then measure what that buys on a real GPU, check
# the claims an earlier draft of this post made (several do not survive a measurement),
# and find the size where the design stops working.
#
# **You will learn**
#
# - how broadcasting two 1-D offset vectors (`n[:, None]`, `d[None, :]`) builds a 2-D grid
#   of addresses, and how one mask covers both ragged edges;
# - why fewer load *instructions* is not the same as fewer *bytes*;
# - how to read a timing against a traffic model, a scaling plot and a roofline;
# - why a tile held by one program has a hard size limit.

# %%
import torch

import kernels
from kernels import charts, traffic

print("Examples on this page ran on:", kernels.mode_description())

# %% [markdown]
# ## A 2-D grid of addresses from two vectors
#
# Key $n$, feature $d$ lives at `k_ptr + n * stride_kn + d * stride_kd`. Take a column
# of key indices `offs_n[:, None]` (shape `(BLOCK_N, 1)`) and a row of feature indices
# `offs_d[None, :]` (shape `(1, BLOCK_D)`); adding them broadcasts to a
# `(BLOCK_N, BLOCK_D)` block holding the offset of every element. One `tl.load` of that
# block brings in the whole key matrix. Block sizes must be powers of two, so for 6 keys
# of 5 features the block is 8 × 8, and the mask
# `(offs_n < N)[:, None] & (offs_d < D)[None, :]`, broadcast the same way, switches off
# the padding:

# %% [markdown]
# Move the slider to change the number of keys $N$ and pick the number of features $D$ from
# the menu: the block grows to the next power of two only when $N$ or $D$ passes one, and
# the grey cells show where the mask stops a load. Hover a grey cell to see which element
# its offset would have read.

# %% tags=["hide-input"]
from blog.explore import addressing  # noqa: E402
charts.show(addressing.figure())

# %% [markdown]
# Each row of the grid is one key, stored contiguously, so neighbouring threads read
# neighbouring addresses: the loads coalesce into wide memory transactions.
#
# ## The kernel
#
# With the tile in registers, the scores are one broadcast multiply and a sum along the
# feature axis; the softmax is a `max`, an `exp` and a `sum` over the key axis; the output
# row is another broadcast multiply and a sum along the key axis.

# %% tags=["hide-input"]
charts.show_source(kernels.vectorized._vectorized_attention_kernel)

# %% [markdown]
# Masked keys (padding, and future keys under `causal=True`) get a score of $-\infty$, so
# $e^{-\infty - m} = 0$ exactly: they receive no weight whatever the loaded lanes held.
# The values tile uses `other=0.0` for a second reason: a padded lane multiplied by a zero
# weight must be zero, and `0 × NaN` would not be.
#
# ## Correctness, on this machine

# %%
torch.manual_seed(0)
device = "cpu" if kernels.INTERPRET else "cuda"
B, H, N, D = (1, 2, 100, 40) if kernels.INTERPRET else (2, 4, 512, 128)  # odd sizes: masks at work
q, k, v = (torch.randn(B, H, N, D, device=device) for _ in range(3))

for causal in (False, True):
    out = kernels.vectorized_attention(q, k, v, causal=causal)
    ref = kernels.reference_attention(q, k, v, causal=causal)
    diff = (out.double() - ref.double()).abs()
    tol = 2e-5
    ok = bool(diff.max() <= tol)
    print(f"causal={causal!s:5}  shape {tuple(out.shape)}  max |diff| {diff.max():.2e}  "
          f"mean |diff| {diff.mean():.2e}  within {tol:g}: {ok}")
    assert ok, "vectorized_attention disagrees with the reference"

# %% [markdown]
# ## Memory traffic: what "load all keys at once" really saves
#
# An earlier draft of this post said that loading all keys at once means each key is
# loaded exactly once, and that the vectorized kernel needs about half a megabyte of
# traffic at 512 × 128 against hundreds of megabytes for the basic one, a "512× reduction".
# Count it. Each of the $N_q$ programs loads all of $K$ and all of $V$: $2N_kD$ elements
# per query, the same order as the basic kernel. What fell by $512\times$ is the number
# of load *instructions* (one tile load instead of one load per key), not the bytes.

# %%
nq = nk = 512
d, e = 128, 4
rows = [("basic", traffic.basic(nq, nk, d, elem_bytes=e)),
        ("vectorized", traffic.vectorized(nq, nk, d, elem_bytes=e)),
        ("flash (post 3)", traffic.flash(nq, nk, d, elem_bytes=e))]
print(f"{'design':15} {'requested':>12} {'compulsory':>12}   loads issued per program")
for name, t in rows:
    loads = {"basic": f"{4 * nk + 1} (one per key per pass)", "vectorized": "3 (q, K tile, V tile)",
             "flash (post 3)": "1 + 2 per key tile"}[name]
    print(f"{name:15} {t.bytes_total / 1e6:9.1f} MB {t.compulsory_bytes / 1e6:9.2f} MB   {loads}")
vec = rows[1][1]
print(f"\nvectorized reads: {e} B x {d} x ({nq} + 2 x {nq} x {nk}) = {vec.bytes_read / 1e6:.1f} MB, "
      f"{vec.bytes_read / vec.compulsory_bytes:.0f}x the compulsory traffic")

# %% [markdown]
# So the draft's memory claim is false: the vectorized design *requests* the same order
# of bytes as the basic one. What makes it faster is that those bytes arrive in a few wide,
# independent loads that the memory system can overlap, instead of thousands of small
# dependent ones. The L2 cache absorbs the re-reads at small sizes; the measured numbers
# below show when it stops being able to.
#
# ## Performance on a real GPU
#
# The draft's four sizes plus two longer sequences, one head, fp32, measured by
# `scripts/benchmark.py` in one run against eager PyTorch and PyTorch's fused
# `scaled_dot_product_attention`. "refused" marks a size the kernel rejects by design
# (below); hover a cell for the reason.

# %% tags=["hide-input"]
seed = charts.load("seed")[0]
charts.show(charts.seed_table(seed, providers=["basic", "vectorized", "eager", "sdpa"]))

# %% tags=["hide-input"]
vec_512, eager_512 = charts.median(seed, "vectorized", Nq=512, D=128), charts.median(seed, "eager", Nq=512, D=128)
vec_1k, eager_1k = charts.median(seed, "vectorized", Nq=1024, D=256), charts.median(seed, "eager", Nq=1024, D=256)
basic_512 = charts.median(seed, "basic", Nq=512, D=128)
charts.md(
    f"Against post 1 the gain is real: at 512×128 the vectorized kernel takes {charts.fmt_ms(vec_512)} where "
    f"the basic one took {charts.fmt_ms(basic_512)} ({basic_512 / vec_512:.0f}× faster). Against PyTorch it is "
    f"not *competitive*, as the draft claimed: eager PyTorch takes {charts.fmt_ms(eager_512)} there, "
    f"so the kernel is **{vec_512 / eager_512:.1f}× slower**, and at 1024×256 it is "
    f"**{vec_1k / eager_1k:.0f}× slower** ({charts.fmt_ms(vec_1k)} against {charts.fmt_ms(eager_1k)}). "
    f"(Measured on the {seed['provenance']['gpu']}; the draft's own figures were not from this hardware.)")

# %% tags=["hide-input"]
charts.show(charts.seed_comparison(seed, providers=["basic", "vectorized", "eager", "sdpa"]))

# %% tags=["hide-input"]
charts.show(charts.seed_speedup(seed, providers=("basic", "vectorized", "sdpa")))

# %% [markdown]
# ### Theoretical traffic against measured time
#
# Left, the bytes each design requests at each size (the model above); right, those bytes
# divided by the measured time. A design whose implied bandwidth sits far above the
# measured copy bandwidth is being served from cache; one far below it is not limited by
# memory at all, but by latency, instruction count or idle SMs.

# %% tags=["hide-input"]
charts.show(charts.memory_traffic(seed, providers=("basic", "vectorized", "eager")))

# %% [markdown]
# ### Scaling with sequence length
#
# The ladder suite holds $D = 64$ and doubles $N$. On a log–log plot a slope of 1 means time
# grows linearly with $N$, a slope of 2 quadratically. The vectorized curve is nearly flat
# while the whole problem is too small to fill the GPU, then bends sharply up once each
# program's tile no longer fits in registers.

# %% tags=["hide-input"]
ladder = charts.load("ladder")[0]
charts.show(charts.scaling(ladder, providers=("basic", "vectorized", "eager", "sdpa")))

# %% [markdown]
# ### Roofline
#
# Achieved FLOP/s against arithmetic intensity (FLOPs per byte requested, from the
# model). The dashed roof is the smaller of the measured copy bandwidth times the
# intensity and the measured fp32 matrix-multiply rate: what the kernel could reach if
# every requested byte came from DRAM. A point *above* the roof means the L2 cache served
# many of the re-reads; a point far *below* it means neither memory nor arithmetic is the
# limit, but latency and idle SMs.

# %% tags=["hide-input"]
charts.show(charts.roofline(ladder, providers=("basic", "vectorized", "eager")))

# %% tags=["hide-input"]
vec_f, basic_f = charts.roof_fractions(ladder, "vectorized"), charts.roof_fractions(ladder, "basic")
n_top = max(vec_f, key=vec_f.get)
n_last = max(vec_f)
charts.md(
    f"The vectorized kernel peaks at N={n_top}, at **{vec_f[n_top]:.1f}×** its DRAM roof: its re-reads of $K$ "
    f"and $V$ come from the L2 cache there. By N={n_last} it is down to {vec_f[n_last]:.2f}× of the roof, "
    f"once its tile spills out of registers. The basic kernel never gets above "
    f"{max(basic_f.values()):.2f}× of its roof at any N: it is bound by the latency of its one-key-at-a-time walk.")

# %% [markdown]
# ## Where the design stops
#
# The whole `(BLOCK_N, BLOCK_D)` tile lives in one program's registers. An H100 thread has
# at most 255 32-bit registers, and a program has `num_warps × 32` threads, so the tile
# alone needs this many registers per thread:

# %%
for n, d in [(512, 128), (1024, 256), (2048, 128), (4096, 128)]:
    tile = kernels._runtime.next_pow2(n) * kernels._runtime.next_pow2(d)
    warps = kernels.vectorized._num_warps(tile)
    verdict = "accepted" if tile <= kernels.MAX_TILE_ELEMENTS else "refused"
    print(f"N={n:5} D={d:3}: tile {tile:7} elements / ({warps:2} warps x 32 threads) = "
          f"{tile // (warps * 32):4} values per thread for K alone -> {verdict}")

# %% [markdown]
# Past 255 values per thread the compiler spills to local memory (off-chip, through the
# caches), which is what the bend in the scaling plot shows. At 4096 × 128 the compile
# itself did not finish in minutes on an H100. So `vectorized_attention` refuses tiles
# above `MAX_TILE_ELEMENTS` (1024 × 256) with an error that points to the fix:

# %%
try:
    x = torch.randn(4096, 128, device=device)
    kernels.vectorized_attention(x, x, x)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## Key takeaways
#
# - Broadcasting `offs_n[:, None]` against `offs_d[None, :]` turns two vectors into a 2-D
#   block of addresses; the same broadcast builds its mask.
# - Loading all keys at once cuts load *instructions*, not bytes: every program still
#   reads all of $K$ and $V$. Count bytes, not loads.
# - Measured on a real GPU the vectorized kernel is much faster than post 1's, and still
#   slower than PyTorch, increasingly so as $N$ grows.
# - One program per query cannot hold a long sequence: registers bound the tile, and
#   spilling ruins it well before the hard limit.
#
# ## What is next
#
# [Post 3](03_flash_attention.py) keeps the tile but stops asking one program to hold all
# of $K$: a block of queries streams the keys past in fixed-size tiles and keeps the
# softmax *online*. Any length fits, and whole blocks of queries share each key tile.
