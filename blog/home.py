"""The home page's two pieces drawn from the data: the headline chart and its sentence."""

from __future__ import annotations

from . import figures, query
from .render import figure_html


def headline_figure_html() -> str:
    """Forward TFLOP/s on the production shapes, every GPU's file behind the GPU/dtype buttons."""
    return figure_html(figures.production_tflops(query.load("production"), "fwd"))


def headline_sentence() -> str:
    """Our forward and backward speed against cuDNN (and FA4, FA2) at N >= 4k, on the first GPU's data."""
    doc = query.load("production")[0]
    lo, hi = query.ratio_summary(doc, "fwd", "sdpa-flash")
    clo, chi = query.ratio_summary(doc, "fwd", "sdpa-cudnn")
    blo, bhi = query.ratio_summary(doc, "bwd", "sdpa-cudnn")
    fa4 = query.ratios_by_case(doc, "fwd", "fa4", min_n=4096)
    bfa4 = query.ratios_by_case(doc, "bwd", "fa4", min_n=4096)
    return (f"On an {doc['provenance']['gpu']}, at N ≥ 4k, the series' final kernel runs the forward pass at "
            f"**{clo:.2f}–{chi:.2f}×** the speed of PyTorch's cuDNN backend"
            + (f", **{min(fa4.values()):.2f}–{max(fa4.values()):.2f}×** that of FlashAttention-4" if fa4 else "")
            + f" and **{lo:.2f}–{hi:.2f}×** that of PyTorch's FlashAttention-2 backend, and the backward pass at "
            f"**{blo:.2f}–{bhi:.2f}×** cuDNN's"
            + (f" and **{min(bfa4.values()):.2f}–{max(bfa4.values()):.2f}×** FlashAttention-4's" if bfa4 else "")
            + " (all measured in the same run).")
