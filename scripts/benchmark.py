#!/usr/bin/env python3
"""Benchmark the kernels against PyTorch and rewrite the data behind the site's charts.

    python scripts/benchmark.py                       # all suites, on a CUDA GPU
    python scripts/benchmark.py --suite seed --quick  # a fast smoke pass
    python scripts/benchmark.py --interpret --out /tmp/bench   # tiny sizes, CPU, for CI
    python scripts/benchmark.py --suite production --shard 1/2 --out $OUT   # one device call each
    python scripts/benchmark.py --merge $OUT/production.h100.shard*of2.json  # -> docs/data/production.h100.json

Needs torch, triton and the standard library only (FlashAttention-4, if present, is loaded from
--fa4-site; see scripts/fa4_install.sh). Each suite's records are written to
<out>/<suite>.<gpu>.json at the end of that suite, via a temp file and a rename: an interrupted
or failed run leaves the existing files untouched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.metadata
import math
import os
import site
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a script: the packages sit at the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if "--interpret" in sys.argv[1:]:
        # Before triton is imported: triton 3.9 set up outside interpreter mode fails every kernel call
        # under it ("Cannot call @triton.jit'd outside of the scope of a kernel").
        os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

from perfdata import schema as benchdata  # noqa: E402
from perfdata import shards, traffic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GRAPH_BELOW_MS = 0.3  # below this median, also record CUDA-graph replay time (host overhead removed)
LOWP_TOL = {torch.float16: 5e-3, torch.bfloat16: 4e-2}  # relative to max|ref|: catches broken, not sloppy


@dataclass(frozen=True)
class Settings:
    """What a run was asked for; every function that depends on it takes it as an argument."""

    quick: bool = False  # fewer sizes and repetitions
    interpret: bool = False  # Triton's CPU interpreter, tiny sizes: tests the pipeline, not speed
    commit: str | None = None  # recorded instead of the repo's HEAD
    rounds: int = 3  # interleaved timing rounds per case (1 when quick or interpreted)
    shard: tuple[int, int] | None = None  # (K, N): run every N-th case from the K-th (perfdata.shards)
    fa4_site: str | None = None  # folder with FlashAttention-4 installed (pip --target), loaded by site.addsitedir

    @property
    def device(self) -> str:
        return "cpu" if self.interpret else "cuda"

    @property
    def timing_rounds(self) -> int:
        return 1 if self.quick or self.interpret else self.rounds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="seed,ladder,production,ablation,warpspec,hopper",
                   help="comma-separated: seed, ladder, production, ablation, warpspec, hopper (default: all)")
    p.add_argument("--quick", action="store_true", help="fewer sizes and repetitions: a smoke pass")
    p.add_argument("--out", default=None, help="output folder (default docs/data; required with --interpret)")
    p.add_argument("--interpret", action="store_true",
                   help="run tiny sizes through Triton's CPU interpreter (tests the pipeline, not speed)")
    p.add_argument("--commit", default=None, help="git commit to record (default: read from the repo)")
    p.add_argument("--fa4-site", default=os.environ.get("FA4_SITE"),
                   help="folder where scripts/fa4_install.sh put FlashAttention-4 (default: $FA4_SITE); "
                        "without it, fa4 records say why it did not run")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="run every N-th case of each suite from the K-th; writes <suite>.<gpu>.shardKofN.json")
    p.add_argument("--merge", nargs="+", default=None, metavar="FILE",
                   help="merge the shard files of one suite into <out>/<suite>.<gpu>.json (no GPU needed)")
    args = p.parse_args(argv)
    args.suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    try:
        args.shard = shards.parse(args.shard) if args.shard is not None else None
    except ValueError as exc:
        p.error(str(exc))
    return args


def _kernels():
    """The kernels package, imported on first use: importing it picks GPU or interpreter mode,
    which ``--interpret`` must decide first."""
    import kernels

    return kernels


# ----------------------------------------------------------------------------- providers

def _eager(q, k, v, causal, scale):
    s = (q @ k.transpose(-1, -2)) * scale
    if causal:
        n_q, n_k = s.shape[-2:]
        s = s.masked_fill(~torch.ones(n_q, n_k, dtype=torch.bool, device=s.device).tril(), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _sdpa(backend):
    def run(q, k, v, causal, scale):
        gqa = q.shape[-3] != k.shape[-3] if q.dim() >= 3 else False
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
        from torch.nn.attention import sdpa_kernel
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    return run


class Unsupported(ValueError):
    """A provider that cannot run here; `classify` records it as "unsupported" with this message."""


@dataclass(frozen=True)
class Fa4:
    """FlashAttention-4 as this run found it: its function, or why it is not available."""

    func: object = None  # flash_attn.cute.interface.flash_attn_func
    info: dict | None = None  # provenance["fa4"]

    def __call__(self, q, k, v, causal, scale):
        if self.func is None:
            raise Unsupported(f"FlashAttention-4 not available: {self.info['reason']}")
        if q.dim() != 4:
            raise Unsupported("the FlashAttention-4 provider takes (B, H, N, D) inputs")
        # q, k, v are (B, H, N, D) views of (B, N, H, D) memory (make_inputs, SEQUENCE_MAJOR), so these
        # transposes are contiguous views: no copy happens inside the timed call.
        out = self.func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=causal)
        out = out[0] if isinstance(out, tuple) else out  # 4.0.0b36 returns (out, lse)
        return out.transpose(1, 2)


@functools.cache
def load_fa4(site_dir: str | None, capability: tuple[int, int] | None) -> Fa4:
    """Import FlashAttention-4 from ``site_dir`` (via site.addsitedir, which runs the .pth file
    nvidia-cutlass-dsl needs) on a GPU of compute ``capability``; None means no GPU (interpreter)."""
    def unsupported(reason):
        return Fa4(info={"status": "unsupported", "reason": reason})

    if capability is None:
        return unsupported("no CUDA GPU (Triton interpreter run)")
    if capability[0] not in (9, 10):
        return unsupported(f"FlashAttention-4 is benchmarked on sm90/sm100 GPUs; this one is sm{capability[0]}"
                           f"{capability[1]}")
    if site_dir is not None:
        if not Path(site_dir).is_dir():
            return unsupported(f"--fa4-site {site_dir} is not a folder (run scripts/fa4_install.sh)")
        site.addsitedir(site_dir)
    try:
        from flash_attn.cute.interface import flash_attn_func
    except Exception as exc:  # noqa: BLE001 - any import failure means the provider is unavailable
        where = f"from {site_dir}" if site_dir else "without --fa4-site"
        first_line = (str(exc).splitlines() or [""])[0][:200]
        return unsupported(f"import {where} failed: {type(exc).__name__}: {first_line}")

    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return Fa4(flash_attn_func, {"status": "ok", "version": version("flash-attn-4"),
                                 "cutlass_dsl": version("nvidia-cutlass-dsl"), "site": site_dir or "sys.path"})


def fa4_for(settings: Settings) -> Fa4:
    capability = None if settings.interpret else tuple(torch.cuda.get_device_capability())
    return load_fa4(settings.fa4_site, capability)


def providers(settings: Settings):
    """name -> fn(q, k, v, causal, scale) -> output."""
    from torch.nn.attention import SDPBackend

    kernels = _kernels()
    from kernels import ablation
    from kernels.experiments import warpspec

    return {
        "basic": lambda q, k, v, c, s: kernels.basic_attention(q, k, v, causal=c, scale=s),
        "vectorized": lambda q, k, v, c, s: kernels.vectorized_attention(q, k, v, causal=c, scale=s),
        "flash": lambda q, k, v, c, s: kernels.flash_attention(q, k, v, causal=c, scale=s),
        "flash-tf32": lambda q, k, v, c, s: kernels.flash_attention(q, k, v, causal=c, scale=s, precision="tf32"),
        "eager": _eager,
        "sdpa": _sdpa(None),
        "sdpa-flash": _sdpa(SDPBackend.FLASH_ATTENTION),
        "sdpa-cudnn": _sdpa(SDPBackend.CUDNN_ATTENTION),
        "sdpa-efficient": _sdpa(SDPBackend.EFFICIENT_ATTENTION),
        "fa4": fa4_for(settings),
        **{r.name: (lambda q, k, v, c, s, step=r.name: ablation.ablation_attention(q, k, v, causal=c, scale=s,
                                                                                      step=step))
           for r in ablation.RUNGS},
        **{name: (lambda q, k, v, c, s, tile=tile, ws=ws: warpspec.warpspec_attention(
            q, k, v, causal=c, scale=s, tile=tile, warp_specialize=ws))
           for name, (tile, ws) in WARPSPEC_VARIANTS.items()},
        "flash-pointer": _flash_pointer,
        **{name: (lambda q, k, v, c, s, opts=opts: _gluon(q, k, v, c, s, **opts)[0])
           for name, opts in GLUON_VARIANTS.items()},
    }


def _flash_pointer(q, k, v, causal, scale):
    """Post 3's pointer kernels, forward and backward, at every size (posts 3 and 4 quote them;
    post 5's baseline)."""
    return _kernels().flash_attention(q, k, v, causal=causal, scale=scale, backend="pointer")


# Which of our kernels a provider runs, for the providers the router does not route: one kernel each.
FIXED_KERNELS = {"basic": "basic", "vectorized": "vectorized"}
ROUTED = {"flash": "auto", "flash-tf32": "auto", "flash-pointer": "pointer"}  # provider -> backend


def kernel_record(name: str, q, k, v, causal: bool, scale: float, direction: str) -> dict | None:
    """The record's "kernel" field: which of our kernels ran each pass of provider ``name`` (from
    ``kernels.plan`` for the routed providers), or None for a peer (SDPA, FA4, eager)."""
    from kernels import ablation

    if name in ROUTED:
        plan = _kernels().plan(q, k, v, causal=causal, scale=scale, backward=direction == "bwd", backend=ROUTED[name])
        record = plan.record()
        return {key: record[key] for key in ("forward", "dkdv", "dq", "why", "fallback") if record[key] is not None}
    if name in FIXED_KERNELS or name in ablation.RUNG_NAMES or name in WARPSPEC_VARIANTS or name in GLUON_VARIANTS:
        kind = FIXED_KERNELS.get(name) or ("ablation" if name in ablation.RUNG_NAMES else
                                           "warpspec" if name in WARPSPEC_VARIANTS else "gluon")
        return {"forward": kind, **({"dkdv": kind, "dq": kind} if direction == "bwd" else {})}
    return None


def _gluon(q, k, v, causal, scale, **opts):
    """The Gluon Hopper forward with post 5's switches: (output, compiled kernel)."""
    from kernels.gluon import forward

    o4, _, compiled = forward.hopper_forward(q, k, v, causal, scale, **opts)
    return o4, compiled


# Post 5: the Gluon kernel's schedule and its other switches, one at a time from the default.
GLUON_VARIANTS = {
    "gluon-serial": {"schedule": "serial"},
    "gluon-pipelined": {"schedule": "pipelined"},
    "gluon-pingpong": {"schedule": "pingpong"},
    "gluon-in-order": {"schedule": "serial", "lpt": False},
    "gluon-3-stages": {"schedule": "serial", "stages": 3},
}


def reporting_launchers():
    """name -> fn(q, k, v, case, scale) -> (output, record fields): for the providers whose record
    carries the compiler's report of the kernel that ran (registers, spills, shared memory, PTX
    counts) and, for the ablation rungs, the prediction. Used for the first (checked) call only."""
    from kernels import ablation, vectorized
    from kernels.experiments import warpspec

    def rung(name):
        def run(q, k, v, c, s):
            out, compiled, config = ablation.ablation_launch(q, k, v, causal=c["causal"], scale=s, step=name)
            index = ablation.RUNG_NAMES.index(name)
            r = ablation.RUNGS[index]
            return out, {"step": index, "label": r.label, "why": r.why,
                         "predicted_speedup": r.predict_causal if c["causal"] else r.predict_full,
                         "config": {key: config[key] for key in sorted(config)} if config else None,
                         "compiler": ablation.compiler_report(compiled)}
        return run

    def desc(tile, ws):
        def run(q, k, v, c, s):
            out, compiled = warpspec.warpspec_launch(q, k, v, causal=c["causal"], scale=s, tile=tile, warp_specialize=ws)
            return out, {"config": dict(zip(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"), tile)),
                         "warp_specialize": ws, "compiler": ablation.compiler_report(compiled)}
        return run

    def vec(q, k, v, c, s):
        out, compiled = vectorized.vectorized_launch(q, k, v, causal=c["causal"], scale=s)
        return out, {"compiler": ablation.compiler_report(compiled)}

    def gluon(opts):
        def run(q, k, v, c, s):
            out, compiled = _gluon(q, k, v, c["causal"], s, **opts)
            return out, {"switches": dict(opts), "compiler": ablation.compiler_report(compiled)}
        return run

    return {"vectorized": vec, **{r.name: rung(r.name) for r in ablation.RUNGS},
            **{name: desc(tile, ws) for name, (tile, ws) in WARPSPEC_VARIANTS.items()},
            **{name: gluon(opts) for name, opts in GLUON_VARIANTS.items()}}


# Post 4's warp-specialisation experiment: tile (BLOCK_M, BLOCK_N, warps, stages), loop flag.
WARPSPEC_VARIANTS = {
    f"desc-{bm}x{bn}-w{w}-{'ws' if ws else 'plain'}": ((bm, bn, w, st), ws)
    for bm, bn, w, st in ((128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3))
    for ws in (False, True)
}


# ----------------------------------------------------------------------------- cases

DT = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def seed_cases(quick, interp):
    sizes = [(128, 64), (256, 128), (512, 128), (1024, 256), (2048, 128), (4096, 128)]
    if quick:
        sizes = sizes[:3]
    if interp:
        sizes = [(16, 16)]
    provs = ["basic", "vectorized", "flash", "flash-tf32", "eager", "sdpa"]
    if interp:
        provs = ["basic", "vectorized", "flash", "eager", "sdpa"]
    for n, d in sizes:
        yield dict(B=1, H=1, Hkv=1, Nq=n, Nk=n, D=d, dtype="float32", causal=False, providers=provs, bwd=False)


def ladder_cases(quick, interp):
    ns = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    if quick:
        ns = [128, 512, 2048]
    if interp:
        ns = [8, 16, 32]
    for n in ns:
        provs = ["basic", "vectorized", "flash", "eager", "sdpa"]
        if interp and n > 16:
            provs = ["vectorized", "flash", "eager", "sdpa"]  # basic is ~2 ms per key interpreted
        if n > 8192 and not interp:
            provs = ["vectorized", "flash", "eager", "sdpa"]  # basic walks 16k keys 3x per query: minutes
        yield dict(B=1, H=1, Hkv=1, Nq=n, Nk=n, D=64, dtype="float32", causal=False, providers=provs, bwd=False)


def production_cases(quick, interp):
    ns = [1024, 2048, 4096, 8192, 16384]
    heads = [(32, 64), (16, 128)]
    dtypes = ["float16", "bfloat16"]
    # flash-pointer: post 3's kernels at every size, which posts 3 and 4 quote (flash is the router).
    provs = ["flash", "flash-pointer", "sdpa-flash", "sdpa-cudnn", "fa4", "sdpa-efficient", "eager"]
    B = 4
    if quick:
        ns, dtypes = [1024, 4096], ["float16"]
    if interp:
        ns, heads, dtypes, provs, B = [32], [(2, 16)], ["float16"], ["flash", "eager", "sdpa"], 1
    for dtype in dtypes:
        for h, d in heads:
            for causal in (False, True):
                for n in ns:
                    yield dict(B=B, H=h, Hkv=h, Nq=n, Nk=n, D=d, dtype=dtype, causal=causal, providers=provs, bwd=True)
    if not interp:
        # Grouped-query attention: 32 query heads share 8 k/v heads.
        for causal in (False, True):
            for n in ([4096] if quick else [4096, 16384]):
                yield dict(B=B, H=32, Hkv=8, Nq=n, Nk=n, D=128, dtype="float16", causal=causal,
                           providers=["flash", "sdpa", "fa4"], bwd=True)
    yield from decode_cases(quick, interp)


def decode_cases(quick, interp):
    """Decoding: one new query per sequence against a long cache of keys, forward only, grouped
    (8 k/v heads) and not. Not causal: with a single query, the top-left causal mask of ours and of
    SDPA's is_causal would hide every key but the first, while a decoder's query sees the whole cache."""
    provs = ["flash", "sdpa-flash", "sdpa-cudnn", "fa4", "sdpa"]
    nks, dtypes, B, H, D = [16384, 65536], ["float16", "bfloat16"], 4, 32, 128
    if quick:
        nks, dtypes = [16384], ["float16"]
    if interp:
        nks, dtypes, B, H, D, provs = [64], ["float16"], 1, 4, 16, ["flash", "sdpa"]
    for dtype in dtypes:
        for hkv in (H // 4, H):
            for nk in nks:
                yield dict(B=B, H=H, Hkv=hkv, Nq=1, Nk=nk, D=D, dtype=dtype, causal=False, providers=provs, bwd=False)


def ablation_cases(quick, interp):
    """Post 4: every rung of kernels.ablation on long sequences, beside cuDNN and FA2."""
    from kernels import ablation

    shapes = [(16, 128), (32, 64)]
    n, B, dtype = 8192, 4, "float16"
    provs = [*ablation.RUNG_NAMES, "sdpa-cudnn", "fa4", "sdpa-flash"]
    if quick:
        shapes = shapes[:1]
    if interp:
        shapes, n, B, dtype, provs = [(2, 16)], 40, 1, "float32", list(ablation.RUNG_NAMES)
    for h, d in shapes:
        for causal in (False, True):
            yield dict(B=B, H=h, Hkv=h, Nq=n, Nk=n, D=d, dtype=dtype, causal=causal, providers=provs, bwd=False)


def warpspec_cases(quick, interp):
    """Post 4: Triton's automatic warp specialisation, on and off, beside flash and cuDNN (Hopper only)."""
    if interp or torch.cuda.get_device_capability()[0] < 9:
        return  # tensor descriptors need a Hopper-class GPU: nothing to run here
    provs = ["flash", "sdpa-cudnn", "fa4", *WARPSPEC_VARIANTS]
    for h, d in [(16, 128), (32, 64)][:1 if quick else 2]:
        for causal in (False, True):
            yield dict(B=4, H=h, Hkv=h, Nq=8192, Nk=8192, D=d, dtype="float16", causal=causal, providers=provs,
                       bwd=False)


def hopper_cases(quick, interp):
    """Post 5: the Gluon kernel's switches beside the pointer kernel, cuDNN and FA4 (sm90 only)."""
    if interp or torch.cuda.get_device_capability() != (9, 0):
        return  # the Gluon kernel is Hopper-only: nothing to run here
    provs = [*GLUON_VARIANTS, "flash-pointer", "sdpa-cudnn", "fa4"]
    for h, d in [(16, 128), (32, 64)][:1 if quick else 2]:
        for causal in (False, True):
            yield dict(B=4, H=h, Hkv=h, Nq=8192, Nk=8192, D=d, dtype="float16", causal=causal, providers=provs,
                       bwd=False)


# The providers the noise repeat times again: ours and the peers the posts compare them with.
NOISE_PROVIDERS = ("flash", "flash-pointer", "sdpa-cudnn", "fa4", "sdpa-flash")
NOISE_SHARE = 4  # the repeat takes every NOISE_SHARE-th production case (short and long, both directions)


def noise_cases(quick, interp):
    """The run-to-run band: a subset of the production cases timed again, on the same GPU after the
    production suite, by the providers the posts compare. ``blog.noise`` pairs its records with
    the production run's by case name after the suite ("noise/float16/..." with "production/float16/...")."""
    subset = shards.select([c for c in production_cases(quick, interp) if c["Nq"] == c["Nk"]], 1, NOISE_SHARE)
    for c in subset:
        provs = [p for p in c["providers"] if p in NOISE_PROVIDERS]
        yield {**c, "providers": provs or c["providers"]}


SUITE_CASES = {"seed": seed_cases, "ladder": ladder_cases, "production": production_cases,
               "ablation": ablation_cases, "warpspec": warpspec_cases, "hopper": hopper_cases,
               "noise": noise_cases}


# ----------------------------------------------------------------------------- measuring

# Providers that take (B, N, H, D) tensors. Their inputs are made in that memory layout and handed
# over as (B, H, N, D) views like everyone else's, so turning them back costs no copy in the timed call.
SEQUENCE_MAJOR = {"fa4"}


def make_inputs(c, device, requires_grad=False, sequence_major=False):
    """q, k, v of shape (B, H, N, D) (or (N, D) for one head); with ``sequence_major``, stored as (B, N, H, D)."""
    dtype = DT[c["dtype"]]
    batched = c["B"] * c["H"] > 1

    def make(n, heads):
        # Fresh random inputs, never zeros: zeros hide bugs and can run faster.
        if batched and sequence_major:
            return torch.randn(c["B"], n, heads, c["D"], device=device, dtype=dtype).transpose(1, 2)
        return torch.randn(*((c["B"], heads) if batched else ()), n, c["D"], device=device, dtype=dtype)

    return [t.requires_grad_(requires_grad) for t in (make(c["Nq"], c["H"]), make(c["Nk"], c["Hkv"]),
                                                      make(c["Nk"], c["Hkv"]))]


def first_slice(t, heads=1):
    """Batch 0, the first ``heads`` heads: (heads, N, D); a 2-D input as it is."""
    if t.dim() == 2:
        return t
    return t.reshape(-1, *t.shape[-3:])[0, :heads] if t.dim() > 3 else t[:heads]


def check(c, out, q, k, v, scale, grads=None, do=None, rel_tol=None):
    """Max abs error of batch 0 against the float64 reference; grads too if given.

    With grouped-query attention, k/v head 0 serves query heads 0..group-1, and its
    dK, dV sum over all of them: those query heads are checked together.
    """
    group = c["H"] // c["Hkv"]
    qs, ks, vs = (first_slice(t, n).detach().double().requires_grad_(grads is not None)
                  for t, n in ((q, group), (k, 1), (v, 1)))
    ref = _kernels().reference_attention(qs, ks, vs, causal=c["causal"], scale=scale)
    first_slice_o = lambda t: first_slice(t, group)  # noqa: E731
    pairs = [(first_slice_o(out), ref)]
    if grads is not None:
        ref.backward(first_slice_o(do).double())
        pairs += [(first_slice(g, n), r.grad) for g, r, n in zip(grads, (qs, ks, vs), (group, 1, 1))]
    worst_err, worst_tol = 0.0, 1.0
    for got, want in pairs:
        tol = (rel_tol or {torch.float32: 1e-4}.get(out.dtype, LOWP_TOL.get(out.dtype, 1e-4)))
        tol *= max(1.0, want.abs().max().item())
        err = (got.detach().double() - want).abs().max().item()
        err = err if math.isfinite(err) else float("inf")  # NaN never passes
        if err / tol >= worst_err / worst_tol:
            worst_err, worst_tol = err, tol
    return worst_err, worst_tol


# Providers whose forward call can be captured in a CUDA graph. SDPA's mem-efficient kernel
# advances the Philox RNG offset even without dropout; capturing it breaks the CUDA RNG
# for the rest of the process, so it (and SDPA's default dispatch, which may pick it) is
# timed without graphs. FlashAttention-4 is left out too: its capture has not been checked, and a
# failed capture can leave the CUDA context unusable for the rest of the run.
GRAPH_SAFE = {"basic", "vectorized", "flash", "flash-tf32", "flash-pointer", "eager", "sdpa-flash", "sdpa-cudnn"}
MAX_ERROR_SHARE = 0.1  # a suite with more unexpected errors than this is not written


# Every provider of a case is timed in Settings.rounds interleaved rounds (the order rotated each
# round) and its samples pooled. On the H100 box the same kernel measured 443 and 488 TFLOP/s in
# two back-to-back do_bench calls (clock and power swings): timed one after another, providers
# that happen to run in a slow spell look slower than they are.


def sample(fn, settings: Settings, first: bool):
    """Times of one batch of calls to ``fn``, in ms."""
    if settings.interpret:
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return ts
    return triton.testing.do_bench(fn, warmup=25 if first else 10, rep=30 if settings.quick else 40,
                                   return_mode="all")


def time_rounds(calls, settings: Settings):
    """{index: (samples in ms, [median of each round])} for ``calls``, a list of (index, fn)."""
    out = {i: ([], []) for i, _ in calls}
    for r in range(settings.timing_rounds):
        shift = r % len(calls)
        for i, fn in calls[shift:] + calls[:shift]:
            ts = sample(fn, settings, first=r == 0)
            out[i][0].extend(ts)
            out[i][1].append(statistics.median(ts))
    return out


def quantiles(samples):
    """(p20, p50, p80) of the samples, linearly interpolated."""
    # statistics.quantiles needs two points; one sample is its own p20, p50 and p80.
    deciles = statistics.quantiles(samples if len(samples) > 1 else samples * 2, n=10, method="inclusive")
    return deciles[1], deciles[4], deciles[7]


def graph_time(fn, quick):
    """Median of CUDA-graph replays (host overhead removed), or None if it cannot be captured."""
    try:
        return triton.testing.do_bench_cudagraph(fn, rep=30 if quick else 100, return_mode="median")
    except Exception:  # noqa: BLE001 - some providers cannot be captured; the plain time stands
        return None


def classify(exc):
    msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in msg.lower():
        return "oom", msg
    if isinstance(exc, ValueError) or "No available kernel" in msg or "not supported" in msg.lower():
        return "unsupported", msg
    name = type(exc).__module__ + "." + type(exc).__name__
    if "triton" in name and ("Compil" in name or "OutOfResources" in name):
        return "compile-error", msg
    if "PassManager::run failed" in msg:  # an MLIR pass of Triton's compiler crashed
        return "compile-error", msg
    return "error", msg


def directions(c):
    return ("fwd", "bwd") if c["bwd"] else ("fwd",)


def case_name(suite, c, direction):
    tag = f"{c['dtype']}/B{c['B']}H{c['H']}" + (f"kv{c['Hkv']}" if c["Hkv"] != c["H"] else "")
    return f"{suite}/{tag}/N{c['Nq']}x{c['Nk']}/D{c['D']}/{'causal' if c['causal'] else 'full'}/{direction}"


def prepare(suite, c, name, fn, direction, settings: Settings, launchers: dict):
    """Run provider ``name`` once and check it against float64: (record, timed call or None).
    ``launchers`` (from `reporting_launchers`) make that first forward call for providers whose
    record carries a compiler report."""
    shape = {k: c[k] for k in benchdata.SHAPE_KEYS}
    rec = dict(suite=suite, case=case_name(suite, c, direction), provider=name, direction=direction, shape=shape,
               dtype=c["dtype"], causal=c["causal"], unit="ms", status="ok", reason=None, p20=None, p50=None,
               p80=None, graph_p50=None, tflops=None, max_err=None, tol=None)
    scale = 1.0 / math.sqrt(c["D"])
    try:
        if (name == "eager" and not settings.interpret
                and 3 * c["B"] * c["H"] * c["Nq"] * c["Nk"] * torch.finfo(DT[c["dtype"]]).bits // 8
                > 0.6 * torch.cuda.mem_get_info()[0]):
            raise torch.cuda.OutOfMemoryError("score matrices would not fit in free GPU memory (estimated)")
        if direction == "fwd":
            q, k, v = make_inputs(c, settings.device, sequence_major=name in SEQUENCE_MAJOR)
            kernel = kernel_record(name, q, k, v, c["causal"], scale, direction)
            if kernel:
                rec["kernel"] = kernel
            if name in launchers:
                out, extras = launchers[name](q, k, v, c, scale)
                rec.update(extras)
            else:
                out = fn(q, k, v, c["causal"], scale)
            # TF32 keeps 10 mantissa bits: ~1e-3 relative error is its normal, not a bug.
            err, tol = check(c, out, q, k, v, scale, rel_tol=3e-3 if name.endswith("tf32") else None)
            del out
            call = lambda: fn(q, k, v, c["causal"], scale)  # noqa: E731
        else:
            q, k, v = make_inputs(c, settings.device, requires_grad=True, sequence_major=name in SEQUENCE_MAJOR)
            kernel = kernel_record(name, q, k, v, c["causal"], scale, direction)
            if kernel:
                rec["kernel"] = kernel
            out = fn(q, k, v, c["causal"], scale)
            do = torch.randn_like(out)
            out.backward(do, retain_graph=True)
            err, tol = check(c, out, q, k, v, scale, grads=(q.grad, k.grad, v.grad), do=do)

            def call():
                for t in (q, k, v):
                    t.grad = None
                out.backward(do, retain_graph=True)
        rec["max_err"], rec["tol"] = err, tol
        if not err <= tol:
            rec["status"], rec["reason"] = "wrong", f"max abs error {err:.3g} > tolerance {tol:.3g}"
            return rec, None
        return rec, call
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and the run goes on
        rec["status"], rec["reason"] = classify(exc)
        return rec, None


def run_group(suite, c, direction, provs, launchers, settings: Settings):
    """Every provider of case ``c`` in one ``direction``: checked, then timed in interleaved rounds."""
    prepared = [prepare(suite, c, name, provs[name], direction, settings, launchers) for name in c["providers"]]
    calls = [(i, call) for i, (_, call) in enumerate(prepared) if call is not None]
    try:
        timed = time_rounds(calls, settings) if calls else {}
    except Exception:  # noqa: BLE001 - fall back to timing one provider at a time
        timed = {}
        for i, call in calls:
            try:
                timed.update(time_rounds([(i, call)], settings))
            except Exception as exc:  # noqa: BLE001
                prepared[i][0]["status"], prepared[i][0]["reason"] = classify(exc)
    records = []
    for i, (rec, call) in enumerate(prepared):
        if i in timed:
            samples, round_p50 = timed[i]
            rec["p20"], rec["p50"], rec["p80"] = quantiles(samples)
            rec["round_p50"] = round_p50
            if (not settings.interpret and direction == "fwd" and rec["provider"] in GRAPH_SAFE
                    and rec["p50"] < GRAPH_BELOW_MS):
                # Launch overhead is a large share here: also time CUDA-graph replays, which remove it.
                rec["graph_p50"] = graph_time(prepared[i][1], settings.quick)
            flops = traffic.attention_flops(c["Nq"], c["Nk"], c["D"], heads=c["B"] * c["H"], causal=c["causal"],
                                            backward=direction == "bwd")
            rec["tflops"] = flops / (rec["p50"] * 1e-3) / 1e12
        records.append(rec)
    del prepared, calls
    if settings.device == "cuda":
        torch.cuda.empty_cache()
    return records


# ----------------------------------------------------------------------------- provenance

def git_commit(commit: str | None = None):
    if commit:
        return commit
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def measure_ceilings(interpret: bool):
    if interpret:
        return {"copy_gbps": None, "matmul_fp16_tflops": None, "matmul_fp32_tflops": None}
    x = torch.empty(1 << 28, dtype=torch.float32, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=25, rep=100, return_mode="median")
    copy = 2 * x.numel() * 4 / (ms * 1e-3) / 1e9  # bytes read + written
    del x, y
    out = {"copy_gbps": copy}
    for key, dtype, n in (("matmul_fp16_tflops", torch.float16, 8192), ("matmul_fp32_tflops", torch.float32, 4096)):
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        ms = triton.testing.do_bench(lambda: a @ b, warmup=25, rep=100, return_mode="median")
        out[key] = 2 * n**3 / (ms * 1e-3) / 1e12
    torch.cuda.empty_cache()
    return out


def provenance(settings: Settings):
    if settings.interpret:
        gpu, sms, driver, cuda, uuid = "CPU (Triton interpreter)", 0, "none", "none", "none"
    else:
        props = torch.cuda.get_device_properties(0)
        gpu, sms, cuda = props.name, props.multi_processor_count, torch.version.cuda or "unknown"
        uuid = str(getattr(props, "uuid", "") or "unknown")
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            driver = "unknown"
    return {
        # The card itself: shards merge only when they ran on one card (perfdata.shards), so one
        # chart's data comes from one GPU.
        "gpu": gpu, "gpu_uuid": uuid, "sm_count": sms, "driver": driver, "cuda": cuda, "torch": torch.__version__,
        "triton": triton.__version__, "git_commit": git_commit(settings.commit),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": _kernels().mode_description(),
        "fp32_matmul": "ieee (TF32 off)" if not torch.backends.cuda.matmul.allow_tf32 else "tf32",
        "timing": "interpreter wall clock, 3 runs" if settings.interpret else
                  f"triton.testing.do_bench, {settings.timing_rounds} interleaved rounds per case, samples pooled: "
                  "median (p20/p80); warm-up and autotuning outside the timed region",
        "rounds": settings.timing_rounds,
        "quick": settings.quick,
        "ceilings": measure_ceilings(settings.interpret),
        "fa4": fa4_for(settings).info,
        "flash_dispatch": _kernels().attention.RULE,  # the rule; each record's "kernel" says what ran
    }


# ----------------------------------------------------------------------------- main

def run_suite(suite: str, settings: Settings, out_dir: Path, prov: dict) -> Path | None:
    """Run one suite and write ``<out_dir>/<suite>.<gpu>.json`` atomically (with ``settings.shard``,
    only that shard's cases, to ``<suite>.<gpu>.shardKofN.json``); returns its path, or None when the
    suite has nothing to run here. Raises RuntimeError, leaving any existing file
    untouched, when more than MAX_ERROR_SHARE of its records failed unexpectedly."""
    gpu = "cpu-interpreter" if settings.interpret else benchdata.slug(prov["gpu"])
    cases = list(SUITE_CASES[suite](settings.quick, settings.interpret))
    if not cases:
        print(f"# {suite}: nothing to run on this machine; {suite}.*.json left as it was", flush=True)
        return None
    path = out_dir / f"{suite}.{gpu}.json"
    if settings.shard is not None:
        every = [case_name(suite, c, direction) for c in cases for direction in directions(c)]
        mine = shards.select(cases, *settings.shard)
        if not mine:
            raise RuntimeError(f"shard {settings.shard[0]}/{settings.shard[1]} of {suite} holds no case (the suite "
                               f"has {len(cases)}); use fewer shards")
        cases = mine
        prov = {**prov, "shard": {"index": settings.shard[0], "count": settings.shard[1], "cases": every}}
        path = out_dir / shards.file_name(suite, gpu, *settings.shard)
    groups = [(c, direction) for c in cases for direction in directions(c)]
    provs, launchers = providers(settings), reporting_launchers()
    records, t0 = [], time.time()
    for i, (c, direction) in enumerate(groups, 1):
        for rec in run_group(suite, c, direction, provs, launchers, settings):
            records.append(rec)
            eta = (time.time() - t0) / i * (len(groups) - i)
            shown = f"{rec['p50']:.4f} ms" + (f" {rec['tflops']:.1f} TFLOP/s" if rec["tflops"] and rec["tflops"] > 0.5 else "") \
                if rec["status"] == "ok" else f"{rec['status']}: {rec['reason'][:70]}"
            print(f"[{suite} {i}/{len(groups)} eta {eta:4.0f}s] {rec['case']} {rec['provider']}: {shown}", flush=True)
    errors = sum(r["status"] == "error" for r in records)
    if errors > MAX_ERROR_SHARE * len(records):
        raise RuntimeError(f"{errors} of {len(records)} {suite} cases failed unexpectedly; {path} was left as it "
                           "was. First: " + next(r["reason"] for r in records if r["status"] == "error"))
    doc = {"schema": benchdata.SCHEMA_VERSION, "suite": suite, "provenance": prov, "records": records}
    benchdata.write_atomic(path, doc)
    print(f"# wrote {path} ({len(records)} records, {time.time() - t0:.0f}s)", flush=True)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        try:
            path = shards.merge_files(args.merge, Path(args.out or ROOT / "docs" / "data"))
        except (ValueError, benchdata.BenchDataError) as exc:
            sys.exit(f"benchmark.py: merge refused, nothing written: {exc}")
        print(f"# merged {len(args.merge)} shards into {path}", flush=True)
        return 0
    settings = Settings(quick=args.quick, interpret=args.interpret, commit=args.commit, shard=args.shard,
                        fa4_site=args.fa4_site)
    if args.interpret:
        if "kernels" in sys.modules and not sys.modules["kernels"].INTERPRET:
            sys.exit("benchmark.py: --interpret after kernels was imported in GPU mode; run it in a fresh process.")
        os.environ["TRITON_INTERPRET"] = "1"  # before kernels is imported: @triton.jit reads it then
        if args.out is None:
            sys.exit("benchmark.py: --interpret needs --out: interpreter timings must never replace docs/data.")
    elif not torch.cuda.is_available():
        sys.exit("benchmark.py: no CUDA GPU found. Run it on a GPU box, or pass --interpret "
                 "(with --out) to exercise the pipeline on the CPU at tiny sizes.")
    unknown = [s for s in args.suites if s not in SUITE_CASES]
    if unknown:
        sys.exit(f"benchmark.py: unknown suite(s) {unknown}; choose from {list(SUITE_CASES)}")
    out_dir = Path(args.out or ROOT / "docs" / "data")
    prov = provenance(settings)
    print(f"# {prov['gpu']} | torch {prov['torch']} | triton {prov['triton']} | ceilings {prov['ceilings']} | "
          f"fa4 {prov['fa4']}", flush=True)
    for suite in args.suites:
        try:
            run_suite(suite, settings, out_dir, prov)
        except RuntimeError as exc:
            sys.exit(f"benchmark.py: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
