#!/usr/bin/env python3
"""Benchmark post 6's attention variants against their peers and write docs/data/variants.json.

    python scripts/bench_variants.py                      # every case, on one CUDA GPU
    python scripts/bench_variants.py --quick              # a smoke pass: short sequences, D 64, fp16
    python scripts/bench_variants.py --only window,documents --out /tmp/v.json   # a part of the run
    python scripts/bench_variants.py --merge a.json b.json   # parts of one GPU's run -> docs/data/variants.json
    python scripts/bench_variants.py --interpret --out /tmp/v.json   # tiny sizes on the CPU: the pipeline only

Variants and shapes (issue 24): plain causal (the yardstick of the window target), a causal sliding
window of 4096 at N = 16k, soft-capping, ALiBi and sinks (causal, N = 8k), packed documents of
mixed lengths (128 to 8k) filling rows of 16k, and a prefix-LM block mask at N = 16k; B x N = 32k
tokens, 16 heads, D = 64 and 128, fp16 and bf16, forward and backward.

Providers: ours (``kernels``), FlexAttention (``torch.compile(flex_attention)`` with the equivalent
score_mod / BlockMask), SDPA with a dense mask (boolean, or an additive float bias for ALiBi),
eager PyTorch, and FlashAttention-4 where it is importable (``--fa4-site``, as scripts/benchmark.py)
and takes the variant's arguments. For packed documents, also ours with one call per document
(the sum of the per-document medians) and ours on the documents padded to the longest.

FLOPs count only the (query, key) pairs the mask keeps: forward 4 * D per kept pair and head, backward
10 * D (2.5x the forward, FlashAttention's convention), whatever the provider computes.

Every provider's forward output is checked against the float64 reference on batch 0, head 0 before
it is timed. A wrong result, or any failure other than a provider that lacks the variant
("unsupported") or a score matrix that does not fit ("oom", eager and dense SDPA only), stops
the run and writes nothing; the file is written via a temp file and a rename once every case has run.
Importing this module does nothing; ``main()`` parses the arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("causal", "window", "softcap", "alibi", "sinks", "documents", "prefix_lm")
SCHEMA = "variants/1"
SOFTCAP = 50.0  # Gemma 2's attention soft cap
WINDOW = 4096
FLOPS_CONVENTION = ("kept (query, key) pairs only, summed over batch and heads: forward 4*D per pair, "
                    "backward 10*D per pair (2.5x the forward, FlashAttention's convention)")
LOWP_TOL = {"float16": 5e-3, "bfloat16": 4e-2, "float32": 1e-4}  # max abs error / max |reference|


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short sequences, D 64, fp16, one round: a smoke pass")
    p.add_argument("--interpret", action="store_true", help="tiny sizes through Triton's CPU interpreter "
                   "(tests the pipeline, not speed; needs --out)")
    p.add_argument("--only", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--dtypes", default="float16,bfloat16", help="comma-separated: float16, bfloat16")
    p.add_argument("--head-dims", default="64,128", help="comma-separated head dims")
    p.add_argument("--out", default=None, help="output file (default docs/data/variants.json)")
    p.add_argument("--commit", default=None, help="git commit to record (default: the repo's HEAD)")
    p.add_argument("--fa4-site", default=os.environ.get("FA4_SITE"), help="folder with FlashAttention-4 "
                   "(scripts/fa4_install.sh); default $FA4_SITE")
    p.add_argument("--merge", nargs="+", default=None, metavar="FILE",
                   help="merge files of one GPU's partial runs into --out (no GPU needed)")
    args = p.parse_args(argv)
    args.only = [v.strip() for v in args.only.split(",") if v.strip()]
    unknown = sorted(set(args.only) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if set(args.dtypes) - {"float16", "bfloat16"}:
        p.error("--dtypes takes float16 and/or bfloat16")
    args.head_dims = [int(d) for d in args.head_dims.split(",") if d.strip()]
    return args


# ----------------------------------------------------------------------------- cases


def document_lengths(total: int, lo: int, hi: int, seed: int) -> list[int]:
    """Lengths drawn log-uniformly in [lo, hi] until they fill ``total`` (the last one cut to fit)."""
    rng = random.Random(seed)
    lens = []
    while sum(lens) < total:
        n = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        lens.append(min(n, total - sum(lens)))
    return lens


def cases(args) -> list[dict]:
    """Every (variant, dtype, D) case of this run, with its sizes and parameters."""
    if args.interpret:
        dtypes, dims, heads, long, mid, win, docs = ["float32"], [16], 2, 128, 64, 32, (16, 64)
        tokens = 128
    elif args.quick:
        dtypes, dims, heads, long, mid, win, docs = ["float16"], [64], 16, 4096, 4096, 1024, (128, 2048)
        tokens = 8192
    else:
        dtypes, dims, heads, long, mid, win, docs = args.dtypes, args.head_dims, 16, 16384, 8192, WINDOW, (128, 8192)
        tokens = 32768
    out = []
    for variant in args.only:
        n = long if variant in ("causal", "window", "documents", "prefix_lm") else mid
        b = max(1, tokens // n)
        for dtype in dtypes:
            for d in dims:
                c = dict(variant=variant, dtype=dtype, B=b, H=heads, N=n, D=d)
                if variant == "window":
                    c["window"] = win
                elif variant == "softcap":
                    c["softcap"] = SOFTCAP
                elif variant == "documents":
                    c["doc_lengths"] = [document_lengths(n, *docs, seed=row) for row in range(b)]
                elif variant == "prefix_lm":
                    c["prefix"] = [max(1, n // 4) if row % 2 == 0 else max(1, n // 16) for row in range(b)]
                out.append(c)
    return out


def case_name(c: dict, direction: str) -> str:
    return f"{c['variant']}/{c['dtype']}/B{c['B']}H{c['H']}/N{c['N']}/D{c['D']}/{direction}"


# ----------------------------------------------------------------------------- per-case tensors


class Unsupported(ValueError):
    """This provider has no equivalent of the variant: recorded as "unsupported" with the reason."""


class Case:
    """Inputs, masks and parameters of one case, built once and shared by every provider."""

    def __init__(self, c: dict, device: str, requires_grad: bool):
        import torch

        self.c, self.device = c, device
        dt = getattr(torch, c["dtype"])
        B, H, N, D = c["B"], c["H"], c["N"], c["D"]
        self.scale = 1.0 / math.sqrt(D)
        # Stored (B, N, H, D), handed out as (B, H, N, D) views: FlashAttention-4 and the packed
        # (total, H, D) layout read the same memory without a copy.
        self.mem = [torch.randn(B, N, H, D, device=device, dtype=dt) for _ in range(3)]
        for t in self.mem:
            t.requires_grad_(requires_grad)
        self.q, self.k, self.v = (t.transpose(1, 2) for t in self.mem)
        v = c["variant"]
        self.slopes = self.sinks = self.doc = self.prefix = None
        if v == "alibi":
            self.slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / H) for i in range(H)], device=device)
        if v == "sinks":
            self.sinks = torch.randn(H, device=device) * 2.0
        if v == "documents":
            self.doc = torch.stack([torch.repeat_interleave(torch.arange(len(lens), device=device),
                                                            torch.tensor(lens, device=device))
                                    for lens in c["doc_lengths"]]).to(torch.int32)  # (B, N) document ids
            flat = [n for lens in c["doc_lengths"] for n in lens]
            self.cu = torch.tensor([0, *torch.tensor(flat).cumsum(0).tolist()], dtype=torch.int32, device=device)
            self.max_doc = max(flat)
        if v == "prefix_lm":
            self.prefix = torch.tensor(c["prefix"], dtype=torch.int32, device=device)

    def keep(self, b: int):
        """(N, N) bool: the pairs batch row ``b`` keeps (every variant here is causal underneath)."""
        import torch

        N = self.c["N"]
        i = torch.arange(N, device=self.device)[:, None]
        j = torch.arange(N, device=self.device)[None, :]
        v = self.c["variant"]
        if v == "window":
            return (j <= i) & (j >= i - self.c["window"])
        if v == "documents":
            d = self.doc[b].long()
            return (d[:, None] == d[None, :]) & (j <= i)
        if v == "prefix_lm":
            return (j <= i) | (j < int(self.prefix[b]))
        return j <= i

    def kept_pairs(self) -> int:
        """Kept (query, key) pairs summed over the batch and heads."""
        return sum(int(self.keep(b).sum()) for b in range(self.c["B"])) * self.c["H"]

    def reference(self):
        """Batch 0, head 0 in float64: (N, D)."""
        import kernels

        q, k, v = (t[0:1, 0:1].detach().double() for t in (self.q, self.k, self.v))
        kw = dict(scale=self.scale, mask_mod=lambda b, h, qi, ki: self.keep(0)[qi, ki])
        if self.c["variant"] == "softcap":
            kw["softcap"] = self.c["softcap"]
        if self.slopes is not None:
            kw["alibi_slopes"] = self.slopes[0:1]
        if self.sinks is not None:
            kw["sinks"] = self.sinks[0:1]
        return kernels.reference_attention(q, k, v, **kw)[0, 0]


# ----------------------------------------------------------------------------- providers


def _ours(case: Case):
    import kernels

    c, v = case.c, case.c["variant"]
    q, k, vv = case.q, case.k, case.v
    if v == "causal":
        return lambda: kernels.flash_attention(q, k, vv, causal=True)
    if v == "window":
        return lambda: kernels.flash_attention(q, k, vv, window_size=(c["window"], 0))
    if v == "softcap":
        return lambda: kernels.flash_attention(q, k, vv, causal=True, softcap=c["softcap"])
    if v == "alibi":
        return lambda: kernels.flash_attention(q, k, vv, causal=True, alibi_slopes=case.slopes)
    if v == "sinks":
        return lambda: kernels.flash_attention(q, k, vv, causal=True, sinks=case.sinks)
    if v == "documents":
        B, N, H, D = case.mem[0].shape
        packed = [t.reshape(B * N, H, D) for t in case.mem]  # views of the same memory

        def call():
            o = kernels.flash_attention_varlen(*packed, case.cu, case.cu, case.max_doc, case.max_doc, causal=True)
            return o.reshape(B, N, H, D).transpose(1, 2)

        return call
    mask = _our_block_mask(case)
    return lambda: kernels.flash_attention(q, k, vv, block_mask=mask)


def _our_block_mask(case: Case):
    import kernels
    from kernels.block_mask import document_aux, packed_documents, prefix_lm

    c = case.c
    if c["variant"] == "prefix_lm":
        return kernels.block_mask(prefix_lm, c["B"], 1, c["N"], c["N"], device=case.device, aux=case.prefix)
    return kernels.block_mask(packed_documents, c["B"], 1, c["N"], c["N"], device=case.device,
                              aux=document_aux(case.doc))


def _ours_extra(case: Case) -> dict:
    """Extra providers of some variants: the plain pointer kernel for causal; for documents the
    block-mask route, the padded batch, and (timed apart) one call per document."""
    import kernels

    v = case.c["variant"]
    q, k, vv = case.q, case.k, case.v
    if v == "causal":
        return {"ours-pointer": lambda: kernels.flash_attention(q, k, vv, causal=True, backend="pointer")}
    if v == "documents":
        mask = _our_block_mask(case)
        return {"ours-block-mask": lambda: kernels.flash_attention(q, k, vv, block_mask=mask)}
    return {}


def _flex(case: Case, interpret: bool):
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    c, v = case.c, case.c["variant"]
    if interpret and case.mem[0].requires_grad:
        raise Unsupported("FlexAttention has no backward on the CPU (interpreter run)")
    fn = flex_attention if interpret else torch.compile(flex_attention, dynamic=False)
    B, H, N = c["B"], c["H"], c["N"]
    doc, prefix, slopes = case.doc, case.prefix, case.slopes
    W = c.get("window")

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    mask_mod, mb = causal, None
    if v == "window":
        def mask_mod(b, h, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (q_idx - kv_idx <= W)
    elif v == "documents":
        mb = B

        def mask_mod(b, h, q_idx, kv_idx):
            return (doc[b, q_idx] == doc[b, kv_idx]) & (q_idx >= kv_idx)
    elif v == "prefix_lm":
        mb = B

        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) | (kv_idx < prefix[b])
    bm = create_block_mask(mask_mod, mb, None, N, N, device=case.device, _compile=not interpret)
    score_mod = None
    if v == "softcap":
        cap = c["softcap"]

        def score_mod(score, b, h, q_idx, kv_idx):
            return cap * torch.tanh(score / cap)
    elif v == "alibi":
        def score_mod(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx - kv_idx).abs()
    q, k, vv, scale = case.q, case.k, case.v, case.scale
    if v == "sinks":
        sinks = case.sinks

        def call():
            # FlexAttention has no sink: the same result from its log-sum-exp, out * sigmoid(lse - sink).
            out, lse = fn(q, k, vv, block_mask=bm, scale=scale, return_lse=True)
            return out * torch.sigmoid(lse - sinks[None, :, None]).unsqueeze(-1).to(out.dtype)

        return call
    return lambda: fn(q, k, vv, score_mod=score_mod, block_mask=bm, scale=scale)


def _dense_mask(case: Case):
    import torch

    masks = torch.stack([case.keep(b) for b in range(case.c["B"])])[:, None]  # (B, 1, N, N)
    if case.c["variant"] in ("documents", "prefix_lm"):
        return masks
    return masks[:1]


def _sdpa(case: Case):
    import torch
    import torch.nn.functional as F

    v = case.c["variant"]
    if v in ("softcap", "sinks"):
        raise Unsupported(f"SDPA has no {'soft-capping' if v == 'softcap' else 'attention sinks'}")
    mask = _dense_mask(case)
    if v == "alibi":
        N = case.c["N"]
        i = torch.arange(N, device=case.device)[:, None]
        j = torch.arange(N, device=case.device)[None, :]
        bias = -case.slopes[:, None, None] * (i - j).abs().float()  # (H, N, N)
        mask = bias.masked_fill(~mask[0], float("-inf")).to(case.q.dtype)[None]
    q, k, vv, scale = case.q, case.k, case.v, case.scale
    return lambda: F.scaled_dot_product_attention(q, k, vv, attn_mask=mask, scale=scale)


def _eager(case: Case):
    import torch

    c, v = case.c, case.c["variant"]
    mask = _dense_mask(case)
    N = c["N"]
    q, k, vv, scale = case.q, case.k, case.v, case.scale
    bias = None
    if v == "alibi":
        i = torch.arange(N, device=case.device)[:, None]
        j = torch.arange(N, device=case.device)[None, :]
        bias = (-case.slopes[:, None, None] * (i - j).abs().float())[None]

    def call():
        s = (q @ k.transpose(-1, -2)).float() * scale
        if v == "softcap":
            s = c["softcap"] * torch.tanh(s / c["softcap"])
        if bias is not None:
            s = s + bias
        s = s.masked_fill(~mask, float("-inf"))
        if v == "sinks":
            s = torch.cat([s, case.sinks[None, :, None, None].expand(*s.shape[:-1], 1)], dim=-1)
            return torch.softmax(s, -1)[..., :-1].to(q.dtype) @ vv
        return torch.softmax(s, -1).to(q.dtype) @ vv

    return call


def _fa4(case: Case, fa4):
    """FlashAttention-4 with the variant's arguments, or Unsupported (not importable, or no such argument)."""
    if fa4.func is None:
        raise Unsupported(f"FlashAttention-4 not available: {fa4.info['reason']}")
    c, v = case.c, case.c["variant"]
    q, k, vv = (t.transpose(1, 2) for t in (case.q, case.k, case.v))  # (B, N, H, D), contiguous views
    kw = dict(softmax_scale=case.scale, causal=True)
    if v == "window":
        kw["window_size"] = (c["window"], 0)
    elif v == "softcap":
        kw["softcap"] = c["softcap"]
    elif v == "sinks":
        kw["learnable_sink"] = case.sinks
    elif v in ("alibi", "prefix_lm"):
        raise Unsupported(f"FlashAttention-4's interface has no {'ALiBi' if v == 'alibi' else 'prefix-LM mask'}")
    func = fa4.func
    if v == "documents":
        import flash_attn.cute.interface as fa4_interface

        func = getattr(fa4_interface, "flash_attn_varlen_func", None)
        if func is None:
            raise Unsupported("this FlashAttention-4 has no flash_attn_varlen_func")
        B, N, H, D = case.mem[0].shape
        packed = [t.reshape(B * N, H, D) for t in case.mem]

        def call_varlen():
            out = func(*packed, cu_seqlens_q=case.cu, cu_seqlens_k=case.cu, max_seqlen_q=case.max_doc,
                       max_seqlen_k=case.max_doc, **kw)
            out = out[0] if isinstance(out, tuple) else out
            return out.reshape(B, N, H, D).transpose(1, 2)

        return call_varlen

    def call():
        out = func(q, k, vv, **kw)
        out = out[0] if isinstance(out, tuple) else out
        return out.transpose(1, 2)

    return call


# ----------------------------------------------------------------------------- measuring


def _too_big(case: Case, name: str) -> bool:
    import torch

    # Only eager holds the score matrix; SDPA's masked kernels stream it (an OOM there is caught on its
    # first call and recorded as "oom").
    if case.device != "cuda" or name != "eager":
        return False
    c = case.c
    # eager keeps fp32 scores, their softmax and a low-precision copy; the backward as much again.
    need = 3 * c["B"] * c["H"] * c["N"] ** 2 * 4
    return need > 0.6 * torch.cuda.mem_get_info()[0]


def build_providers(case: Case, args, fa4) -> dict:
    """name -> (call or None, status, reason): calls that raise Unsupported become "unsupported"."""
    makers = {"ours": lambda: _ours(case), **{n: (lambda f=f: f) for n, f in _ours_extra(case).items()},
              "flex": lambda: _flex(case, args.interpret), "sdpa-dense": lambda: _sdpa(case),
              "eager": lambda: _eager(case), "fa4": lambda: _fa4(case, fa4)}
    out = {}
    for name, make in makers.items():
        if _too_big(case, name):
            out[name] = (None, "oom", "score matrices would not fit in free GPU memory (estimated)")
            continue
        try:
            out[name] = (make(), "ok", None)
        except Unsupported as exc:
            out[name] = (None, "unsupported", str(exc))
    return out


def checked_call(name, call, case: Case, ref, direction: str):
    """Run ``call`` once, check its forward against the float64 reference; returns the timed call.
    FA4 calls that fail here are "unsupported" (its argument coverage varies by release)."""
    import torch

    try:
        out = call()
    except torch.cuda.OutOfMemoryError as exc:
        if name in ("eager", "sdpa-dense"):
            raise Unsupported(f"oom: {str(exc).splitlines()[0][:200]}") from exc
        raise
    except Exception as exc:  # noqa: BLE001 - FA4 only; every other failure is fatal
        if name == "fa4":
            raise Unsupported(f"FlashAttention-4 failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") \
                from exc
        raise
    got = out[0, 0].detach().double()
    err = (got - ref).abs().max().item()
    tol = LOWP_TOL[case.c["dtype"]] * max(1.0, ref.abs().max().item())
    if not err <= tol:
        raise RuntimeError(f"{case_name(case.c, direction)} {name}: max abs error {err:.3g} > {tol:.3g} against "
                           "the float64 reference: nothing written")
    if direction == "fwd":
        del out
        return call, err, tol
    do = torch.randn_like(out)
    leaves = case.mem

    def backward():
        for t in leaves:
            t.grad = None
        out.backward(do, retain_graph=True)

    backward()
    return backward, err, tol


def run_case(c: dict, args, bench, settings, fa4) -> list[dict]:
    import torch

    records = []
    for direction in ("fwd", "bwd"):
        # A fresh compile cache per case: each case's score_mod / mask_mod is a new closure, and past
        # Dynamo's recompile limit torch.compile(flex_attention) would silently run unfused eager.
        torch._dynamo.reset()
        case = Case(c, settings.device, requires_grad=direction == "bwd")
        ref = case.reference()
        pairs = case.kept_pairs()
        flops = (4 if direction == "fwd" else 10) * c["D"] * pairs
        provs = build_providers(case, args, fa4)
        prepared, mine = {}, []
        for name, (call, status, reason) in provs.items():
            rec = dict(case=case_name(c, direction), provider=name, direction=direction, variant=c["variant"],
                       dtype=c["dtype"], shape={k: c[k] for k in ("B", "H", "N", "D")},
                       params={k: c[k] for k in ("window", "softcap", "doc_lengths", "prefix") if k in c},
                       kept_pairs=pairs, flops=flops, status=status, reason=reason, p20=None, p50=None, p80=None,
                       tflops=None, max_err=None, tol=None)
            if call is not None:
                try:
                    timed, rec["max_err"], rec["tol"] = checked_call(name, call, case, ref, direction)
                    prepared[name] = timed
                except Unsupported as exc:
                    msg = str(exc)
                    rec["status"], rec["reason"] = ("oom", msg[5:]) if msg.startswith("oom: ") else ("unsupported", msg)
            mine.append(rec)
        calls = list(prepared.items())
        timed = bench.time_rounds(calls, settings) if calls else {}
        for rec in mine:
            if rec["provider"] in timed:
                samples, round_p50 = timed[rec["provider"]]
                rec["p20"], rec["p50"], rec["p80"] = bench.quantiles(samples)
                rec["round_p50"] = round_p50
                rec["tflops"] = flops / (rec["p50"] * 1e-3) / 1e12
        records += mine
        if c["variant"] == "documents":
            records += per_document_records(case, direction, bench, settings, flops, pairs)
        del case, provs, prepared, calls
        if settings.device == "cuda":
            torch.cuda.empty_cache()
    return records


def per_document_records(case: Case, direction: str, bench, settings, flops: int, pairs: int) -> list[dict]:
    """Ours per document alone (the sum of the per-document medians) and ours padded to the longest."""
    import kernels
    import torch

    c = case.c
    B, N, H, D = case.mem[0].shape
    flat = [n for lens in c["doc_lengths"] for n in lens]
    starts = case.cu.tolist()
    packed = [t.detach().reshape(B * N, H, D) for t in case.mem]
    by_length: dict[int, float] = {}
    for n in sorted(set(flat)):  # documents of one length cost the same: time each length once
        a = flat.index(n)
        q, k, v = (t[starts[a]:starts[a] + n].transpose(0, 1)[None].contiguous().requires_grad_(direction == "bwd")
                   for t in packed)
        out = kernels.flash_attention(q, k, v, causal=True)
        if direction == "fwd":
            call = lambda q=q, k=k, v=v: kernels.flash_attention(q, k, v, causal=True)  # noqa: E731
        else:
            do = torch.randn_like(out)

            def call(out=out, do=do, leaves=(q, k, v)):
                for t in leaves:
                    t.grad = None
                out.backward(do, retain_graph=True)
        samples, _ = bench.time_rounds([(n, call)], settings)[n]
        by_length[n] = bench.quantiles(samples)[1]
    total = sum(by_length[n] for n in flat)
    base = dict(direction=direction, variant="documents", dtype=c["dtype"], shape={k: c[k] for k in ("B", "H", "N", "D")},
                params={"doc_lengths": c["doc_lengths"]}, kept_pairs=pairs, flops=flops, status="ok", reason=None,
                p20=None, p80=None, max_err=None, tol=None)
    recs = [dict(base, case=case_name(c, direction), provider="ours-per-document", p50=total,
                 tflops=flops / (total * 1e-3) / 1e12,
                 note="sum over documents of the median time of flash_attention(causal=True) on that document alone")]
    # Padded to the longest: one (documents, H, longest, D) causal batch (the work padding costs).
    longest = max(flat)
    q, k, v = (torch.randn(len(flat), H, longest, D, device=settings.device, dtype=case.q.dtype,
                           requires_grad=direction == "bwd") for _ in range(3))
    out = kernels.flash_attention(q, k, v, causal=True)
    if direction == "fwd":
        call = lambda: kernels.flash_attention(q, k, v, causal=True)  # noqa: E731
    else:
        do = torch.randn_like(out)

        def call():
            for t in (q, k, v):
                t.grad = None
            out.backward(do, retain_graph=True)
    samples, _ = bench.time_rounds([(0, call)], settings)[0]
    p20, p50, p80 = bench.quantiles(samples)
    recs.append(dict(base, case=case_name(c, direction), provider="ours-padded", p20=p20, p50=p50, p80=p80,
                     tflops=flops / (p50 * 1e-3) / 1e12,
                     note=f"{len(flat)} documents padded to {longest} tokens, causal; FLOPs of the kept pairs only"))
    return recs


# ----------------------------------------------------------------------------- writing


def write_atomic(path: Path, doc: dict) -> None:
    """Write ``doc`` as JSON via a temp file in the same folder and a rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def merge(files: list[str], out: Path) -> None:
    docs = [json.loads(Path(f).read_text()) for f in files]
    for f, d in zip(files, docs):
        if d.get("schema") != SCHEMA:
            raise ValueError(f"{f}: not a {SCHEMA} file")
    cards = {d["provenance"].get("gpu_uuid") for d in docs}
    commits = {d["provenance"].get("git_commit") for d in docs}
    if len(cards) != 1 or len(commits) != 1:
        raise ValueError(f"the files come from {len(cards)} GPUs and {len(commits)} commits; merge one card's run only")
    seen, records = set(), []
    for d in docs:
        for r in d["records"]:
            key = (r["case"], r["provider"])
            if key in seen:
                raise ValueError(f"{key} appears in two files")
            seen.add(key)
            records.append(r)
    prov = dict(docs[0]["provenance"], merged_from=[Path(f).name for f in files],
                only=sorted({v for d in docs for v in d["provenance"].get("only", [])}))
    write_atomic(out, dict(schema=SCHEMA, provenance=prov, records=records))


def _import_benchmark():
    """scripts/benchmark.py as a module, for its timing and provenance helpers."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    import benchmark

    return benchmark


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out) if args.out else ROOT / "docs" / "data" / "variants.json"
    if args.merge:
        try:
            merge(args.merge, out)
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            sys.exit(f"bench_variants.py: merge refused, nothing written: {exc}")
        print(f"# merged {len(args.merge)} files into {out}", flush=True)
        return 0
    if args.interpret:
        if args.out is None:
            sys.exit("bench_variants.py: --interpret needs --out: interpreter timings must never replace docs/data")
        os.environ["TRITON_INTERPRET"] = "1"  # before triton or kernels is imported
    import torch

    if not args.interpret and not torch.cuda.is_available():
        sys.exit("bench_variants.py: no CUDA GPU found (or pass --interpret --out FILE for the pipeline on the CPU)")
    bench = _import_benchmark()
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    settings = bench.Settings(quick=args.quick, interpret=args.interpret, commit=args.commit, fa4_site=args.fa4_site)
    fa4 = bench.fa4_for(settings)
    prov = bench.provenance(settings)
    prov.update(flops_convention=FLOPS_CONVENTION, check="forward output of batch 0, head 0 against float64; "
                f"tolerance max|ref| x {LOWP_TOL}", variants_semantics=(
                    "window: FlashAttention's window_size=(4096, 0), causal, query i sees keys i-4096..i; "
                    "softcap: 50*tanh(s/50) on scaled scores; alibi: -slope_h*|i-j|, slopes 2^(-8(h+1)/H), causal; "
                    "sinks: one logit per head in the softmax denominator, causal; documents: causal within each "
                    "packed document (varlen for ours, a document BlockMask for FlexAttention, a dense mask for SDPA); "
                    "prefix_lm: bidirectional over each row's prefix, causal after"),
                quick=args.quick, only=args.only)
    print(f"# {prov['gpu']} | torch {prov['torch']} | triton {prov['triton']} | fa4 {prov['fa4']}", flush=True)
    records, t0 = [], time.time()
    all_cases = cases(args)
    for i, c in enumerate(all_cases, 1):
        for rec in run_case(c, args, bench, settings, fa4):
            records.append(rec)
            shown = (f"{rec['p50']:.3f} ms {rec['tflops']:.1f} TFLOP/s" if rec["status"] == "ok"
                     else f"{rec['status']}: {(rec['reason'] or '')[:80]}")
            print(f"[{i}/{len(all_cases)} {time.time() - t0:5.0f}s] {rec['case']} {rec['provider']}: {shown}", flush=True)
    write_atomic(out, dict(schema=SCHEMA, provenance=prov, records=records))
    print(f"# wrote {out} ({len(records)} records, {time.time() - t0:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
