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
# # Optimizing FlashAttention, one switch at a time
#
# [Post 3](../03_flash_attention/) built a FlashAttention-2 kernel and measured it against
# PyTorch's backends. This post takes that kernel apart. Every optimization in it is a
# compile-time switch, so we can start from a plain tiled kernel, turn the switches on one
# by one, and measure each step on the GPU. Before each measurement we wrote down what we
# expected it to buy, and why. The chart puts the prediction next to the measurement, and
# the prose says where they differ.
#
# **You will learn**
#
# - which steps pay on a Hopper GPU (software pipelining, skipping causal tiles, keeping
#   masks out of the hot loop, a cheaper exponential), how much each one gives, and which
#   are too small for this benchmark to see;
# - how to read the compiler's report (registers, spills, shared memory, instruction
#   counts) and connect it to a measured change;
# - where a few hundred lines of Triton stand against NVIDIA's cuDNN kernel, and why.
#
# Where each measurement comes from, and the fine print of the profile, are in the
# [measurement notes](#measurement-notes) at the end.

# %%
import statistics

import kernels
from kernels import ablation
from kernels.experiments import warpspec
from blog import figures, query, tables
from blog.notebook import md, show, show_source
from perfdata import traffic

print("Examples on this page ran on:", kernels.mode_description())

abl = query.load("ablation")[0]
prod = query.load("production")[0]
wsp = query.load("warpspec")[0]
shape = abl["records"][0]["shape"]
appendix = {}  # title -> text of the measurement notes, filled where the numbers are computed, shown at the end

# %% [markdown]
# ## The yardstick
#
# Each case below is one forward pass at a long sequence length. Throughput uses the
# FlashAttention convention: $4BHN^2D$ FLOPs, half that with a causal mask. Two yardsticks
# for the arithmetic: the rate of a large fp16 matrix multiply (`torch.matmul` of two
# 8192 × 8192 matrices, which PyTorch hands to cuBLAS) measured on the same GPU, and the
# datasheet's dense fp16 tensor-core peak. The bar to beat is PyTorch's cuDNN backend,
# timed in the same run.

# %% tags=["hide-input"]
ceil = abl["provenance"]["ceilings"]["matmul_fp16_tflops"]
# NVIDIA H100 SXM datasheet, dense FP16/BF16 tensor-core peak (the 1979 on the sheet assumes sparsity):
# https://www.nvidia.com/en-us/data-center/h100/
DATASHEET_FP16_TFLOPS = 989
flops = traffic.attention_flops(shape["Nq"], shape["Nk"], 128, heads=shape["B"] * 16)
cud_128 = query.ablation_reference(abl, "sdpa-cudnn", 128, False)
md(
    f"At B={shape['B']}, N={shape['Nq']}, 16 heads of D=128, one forward pass is {flops / 1e12:.1f} TFLOP. "
    f"On the {abl['provenance']['gpu']}, the large cuBLAS matmul ran at {ceil:.0f} TFLOP/s, at which rate the pass "
    f"would take {flops / ceil / 1e9:.2f} ms; at the datasheet's {DATASHEET_FP16_TFLOPS} TFLOP/s it would take "
    f"{flops / DATASHEET_FP16_TFLOPS / 1e9:.2f} ms. Neither is a hard floor: the matmul rate is what one "
    "well-tuned kernel reached, and the peak is reached by none. cuDNN took "
    f"{flops / cud_128 / 1e9:.2f} ms ({cud_128:.0f} TFLOP/s, {cud_128 / ceil:.0%} of the matmul rate, "
    f"{cud_128 / DATASHEET_FP16_TFLOPS:.0%} of the datasheet peak).")

# %% [markdown]
# ## The switches
#
# The production forward kernel has three constexpr switches beside its tile sizes. Each
# one is a compile-time constant, so a step with a switch off compiles to a different
# kernel with the disabled code removed. Nothing is timed through an `if` at run time.

# %% tags=["hide-input"]
show_source(kernels.flash.flash_fwd_kernel, start="    BLOCK_M: tl.constexpr, BLOCK_N", end="):\n")

# %% [markdown]
# The steps, in the order they are switched on. The predictions are speed-ups over the step
# before. They are stored with each step in `kernels/ablation.py` and were written before
# the first measurement:

# %% tags=["hide-input"]
rows = ["| step | what changes | predicted (full / causal) | why we expected it |", "|---|---|---|---|"]
for r in ablation.RUNGS:
    tile = "autotuned" if r.tile is None else f"{r.tile[0]}×{r.tile[1]}, {r.tile[2]} warps, {r.tile[3]} stages"
    pred = "start" if r is ablation.RUNGS[0] else f"{r.predict_full:.2f}× / {r.predict_causal:.2f}×"
    rows.append(f"| `{r.name}` | {r.label} ({tile}) | {pred} | {r.why} |")
md("\n".join(rows))

# %% [markdown]
# Every step is a correct kernel. The test suite checks each one against the float64
# reference, causal and not, at odd sizes, and checks that the last step returns exactly
# what `flash_attention` returns. Here is one check, executed now:

# %%
import torch  # noqa: E402

from kernels import reference_attention  # noqa: E402

torch.manual_seed(0)
dev = "cpu" if kernels.INTERPRET else "cuda"
q, k, v = (torch.randn(2, 48, 32, device=dev) for _ in range(3))
ref = reference_attention(q, k, v, causal=True)
for step in ablation.RUNG_NAMES:
    out = ablation.ablation_attention(q, k, v, causal=True, step=step)
    err = (out.double() - ref).abs().max().item()
    assert err < 2e-5, (step, err)
    print(f"{step:12s} max abs error {err:.1e}")

# %% [markdown]
# ## Measured, step by step
#
# `scripts/benchmark.py --suite ablation` times every step in one run, beside cuDNN and
# FlashAttention-2. Bars are the measured throughput. Each diamond is the previous step's
# measurement times the predicted speed-up, so a diamond above its bar means the step paid
# less than we expected.

# %% tags=["hide-input"]
show(figures.ablation_ladder(abl))

# %% tags=["hide-input"]
parts = []
for d, causal in query.ablation_cases(abl):
    rs = query.ablation_rows(abl, d, causal)
    best = max((r for r in rs if r["status"] == "ok"), key=lambda r: r["tflops"])
    cud = query.ablation_reference(abl, "sdpa-cudnn", d, causal)
    parts.append(f"D={d} {'causal' if causal else 'full'}: {rs[0]['tflops']:.0f} → {best['tflops']:.0f} TFLOP/s "
                 f"(**{best['tflops'] / rs[0]['tflops']:.2f}×**, best at `{best['provider']}`, "
                 f"{best['tflops'] / cud:.2f}× cuDNN)")
md("From the first step to the fastest, per case: " + "; ".join(parts) + ".")

# %% [markdown]
# ## Prediction against measurement

# %% tags=["hide-input"]
show(tables.ablation_table(abl))


# %% [markdown]
# Step through the same ablation one switch at a time with the slider, and pick a case from
# the menu. The highlighted bar is the step; the diamond is what we predicted for it; the
# text says whether the measured speed-up lies outside the spread between timing rounds; and
# the code below is the change the step makes to the kernel, generated from its source.

# %% tags=["hide-input"]
from blog.explore import ablation_steps, provenance, tile_budget  # noqa: E402

show(ablation_steps.figure(abl, provenance(abl)))


# %% tags=["hide-input"]
def speedups(name):
    """Measured speed-ups of one step over the one before, in all four cases."""
    return [r["measured_speedup"] for d, c in query.ablation_cases(abl)
            for r in query.ablation_rows(abl, d, c) if r["provider"] == name and r["measured_speedup"]]


def span(name):
    xs = speedups(name)
    return f"{min(xs):.2f}–{max(xs):.2f}×"


def causal_span(name):
    xs = [r["measured_speedup"] for d in (128, 64) for r in query.ablation_rows(abl, d, True)
          if r["provider"] == name and r["measured_speedup"]]
    return f"{min(xs):.2f}–{max(xs):.2f}×"


pipe, big = ablation.rung("pipelined"), ablation.rung("big-tiles")
md(
    f"- **Software pipelining** gave {span('pipelined')}. We predicted {pipe.predict_full:.2f}×. "
    "The gain is largest at D=128, where each tile carries twice the bytes. Even without pipelining, the 4-warp "
    "64×64 programs are small enough that several share an SM and hide part of each other's memory latency, "
    "which is why the prediction was too high.\n"
    f"- **Bigger tiles** gave only {span('big-tiles')} against a predicted {big.predict_full:.2f}×. Halving the K/V "
    "re-reads does not matter much here: at these lengths the kernel was already compute-bound, with each byte read "
    "serving hundreds of FLOPs.\n"
    f"- **Skipping tiles past the diagonal** is the one step that changes the amount of work. It gave "
    f"{causal_span('skip-future')} on causal cases, close to the predicted "
    f"{ablation.rung('skip-future').predict_causal:.1f}×; the diagonal tiles still pay in full.\n"
    f"- **The unmasked interior loop** gave {span('split-loops')}. It paid more than predicted on causal cases, "
    "where the earlier steps built a mask for every tile, including the tiles wholly inside the triangle.\n"
    f"- **exp2 with the scale folded in** gave {span('exp2')}, more than the {ablation.rung('exp2').predict_full:.2f}× "
    "we expected. The softmax runs on the CUDA cores and the special-function unit beside the tensor cores, and "
    "on this GPU it is not a small share of the time (see the budget below), so each instruction saved per score "
    "counts for more than its share of the instruction mix suggests.\n"
    f"- **One FMA for the scale and the max** gave {span('exp2-fma')} against a predicted "
    f"{ablation.rung('exp2-fma').predict_full:.2f}×"
    + (": a step that small is inside the spread of repeated timings (below), so this benchmark cannot "
       "resolve it." if min(speedups("exp2-fma")) < 1 else ", about as predicted."))

# %% [markdown]
# How small a step can this benchmark see? Each kernel is timed in three rounds,
# interleaved with the other kernels of the same case and in a rotated order, and the
# samples are pooled. The rounds of one kernel still disagree:

# %% tags=["hide-input"]
spread = sorted(query.round_spread(abl["records"]))
md(
    f"Across the {len(spread)} timings above, the slowest round's median was {spread[len(spread) // 2]:.1%} above "
    f"the fastest round's in the median case, and up to {spread[-1]:.0%} in the worst. The GPU's clock and power "
    "management move between rounds. A step that predicts a few percent can only be read from the pooled median, "
    "and only loosely.")

# %% [markdown]
# With that floor, the steps ranked by their measured effect (the median over the cases a
# step is meant to change: causal cases only for skipping tiles, all four otherwise), and
# the predictions scored only where they could be told apart from noise:

# %% tags=["hide-input"]
floor = spread[len(spread) // 2]
effects = []
for r in ablation.RUNGS[1:]:
    xs = [row["measured_speedup"] for d, c in query.ablation_cases(abl)
                               for row in query.ablation_rows(abl, d, c)
                               if row["provider"] == r.name and row["measured_speedup"]
                               and (c or r.predict_full != 1.0 or r.predict_causal == 1.0)]
    xs = sorted(xs)
    effects.append((xs[len(xs) // 2], min(xs), max(xs), r.name))
rows = ["| rank | step | median speed-up | range over cases | above the noise floor? |", "|---|---|---|---|---|"]
for rank, (med, lo, hi, name) in enumerate(sorted(effects, reverse=True), 1):
    seen = "yes" if min(abs(lo - 1), abs(hi - 1)) > floor and (lo - 1) * (hi - 1) > 0 else (
        "in some cases" if max(abs(lo - 1), abs(hi - 1)) > floor else "no")
    rows.append(f"| {rank} | `{name}` | {med:.2f}× | {lo:.2f}–{hi:.2f}× | {seen} |")
pairs = [(row["measured_speedup"], row["predicted_speedup"]) for d, c in query.ablation_cases(abl)
         for row in query.ablation_rows(abl, d, c) if row["measured_speedup"]]
resolvable = [(m, pr) for m, pr in pairs if abs(pr - 1) > floor]
close = sum(abs(m / pr - 1) <= 0.1 for m, pr in resolvable)
md("\n".join(rows) + "\n\n"
          f"Of the {len(pairs)} step measurements, {len(pairs) - len(resolvable)} had a prediction within the "
          f"{floor:.1%} noise floor of no change: a ±10% band passes those almost whatever happens, so they do not "
          f"test the prediction. Of the {len(resolvable)} predictions larger than the floor, **{close}** landed "
          "within 10% of the measurement.")

# %% [markdown]
# Why did the cheaper exponential pay more than its share? Because on this GPU the
# softmax is not small beside the matrix products. Per score, the two products cost
# $4D$ FLOPs on the tensor cores, and the softmax one `ex2` on the special-function unit.
# [The FlashAttention-3 paper](https://arxiv.org/abs/2407.08608) (section 3.2) gives the
# H100 SXM5's throughputs for the two:

# %% tags=["hide-input"]
# FlashAttention-3 paper, section 3.2: H100 SXM5 fp16 matmul and special-function throughput.
FA3_MATMUL_TFLOPS, FA3_SPECIAL_FUNCTION_TFLOPS = 989, 3.9
ratio = FA3_MATMUL_TFLOPS / FA3_SPECIAL_FUNCTION_TFLOPS
md(
    f"{FA3_MATMUL_TFLOPS} TFLOP/s of fp16 matrix multiply against {FA3_SPECIAL_FUNCTION_TFLOPS} T operations/s "
    f"for exponentials: the tensor cores are {ratio:.0f}× faster. So per score the exponential takes "
    + ", ".join(f"{ratio / (4 * d):.0%} of the matrix products' time at D={d}" for d in (128, 64))
    + ", if nothing overlaps them. The matmuls are fast, not free, and the softmax sits on the critical path "
    "between them; every instruction taken out of it shows.")

# %% [markdown]
# Nsight Compute can measure part of that split. For every step it reads the hardware
# counters of one launch: how busy the XU pipe (the special-function unit, where `ex2` runs)
# was, as a percentage of its peak rate over the cycles the SMs were active, and how many
# bytes crossed DRAM, beside the bytes the traffic model says the loads request. By
# [Nsight Compute's definition](https://docs.nvidia.com/nsight-compute/ProfilingGuide/index.html)
# the XU pipe also runs int-to-float and float-to-int conversions, so its activity bounds the
# exponential's share from above.

# %% tags=["hide-input"]
prof = query.same_gpu_doc(query.load("profile"), abl["provenance"]["gpu"])
pp = prof["provenance"]
steps = query.profile_steps(prof)
same_gpu = pp["gpu"] == abl["provenance"]["gpu"]
step_cases = sorted({c for c, _ in steps})
prof_shape = next(iter(steps.values()))["shape"]


def profiled(causal):
    """(step name, record) in ladder order, for the steps ncu profiled."""
    return [(name, steps[(causal, name)]) for name in ablation.RUNG_NAMES if (causal, name) in steps]


# Step name -> median time (ms) in the ablation benchmark, for a benchmark run on the profile's GPU.
timed = {c: {r["provider"]: r["p50"] for r in query.ablation_rows(abl, prof_shape["D"], c) if r["status"] == "ok"}
         if same_gpu else {} for c in step_cases}
show(figures.ablation_profile(prof, abl))


def span(values, fmt, unit=""):
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def get(name, key, causal=False):
    """A measured value of one step, or None if that step or value is missing."""
    record = steps.get((causal, name))
    return None if record is None else record["measured"][key]


sm_ghz = [r["measured"]["sm_hz"] / 1e9 for r in steps.values() if r["measured"]["sm_hz"]]
dram_ghz = [r["measured"]["dram_hz"] / 1e9 for r in steps.values() if r["measured"]["dram_hz"]]
clocks = ("Nsight Compute left the clocks to the GPU (`--clock-control none`), as they are in the timed runs"
          if pp["clock_control"] == "none" else
          "Nsight Compute locked the clocks to their base values (`--clock-control base`), so the profiled "
          "launches run slower than the timed ones")
if sm_ghz:
    clocks += (f": the SM clock read {span(sm_ghz, '.2f', ' GHz')}"
               + (f" and the DRAM clock {span(dram_ghz, '.2f', ' GHz')}" if dram_ghz else "")
               + " across these launches")
lines = []
appendix["The profile's clocks and counters"] = clocks + "."
if all(r["measured"]["tensor_pct"] is None for r in steps.values()):
    lines.append("The tensor pipe's busy-cycle counter returned no value for these launches "
                 "([which counter](#measurement-notes)), so the chart shows no tensor-pipe bars; the achieved "
                 "TFLOP/s against the measured matmul rate, above, is this page's measure of tensor-core use.")
    appendix["The profile's clocks and counters"] += (
        f" The tensor pipe's counter is `{pp['metric_sources']['tensor_pct']}`, the one this Nsight Compute "
        f"{pp['ncu']} lists for Hopper.")
tensor = [get("naive", "tensor_pct"), get("autotuned", "tensor_pct")]
xu = [get("naive", "xu_pct"), get("autotuned", "xu_pct")]
if None not in tensor:
    lines.append(f"In the full case the tensor pipe ran at {tensor[0]:.0f}% of its peak in the first step and "
                 f"{tensor[1]:.0f}% in the last"
                 + (f"; the XU pipe at {xu[0]:.0f}% and {xu[1]:.0f}%." if None not in xu else "."))
xu = [get("split-loops", "xu_pct"), get("exp2", "xu_pct")]
if None not in xu:
    ms = [get(name, "duration_ns") / 1e6 for name in ("split-loops", "exp2")]
    ex2 = {r["provider"]: (r.get("compiler") or {}).get("ptx_ex2")
           for r in query.ablation_rows(abl, prof_shape["D"], False)}
    ex2 = [ex2.get("split-loops"), ex2.get("exp2")]
    lines.append(f"Folding the scale into `exp2` moved the XU pipe from {xu[0]:.0f}% to {xu[1]:.0f}% and the "
                 f"profiled launch from {ms[0]:.2f} to {ms[1]:.2f} ms"
                 + ("." if None in ex2 else
                    ", while the count of `ex2` instructions in the code "
                    + (f"stayed at {ex2[1]}" if ex2[0] == ex2[1] else f"went from {ex2[0]} to {ex2[1]}")
                    + " (the compiler report below)."))
pair = [steps.get((True, name)) for name in ("big-tiles", "skip-future")]
if None not in pair:
    dram = [(r["measured"]["dram_read_bytes"] + r["measured"]["dram_write_bytes"]) / 1e9 for r in pair]
    requested = [r["model"]["requested_bytes"] / 1e9 for r in pair]
    ms = [r["measured"]["duration_ns"] / 1e6 for r in pair]
    lines.append(f"Skipping the tiles past the diagonal took the causal case's DRAM traffic from {dram[0]:.2f} to "
                 f"{dram[1]:.2f} GB, the bytes its loads and stores request from {requested[0]:.1f} to "
                 f"{requested[1]:.1f} GB (model), and the profiled launch from {ms[0]:.2f} to {ms[1]:.2f} ms.")
served = [r["measured"]["dram_read_bytes"] / r["model"]["requested_read_bytes"] for r in steps.values()]
lines.append(f"Across all {len(served)} launches DRAM delivered {span(served, '.0%')} of the bytes the loads "
             "requested; caches served the rest.")
bench_ratios = [r["measured"]["duration_ns"] / 1e6 / timed[c][name]
                for c in step_cases for name, r in profiled(c) if name in timed[c]]
if bench_ratios:
    commits = (pp["git_commit"][:7], abl["provenance"]["git_commit"][:7])
    appendix["Profiled against timed"] = (
        f"A profiled launch took {span(bench_ratios, '.2f', '×')} the benchmark's median time for the same step"
        + (f" (the profile ran the kernel at commit {commits[0]}, the benchmark at {commits[1]})"
           if commits[0] != commits[1] else "") + ".")
elif not same_gpu:
    lines.append(f"The profile ran on {pp['gpu']}, the timings above on {abl['provenance']['gpu']}; "
                 "the chart therefore shows no benchmark times beside the profiled ones.")
md(" ".join(lines))

# %% [markdown]
# ## What the compiler report showed
#
# For each step the benchmark keeps the compiled kernel's register count, spills and shared
# memory, and counts a few instructions in its PTX (the code as written, not the instructions
# executed). The D=128 full case:

# %% tags=["hide-input"]
show(tables.compiler_table(abl, 128, False))

# %% tags=["hide-input"]
reports = {(d, c, r["provider"]): r["compiler"] for d, c in query.ablation_cases(abl)
           for r in query.ablation_rows(abl, d, c) if r.get("compiler")}
max_spills = max(rep["spills"] for rep in reports.values())
all_wgmma = all(rep["ptx_wgmma"] > 0 for rep in reports.values())
regs = [rep["registers"] for rep in reports.values()]
mul = {n: reports[(128, False, n)]["ptx_mul_f32"] for n in ("split-loops", "exp2", "exp2-fma")}
smem = reports[(128, False, "exp2-fma")]["shared_bytes"]
fixed = next(r for r in query.ablation_rows(abl, 128, False) if r["provider"] == "exp2-fma")
cfg, rep128 = fixed["config"], fixed["compiler"]
threads = cfg["num_warps"] * 32
budget = min(255, 65536 // threads)  # registers per thread a program of this size may have
acc_regs = cfg["BLOCK_M"] * 128 // threads  # fp32 output accumulator, D=128
score_regs = cfg["BLOCK_M"] * cfg["BLOCK_N"] // threads  # fp32 score tile
q_bytes = cfg["BLOCK_M"] * 128 * 2  # fp16 Q tile
kv_bytes = cfg["num_stages"] * 2 * cfg["BLOCK_N"] * 128 * 2  # K and V tiles, one pair per pipeline stage
SHARED_PER_SM = 228 * 1024  # shared memory per SM, compute capability 9.0 (CUDA guide); 227 KB per block
md(
    f"- **Spills:** {'none' if max_spills == 0 else f'up to {max_spills}'} in any step. Registers per thread "
    f"range from {min(regs)} to {max(regs)}. The budget is min(255, 65536 / threads): {min(255, 65536 // 128)} "
    f"for a 4-warp program and {min(255, 65536 // 256)} for an 8-warp one, so every step fits.\n"
    f"- **Register budget of the production tile** (D=128, {cfg['BLOCK_M']}×{cfg['BLOCK_N']}, {cfg['num_warps']} "
    f"warps): the fp32 output accumulator alone takes {acc_regs} registers per thread and the fp32 score tile "
    f"{score_regs}; the compiler used {rep128['registers']} of a {budget} budget. At "
    f"{rep128['registers'] * threads} registers per program, {65536 // (rep128['registers'] * threads)} program "
    "fits on an SM at a time by registers.\n"
    f"- **Shared memory:** {rep128['shared_bytes'] / 1024:.0f} KB for that tile. That matches a "
    f"{q_bytes / 1024:.0f} KB fp16 Q tile plus {cfg['num_stages']} pipeline stages of K and V tiles "
    f"({kv_bytes / 1024:.0f} KB): {(q_bytes + kv_bytes) / 1024:.0f} KB. With {SHARED_PER_SM // 1024} KB per SM, "
    f"{SHARED_PER_SM // rep128['shared_bytes']} program fits on an SM at a time by shared memory too, so each "
    "SM runs one program of 8 warps and has nothing else to switch to while that program waits.\n"
    f"- **Tensor cores:** {'every' if all_wgmma else 'not every'} step uses Hopper's asynchronous warpgroup "
    "matrix instruction (`wgmma`). Triton emits it for `tl.dot` on its own when the tiles allow it, so no step "
    "loses to an older matrix path.\n"
    f"- **The exponential:** `mul.f32` falls from {mul['split-loops']} to {mul['exp2']} to {mul['exp2-fma']} "
    "instructions in the code across the three softmax steps. Those are the multiplies that the folded and "
    "fused scale remove. The count of `ex2` stays the same: `exp` was already compiled to `ex2` after a multiply.")

# %% [markdown]
# What a tile costs, and what fits: for each forward candidate, the registers its data needs
# per thread and the shared memory its buffers need, against the H100's limits (64K registers
# and 228 KB of shared memory per SM, at most 227 KB per block and 255 registers per thread,
# 2048 threads per SM: NVIDIA's [Hopper tuning guide](https://docs.nvidia.com/cuda/hopper-tuning-guide/index.html#occupancy)
# and the [CUDA C++ Programming Guide](https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#features-and-technical-specifications)).
# Pick a head dim and dtype from the menu. Diamonds mark what the compiler reported for the
# tiles the ablation compiled.

# %% tags=["hide-input"]
show(tile_budget.figure(abl, provenance(abl, "Compiler numbers from")))
budget_tiles = {64: kernels.flash.FWD_TILES[64] + [r.tile for r in ablation.RUNGS if r.tile],
                128: kernels.flash.FWD_TILES[128] + [r.tile for r in ablation.RUNGS if r.tile]}
notes = tile_budget.disagreements(abl, {hd: list(dict.fromkeys(ts)) for hd, ts in budget_tiles.items()})
md("Where the model and the compiler part ways:\n\n" + "\n".join(f"- {n}" for n in notes) if notes else
          "For every tile the benchmark compiled, the model's shared memory matches the compiler's, and its "
          "register count stays below the compiler's (which adds addresses and row statistics).")

# %% [markdown]
# ## The autotuner's pick
#
# The last step is `flash_attention` itself: the same kernel, but with the tile chosen by
# Triton's autotuner from a short list per head dimension.

# %% tags=["hide-input"]
lines = []
for d, causal in query.ablation_cases(abl):
    by = {r["provider"]: r for r in query.ablation_rows(abl, d, causal)}
    fixed, tuned = by["exp2-fma"], by["autotuned"]
    cfg = tuned["config"]
    same = cfg == fixed["config"]
    lines.append(f"- D={d} {'causal' if causal else 'full'}: picked {cfg['BLOCK_M']}×{cfg['BLOCK_N']}, "
                 f"{cfg['num_warps']} warps, {cfg['num_stages']} stages{' (the same tile)' if same else ''}: "
                 f"{tuned['tflops']:.0f} against {fixed['tflops']:.0f} TFLOP/s for the fixed step "
                 f"({tuned['tflops'] / fixed['tflops']:.2f}×)")
md("\n".join(lines))

# %% tags=["hide-input"]
ratios = [by_case["autotuned"]["tflops"] / by_case["exp2-fma"]["tflops"]
          for by_case in ({r["provider"]: r for r in query.ablation_rows(abl, d, c)} for d, c in query.ablation_cases(abl))]
md(
    f"The autotuned step ran at {min(ratios):.2f}–{max(ratios):.2f}× the fixed one. An earlier version of this "
    "benchmark timed each step once, one after another, and there the autotuned step came out a few percent "
    "slower even where it had picked the same tile and compiled to identical code. Timed in interleaved, rotated "
    "rounds, that gap "
    + ("is gone: it came from the order of the timings, not from the kernel." if min(ratios) > 0.98 else
       "remains, and we cannot explain it.")
    + " The lesson for any ablation: time the variants against each other in the same rounds, never one "
      "after another.")

# %% [markdown]
# ## Automatic warp specialisation, measured
#
# [FlashAttention-3](https://arxiv.org/abs/2407.08608) overlaps work on Hopper in three
# separate ways, worth keeping apart (the first two are its section 3.1, the third 3.2):
#
# - **Producer/consumer warp specialisation**: a producer warp group only issues the TMA
#   loads of $K$ and $V$, consumer warp groups only compute, and registers move to the
#   consumers (`setmaxnreg`). This overlaps *loads* with compute.
# - **Ping-pong scheduling between two consumer warp groups**: barriers make one group's
#   softmax run while the other group's matrix products run. This overlaps the *softmax*
#   of one group with the *matmuls* of another.
# - **Pipelining inside one warp group**: the next tile's $QK^\top$ is issued before the
#   current tile's softmax, so that a single group also overlaps the two.
#
# Our kernel does none of the three explicitly; Triton's software pipelining (the
# `num_stages` step above) overlaps only the loads. Triton can warp-specialise a loop by
# itself, `tl.range(..., warp_specialize=True)`. On Hopper that pass, contributed from
# Meta's automatic warp specialisation work, partitions the loop into a producer group for
# the loads and consumer groups for the compute, optionally splitting the rows between
# two consumer groups
# ([triton-lang/triton#5622](https://github.com/triton-lang/triton/pull/5622),
# [#7136](https://github.com/triton-lang/triton/pull/7136)). That is the first mechanism
# only. Ping-pong between consumer groups exists as an experimental pass in Meta's fork
# ([facebookexperimental/triton#24](https://github.com/facebookexperimental/triton/pull/24)),
# not in the Triton we measured. So even when it works, the automatic pass overlaps loads
# with compute, not the softmax with the matmuls. `kernels/experiments/warpspec.py` rewrites the forward
# kernel around on-device descriptors with that flag as a switch, and
# `scripts/benchmark.py --suite warpspec` times each tile with the flag off and on, beside
# `flash_attention` and cuDNN:

# %% tags=["hide-input"]
show_source(warpspec.ws_tiles, end="        k = k_desc")

# %% tags=["hide-input"]
show(tables.warpspec_table(wsp))

# %% tags=["hide-input"]
pairs_ws = query.warpspec_pairs(wsp)
ran = [p for p in pairs_ws if p["ws"]["status"] == "ok"]
failed = [p for p in pairs_ws if p["ws"]["status"] != "ok"]
same = [p for p in ran if p["same_code"]]
split = [p for p in ran if p["setmaxnreg"]]
gain = [p["ws"]["tflops"] / p["plain"]["tflops"] for p in same]
plain_vs_flash = [p["plain"]["tflops"] / p["flash"] for p in pairs_ws if p["plain"]["status"] == "ok"]
md(
    f"On triton {wsp['provenance']['triton']}, the flag changed nothing the compiler emits: in {len(same)} of "
    f"{len(ran)} cases that compiled, the warp-specialised kernel has the same registers, shared memory and "
    f"instruction counts as the plain one, and {'none' if not split else len(split)} of them contains a "
    "`setmaxnreg`, the instruction specialised warp groups use to hand registers to each other. "
    + (f"With 4 warps the compiler's warp-specialisation pass crashed ({len(failed)} of {len(pairs_ws)} pairs). "
       if failed else "")
    + (f"The measured differences between identical kernels, {min(gain):.2f}–{max(gain):.2f}×, are this "
       "benchmark's noise, not a speed-up. " if gain else "")
    + f"The descriptor kernel itself ran at {min(plain_vs_flash):.2f}–{max(plain_vs_flash):.2f}× `flash_attention`, "
    "whose pointer loads are already software-pipelined. So on this Triton, overlapping the "
    "softmax with the matmuls has to be written by hand, for instance in Gluon, Triton's lower-level "
    "language with explicit warp partitions: [post 5](../05_gluon_hopper/) does that (other attempts are listed in "
    "the [measurement notes](#measurement-notes)).")
appendix["Other warp-specialisation attempts"] = (
    "Recorded in the project's `PERF_NOTES.md`, not in this page's data: a 4-warp variant (the compiler's pass "
    "crashed), 256-row query tiles and a register cap (`maxnreg`) to make room for a split (the kernel spilled), and "
    "TMA loads without specialisation (in *What did not pay*).")

# %% [markdown]
# ## Where it stands: every backend, forward and backward
#
# The production suite times `flash_attention` against every backend of PyTorch's
# `scaled_dot_product_attention`, in the same run, at batch 4 and sequences from 1k to 16k.

# %% tags=["hide-input"]
if query.dispatch_note(prod):
    both = "dkdv" in query.gluon_backward_passes(prod)
    md("On a Hopper GPU, `flash_attention` at long sequences no longer runs this post's kernels but "
       "[post 5](../05_gluon_hopper/)'s warp-specialised ones, "
       + ("in the backward pass too" if both else "in the forward pass (the backward pass is this post's)")
       + "; the [measurement notes](#measurement-notes) give the rule it followed. Post 5 times this post's forward kernel beside its own "
       "in one run.")
show(figures.production_tflops([prod], "fwd"))

# %% tags=["hide-input"]
show(figures.production_tflops([prod], "bwd"))

# %% tags=["hide-input"]
md(f"Every shape's ratios, forward and backward, are in [post 3's tables]"
   f"(../03_flash_attention/#{tables.production_table_id(prod, 'float16', 'fwd')}).")

# %% tags=["hide-input"]
fc = query.ratio_summary(prod, "fwd", "sdpa-cudnn")
ff = query.ratio_summary(prod, "fwd", "sdpa-flash")
bc = query.ratio_summary(prod, "bwd", "sdpa-cudnn")
bf = query.ratio_summary(prod, "bwd", "sdpa-flash")
fc1 = query.ratio_summary(prod, "fwd", "sdpa-cudnn", min_n=1024)
fwd_cudnn = query.ratios_by_case(prod, "fwd", "sdpa-cudnn", min_n=4096).values()
bwd_cudnn = query.ratios_by_case(prod, "bwd", "sdpa-cudnn", min_n=4096).values()
one_k = [r for r in query.ok(prod["records"], provider="flash", direction="fwd", Nq=1024) if r.get("graph_p50")]
host = max(r["p50"] / r["graph_p50"] for r in one_k) if one_k else None
md(
    f"At $N \\ge 4096$ the forward pass runs at **{fc[0]:.2f}–{fc[1]:.2f}× cuDNN** and {ff[0]:.2f}–{ff[1]:.2f}× "
    f"FlashAttention-2. The backward pass runs at **{bc[0]:.2f}–{bc[1]:.2f}× cuDNN** and {bf[0]:.2f}–{bf[1]:.2f}× "
    f"FlashAttention-2. Against cuDNN the forward pass sits at a median {statistics.median(fwd_cudnn):.2f}× and "
    f"the backward pass at {statistics.median(bwd_cudnn):.2f}×. Including N=1k, the forward pass ranges over "
    f"{fc1[0]:.2f}–{fc1[1]:.2f}× cuDNN"
    + (f". At that length, timing the same call as a CUDA-graph replay is up to {host:.1f}× faster than timing "
       "it call by call: part of the gap is Python launch overhead, not the kernel." if host and host > 1.15 else
       f". At that length the launch overhead is now hidden: a CUDA-graph replay of the same call is at most "
       f"{host:.2f}× faster than calling it in a loop, so what remains is the kernel." if host else "."))

# %% [markdown]
# ## What did not pay, and what is next
#
# - **TMA loads.** The descriptor kernel above loads Q, K and V through Hopper's bulk copy
#   engine and did not beat the pointer loads, so the pointer kernel (`backend="pointer"`)
#   keeps pointers; on Hopper at long sequences `flash_attention` routes to post 5's Gluon
#   kernels, which load through TMA inside a warp-specialised pipeline. The TMA result
#   suggests the loads are not what holds the kernel back; which unit does is for a
#   profiler to say (not measured here).
# - **Automatic warp specialisation** did not specialise anything on this Triton (above).
#   Overlapping the softmax with the matmuls, as FlashAttention-3 does with ping-pong and
#   intra-warpgroup pipelining, is the most likely place for the remaining forward gap, by
#   the exponential's share of the time computed above; cuDNN's kernels are closed, so we
#   do not know how it gets its speed. [Post 5](../05_gluon_hopper/) writes it by hand.
# - **The backward pass** recomputes $P$ in both of its kernels and is limited by registers:
#   in a probe of its compiled candidates (recorded in `PERF_NOTES.md`, not in the data
#   behind this site), the widest dK/dV tile hit
#   the register limit and spilled. Smaller tiles there, and a fused single-kernel backward
#   with atomic dQ, are the next things to measure.
# - **Launch overhead.** After the first call for a given specialisation (dtypes, pointer
#   alignment, sizes), the launcher calls the compiled kernel directly, skipping both the
#   autotuner's bookkeeping and Triton's per-call argument binding. The GPU test suite
#   checks that this path returns exactly what Triton's own launch returns.
#
# ## Key takeaways

# %% tags=["hide-input"]
ranked = [name for *_, name in sorted(effects, reverse=True)]
small = [name for med, lo, hi, name in effects if max(abs(lo - 1), abs(hi - 1)) <= floor]
md(
    f"- Write the prediction down before you measure. Here {close} of the {len(resolvable)} predictions that "
    "could be told apart from noise landed within 10% of the measurement, and the misses taught the most: "
    "pipelining and bigger tiles paid less than expected, and the cheaper exponential paid more.\n"
    f"- Ranked by measured effect: `{ranked[0]}` first (it removes work), then `{ranked[1]}` and `{ranked[2]}`. "
    + (f"{', '.join(f'`{n}`' for n in small)} cannot be told apart from noise here. " if small else "")
    + "After skipping work and pipelining the loads, the steps that pay keep instructions out of the softmax, "
      "which sits between the matmuls and costs a large share of their time.")

# %% [markdown]
# - Read the compiler's report. It confirms each step did what it claims (fewer multiplies,
#   no spills, `wgmma` throughout) and shows which resources limit the next one.
# - Time variants against each other in interleaved rounds. Timed one after another,
#   identical code measured a few percent apart, enough to invent or hide a step.
# - Against cuDNN the gap is real and stated plainly above. Closing it most likely needs
#   the softmax to overlap the matmuls. Triton's automatic warp specialisation did not do
#   that here, so the next thing to try is hand-written warp specialisation.

# %% [markdown]
# ## Measurement notes
#
# Where the data on this page comes from, and which kernel `flash_attention` ran.

# %% tags=["hide-input"]
md(f"**Data.** The switches: {query.provenance_line(abl)}. The production suite: {query.provenance_line(prod)}. "
   f"Automatic warp specialisation: {query.provenance_line(wsp)}. The profile: {query.provenance_line(prof)}."
   + (" " + query.dispatch_note([prod]) if query.dispatch_note([prod]) else ""))
if appendix:
    md("\n\n".join(f"**{title}.** {text}" for title, text in appendix.items()))
