"""The home page's two pieces drawn from the data: the headline chart and its sentence."""

from __future__ import annotations

from . import figures, query
from .render import figure_html


def headline_figure_html() -> str:
    """Forward TFLOP/s on the production shapes, every GPU's file behind the GPU/dtype buttons."""
    return figure_html(figures.production_tflops(query.load("production"), "fwd"))


def headline_sentence() -> str:
    """Our forward speed against FA2 and cuDNN at N >= 4k, on the first GPU's data."""
    doc = query.load("production")[0]
    lo, hi = query.ratio_summary(doc, "fwd", "sdpa-flash")
    clo, chi = query.ratio_summary(doc, "fwd", "sdpa-cudnn")
    return (f"On an {doc['provenance']['gpu']}, at N ≥ 4k, the series' final kernel runs the forward pass at "
            f"**{lo:.2f}–{hi:.2f}×** the speed of PyTorch's FlashAttention-2 backend and "
            f"**{clo:.2f}–{chi:.2f}×** that of its cuDNN backend (measured in the same run).")
