"""Post 4: the optimization ladder of the flash forward kernel, one switch at a time.

Each rung is the production kernel (`kernels.flash`) with some of its optimizations
turned off through constexpr switches, so every rung compiles to a real kernel and
the last rung *is* post 3's kernel, `flash_attention(..., backend="pointer")`. Each rung carries the speed-up we predicted
before measuring it, and why; `scripts/benchmark.py --suite ablation` measures them
and post 4 draws the two side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .runtime import as_batch_heads, check_attention_inputs
from . import flash


@dataclass(frozen=True)
class Rung:
    name: str
    label: str
    tile: tuple | None  # (BLOCK_M, BLOCK_N, num_warps, num_stages); None = autotuned
    switches: dict = field(default_factory=dict)
    # Predicted speed-up over the previous rung, written down before the first measurement:
    predict_full: float = 1.0
    predict_causal: float = 1.0
    why: str = ""


_NAIVE = dict(SOFTMAX="exp", SPLIT_LOOPS=False, SKIP_FUTURE=False)

RUNGS = (
    Rung("naive", "Tiled, online softmax", (64, 64, 4, 1), dict(_NAIVE),
         why="64x64 tiles, exp() after a separate scale multiply, every tile masked, causal "
             "visits every tile, loads not pipelined (num_stages=1)."),
    Rung("pipelined", "+ software pipelining", (64, 64, 4, 3), dict(_NAIVE), 1.4, 1.4,
         "num_stages=3: the next K/V tiles load while this one is multiplied, so the tensor "
         "cores stop waiting on memory latency."),
    Rung("big-tiles", "+ 128x64 tiles, 8 warps", (128, 64, 8, 3), dict(_NAIVE), 1.25, 1.25,
         "Twice the query rows per program halve K/V re-reads per FLOP and give each "
         "wgmma a taller operand."),
    Rung("skip-future", "+ skip tiles past the diagonal", (128, 64, 8, 3),
         dict(_NAIVE, SKIP_FUTURE=True), 1.0, 1.9,
         "Causal: about half the tiles lie wholly above the diagonal; skipping them halves "
         "the work (the diagonal tiles remain). No change without a mask."),
    Rung("split-loops", "+ unmasked interior loop", (128, 64, 8, 3),
         dict(_NAIVE, SKIP_FUTURE=True, SPLIT_LOOPS=True), 1.08, 1.08,
         "Only the diagonal and ragged tiles build a mask: two compares and a select per "
         "score leave the hot loop, of roughly ten instructions per score."),
    Rung("exp2", "+ exp2, scale folded", (128, 64, 8, 3),
         dict(SOFTMAX="exp2", SPLIT_LOOPS=True, SKIP_FUTURE=True), 1.05, 1.05,
         "exp(x) compiles to ex2(x * log2 e): folding log2 e into the softmax scale saves "
         "one multiply per score."),
    Rung("exp2-fma", "+ scale and max in one FMA", (128, 64, 8, 3),
         dict(SOFTMAX="exp2-fma", SPLIT_LOOPS=True, SKIP_FUTURE=True), 1.04, 1.04,
         "Take the row max of the raw scores, then exp2(qk * scale - max) is one FMA per "
         "score instead of a multiply and a subtract."),
    Rung("autotuned", "+ autotuned tile (= flash_attention)", None, {}, 1.03, 1.03,
         "The autotuner picks tile, warps and stages per (N, D, causal, dtype) from a "
         "pruned list; 128x64 is already the usual pick at long N."),
)
RUNG_NAMES = tuple(r.name for r in RUNGS)


def rung(name: str) -> Rung:
    for r in RUNGS:
        if r.name == name:
            return r
    raise ValueError(f"ablation: unknown rung {name!r}; choose from {', '.join(RUNG_NAMES)}")


def ablation_launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, step: str = "autotuned") -> tuple:
    """The flash forward pass as built up to rung ``step``: (output, compiled kernel, config).

    Shapes as `flash_attention`: q (..., Hq, Nq, D), k and v (..., Hkv, Nk, D). Forward only,
    no autograd. The compiled kernel (None under the interpreter) feeds `compiler_report`.
    """
    r = rung(step)
    scale = check_attention_inputs("ablation_attention", q, k, v, causal, scale, allow_gqa=True)
    if q.numel() == 0 or k.numel() == 0:
        return q * 0.0, None, None
    with torch.no_grad():
        o4, _, (compiled, config) = flash.flash_forward(as_batch_heads(q), as_batch_heads(k), as_batch_heads(v),
                                                        causal, scale, "ieee", tile=r.tile, switches=r.switches)
    return o4.reshape(q.shape), compiled, config


def ablation_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                       scale: float | None = None, step: str = "autotuned") -> torch.Tensor:
    """The flash forward pass as built up to rung ``step`` (forward only, no autograd).

    Shapes as `flash_attention`: q (..., Hq, Nq, D), k and v (..., Hkv, Nk, D).
    """
    return ablation_launch(q, k, v, causal=causal, scale=scale, step=step)[0]


def compiler_report(compiled) -> dict | None:
    """Registers, spills, shared memory and instruction counts of a compiled Triton kernel.

    ``compiled`` is what a Triton launch returns on the GPU (None under the interpreter).
    The PTX counts are static (instructions in the code, not executed ones).
    """
    if compiled is None or not hasattr(compiled, "asm"):
        return None
    try:
        compiled._init_handles()
    except Exception:  # noqa: BLE001 - the counts below still stand
        pass
    ptx = compiled.asm.get("ptx", "") if isinstance(compiled.asm, dict) else ""
    md = compiled.metadata
    return {
        "registers": getattr(compiled, "n_regs", None),
        "spills": getattr(compiled, "n_spills", None),
        "shared_bytes": getattr(md, "shared", None),
        "num_warps": getattr(md, "num_warps", None),
        "num_stages": getattr(md, "num_stages", None),
        "ptx_wgmma": ptx.count("wgmma.mma_async"),
        "ptx_mma_sync": ptx.count("mma.sync"),
        "ptx_ex2": ptx.count("ex2.approx"),
        "ptx_fma_f32": ptx.count("fma.rn.f32"),
        "ptx_mul_f32": ptx.count("mul.f32") + ptx.count("mul.rn.f32"),
        "ptx_cp_async": ptx.count("cp.async"),
        "ptx_setmaxnreg": ptx.count("setmaxnreg"),  # register hand-off between specialised warps
        "ptx_lines": ptx.count("\n"),
    }
