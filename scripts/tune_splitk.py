#!/usr/bin/env python3
"""Time the split-K forward against the unsplit kernel and eager PyTorch (GPU only).

    python scripts/tune_splitk.py --out /tmp/splitk.json          # every case, about 5-8 minutes
    python scripts/tune_splitk.py --out /tmp/s.json --quick       # two cases, a smoke run

Cases: the draft's sizes (one head, B=1, fp32 with exact dots: ``precision="ieee"``, TF32 off
for eager too) and decode steps (B=4, 32 query heads, Nq=1, Nk 4k/16k/64k, fp16, D=128; k/v
heads 32 and 8). Per case: eager ``softmax(q @ k^T * s) @ v``, ``flash`` with the split
forbidden, the split with SPLITS in {2, 4, 8, 16} on each of the split path's tile candidates,
and ``flash_attention`` itself (the heuristic's choice). Every variant is checked against
float64 before it is timed, with ``triton.testing.do_bench`` (median) and
``do_bench_cudagraph`` (median of graph replays: no host time). Writes one JSON file and
prints a table last. Needs torch, triton and the standard library.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPLITS = (2, 4, 8, 16)
DRAFT_SIZES = [(128, 64), (256, 128), (512, 128), (1024, 256), (2048, 128), (4096, 128)]
DECODE_KEYS = [4096, 16384, 65536]


# Tiles for the probe of fp32 inputs with precision="tf32x3" (three TF32 tensor-core products per
# dot, fp32-level error): fp32 operands in shared memory, so fewer stages than fp16's tiles.
TF32X3_TILES = [(64, 64, 4, 2), (64, 32, 4, 2), (32, 64, 4, 2)]
TF32X3_SPLITS = (1, 2, 4, 8)


def cases(quick: bool, draft_only: bool = False) -> list[dict]:
    """(name, B, H, Hkv, Nq, Nk, D, dtype name) of each case."""
    import torch

    out = [dict(name=f"draft {n}x{d}", B=1, H=1, Hkv=1, Nq=n, Nk=n, D=d, dtype=torch.float32)
           for n, d in DRAFT_SIZES]
    out += [dict(name=f"decode Nk={nk // 1024}k Hkv={hkv}", B=4, H=32, Hkv=hkv, Nq=1, Nk=nk, D=128, dtype=torch.float16)
            for hkv in (32, 8) for nk in DECODE_KEYS]
    if draft_only:
        out = out[:len(DRAFT_SIZES)]
    return [out[1], out[-1]] if quick else out


def eager(q, k, v, scale):
    """softmax(q k^T * s) v, with grouped query heads folded into the rows (no k/v copy)."""
    B, H, n_q, d = q.shape
    h_kv = k.shape[1]
    qg = q.reshape(B, h_kv, (H // h_kv) * n_q, d)
    return (((qg @ k.transpose(-1, -2)) * scale).softmax(-1) @ v).reshape(q.shape)


def variants(case, q, k, v, scale, precisions=("ieee",)):
    """(label, splits, tile, fn) for every variant of one case (fp32 cases: also each extra
    precision in ``precisions``, on TF32X3_TILES, unsplit and split)."""
    import torch

    from kernels import flash, flash_attention, splitk
    from kernels.tiles import padded_head_dim

    out = [("eager", None, None, lambda: eager(q, k, v, scale)),
           ("flash unsplit", 1, None, lambda: flash.flash_forward(q, k, v, False, scale, "ieee")[0]),
           ("flash_attention (heuristic)", splitk.auto_splits(q, k), None,
            lambda: flash_attention(q, k, v, scale=scale))]
    ieee_tiles = splitk.candidate_tiles(case["Nq"], padded_head_dim(case["D"]), case["dtype"])
    if case["dtype"] == torch.float32 and "ieee" not in precisions:
        ieee_tiles = []  # fp32 cases: only eager, unsplit and the heuristic in exact fp32
    for tile in ieee_tiles:
        for s in SPLITS:
            out.append((f"split {s} {'x'.join(map(str, tile))}", s, tile,
                        lambda s=s, tile=tile: splitk.splitk_forward(q, k, v, False, scale, "ieee", s,
                                                                     tile=tile)[0]))
    if case["dtype"] == torch.float32:
        for prec in (p for p in precisions if p != "ieee"):
            for tile in TF32X3_TILES:
                for s in TF32X3_SPLITS:
                    label = f"{prec} {'unsplit' if s == 1 else f'split {s}'} {'x'.join(map(str, tile))}"
                    if s == 1:  # the unsplit pointer kernel on this tile
                        fn = lambda tile=tile, prec=prec: flash.flash_forward(  # noqa: E731
                            q, k, v, False, scale, prec, tile=tile)[0]
                    else:
                        fn = lambda s=s, tile=tile, prec=prec: splitk.splitk_forward(  # noqa: E731
                            q, k, v, False, scale, prec, s, tile=tile)[0]
                    out.append((label, s, tile, fn))
    return out


def tolerance(dtype, ref, eager_err: float) -> float:
    """fp32: 2e-5 of the output's magnitude (as tests/helpers.py); fp16: 2x eager's own error."""
    import torch

    magnitude = max(1.0, ref.abs().max().item())
    if dtype == torch.float32:
        return 2e-5 * magnitude
    return 2.0 * eager_err + torch.finfo(dtype).eps * magnitude


def run_case(case, deadline: float, precisions=("ieee",)) -> list[dict]:
    import torch
    import triton

    from kernels import reference_attention

    torch.manual_seed(0)
    shape_q = (case["B"], case["H"], case["Nq"], case["D"])
    shape_k = (case["B"], case["Hkv"], case["Nk"], case["D"])
    q = torch.randn(shape_q, device="cuda").to(case["dtype"])
    k, v = (torch.randn(shape_k, device="cuda").to(case["dtype"]) for _ in range(2))
    scale = case["D"] ** -0.5
    ref = reference_attention(q, k, v, scale=scale)  # float64
    eager_err = (eager(q, k, v, scale).double() - ref).abs().max().item()
    tol = tolerance(case["dtype"], ref, eager_err)
    records = []
    for label, splits, tile, fn in variants(case, q, k, v, scale, precisions):
        rec = dict(case=case["name"], shape={key: case[key] for key in ("B", "H", "Hkv", "Nq", "Nk", "D")},
                   dtype=str(case["dtype"]).replace("torch.", ""), variant=label, splits=splits,
                   tile=list(tile) if tile else None, tol=tol, max_err=None, p50_ms=None, graph_p50_ms=None)
        if time.monotonic() > deadline:
            records.append(dict(rec, status="skipped: time budget spent"))
            continue
        try:
            err = (fn().double() - ref).abs().max().item()  # also compiles, outside the timing
            rec["max_err"] = err
            if not err <= tol:
                records.append(dict(rec, status="wrong"))
                continue
            rec["p50_ms"] = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            rec["graph_p50_ms"] = triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")
            rec["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a tile that does not fit (shared memory) is a result too
            rec["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            torch.cuda.synchronize()
        records.append(rec)
        print(f"  {label:38s} {rec['status']:6.6s} err {rec['max_err'] or 0:.1e} "
              f"p50 {rec['p50_ms'] or 0:.4f} graph {rec['graph_p50_ms'] or 0:.4f} ms", flush=True)
    del q, k, v, ref
    torch.cuda.empty_cache()
    return records


def table(records: list[dict]) -> str:
    """Per case: eager, unsplit flash, the heuristic's choice and the fastest split (by graph time)."""
    lines = [f"{'case':26s} {'eager':>13s} {'unsplit':>13s} {'heuristic':>18s} {'best split':>28s}  (ms: p50/graph)"]

    def fmt(r):
        return "-" if r is None or r["status"] != "ok" else f"{r['p50_ms']:.3f}/{r['graph_p50_ms']:.3f}"

    for name in dict.fromkeys(r["case"] for r in records):
        rows = [r for r in records if r["case"] == name]
        by = {r["variant"]: r for r in rows}
        splits = [r for r in rows if r["variant"].startswith("split ") and r["status"] == "ok"]
        best = min(splits, key=lambda r: r["graph_p50_ms"], default=None)
        other = [r for r in rows if r["variant"].split()[0] not in ("eager", "flash", "flash_attention", "split")
                 and r["status"] == "ok"]
        fastest_other = min(other, key=lambda r: r["graph_p50_ms"], default=None)
        heur = by.get("flash_attention (heuristic)")
        lines.append(f"{name:26s} {fmt(by.get('eager')):>13s} {fmt(by.get('flash unsplit')):>13s} "
                     f"{'S=' + str(heur['splits']) + ' ' + fmt(heur) if heur else '-':>18s} "
                     f"{(best['variant'][6:] + ' ' + fmt(best)) if best else '-':>28s}"
                     + (f"  | {fastest_other['variant']} {fmt(fastest_other)} err {fastest_other['max_err']:.1e}"
                        if fastest_other else ""))
    return "\n".join(lines)


def provenance(commit: str | None) -> dict:
    import torch
    import triton

    if commit is None:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                    timeout=10).stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            commit = "unknown"
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "sm_count": props.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda, "git_commit": commit,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fp32_matmul": "ieee (TF32 off)",
            "timing": "triton.testing.do_bench(warmup=25, rep=100, median) and do_bench_cudagraph(rep=100, median)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="two cases only (a smoke run)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="stop starting new variants after this many seconds (the file is still written)")
    parser.add_argument("--draft-only", action="store_true", help="the draft's fp32 sizes only (no decode)")
    parser.add_argument("--precisions", default="ieee",
                        help="comma-separated dot precisions for the fp32 cases (e.g. 'ieee,tf32x3'): each "
                             "one besides 'ieee' is timed on TF32X3_TILES; without 'ieee' the exact-fp32 "
                             "splits are not timed (eager, unsplit and the heuristic still are)")
    parser.add_argument("--commit", default=None, help="git commit to record (default: read from the repo)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    import torch

    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False  # eager in exact fp32, like the kernels' "ieee"
    torch.backends.cudnn.allow_tf32 = False
    deadline = time.monotonic() + args.budget_s
    prov = provenance(args.commit)
    records = []
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    for case in cases(args.quick, args.draft_only):
        print(f"{case['name']}:", flush=True)
        records += run_case(case, deadline, precisions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"provenance": prov, "records": records}, indent=1))
    print(f"wrote {args.out}\n{table(records)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
