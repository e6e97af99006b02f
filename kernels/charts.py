"""Figures and tables for the posts, built from the benchmark data in docs/data.

Every figure carries its provenance (GPU, versions, date, commit) on its face.
Figures are emitted as HTML fragments that use the one plotly.min.js the site
loads per page; ``docs/javascripts/charts.js`` recolours them for the dark palette.
Needs plotly (the site's dependency, not the kernels').
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import benchdata, traffic

DATA_DIR = Path(__file__).resolve().parent.parent / "docs" / "data"

LABELS = {
    "basic": "basic (post 1)",
    "vectorized": "vectorized (post 2)",
    "flash": "flash (post 3)",
    "flash-tf32": "flash, TF32 dots",
    "eager": "eager PyTorch",
    "sdpa": "PyTorch SDPA (default)",
    "sdpa-flash": "SDPA flash (FA2)",
    "sdpa-cudnn": "SDPA cuDNN",
    "sdpa-efficient": "SDPA mem-efficient",
}
COLORS = {
    "basic": "#9e9e9e", "vectorized": "#ff9800", "flash": "#e91e63", "flash-tf32": "#f48fb1",
    "eager": "#3f51b5", "sdpa": "#009688", "sdpa-flash": "#4caf50", "sdpa-cudnn": "#673ab7",
    "sdpa-efficient": "#795548",
}


# ----------------------------------------------------------------------------- data

def load(suite: str, data_dir: Path | None = None) -> list[dict]:
    """Validated documents for ``suite``, one per GPU; a clear error if there are none."""
    docs = benchdata.load_suite(data_dir or DATA_DIR, suite)
    if not docs:
        raise benchdata.BenchDataError(
            f"no {suite}.*.json in {data_dir or DATA_DIR}: run scripts/benchmark.py --suite {suite} on a GPU")
    return docs


def provenance_line(doc: dict) -> str:
    p = doc["provenance"]
    return (f"{p['gpu']} · torch {p['torch']} · triton {p['triton']} · CUDA {p['cuda']} · "
            f"driver {p['driver']} · {p['date'][:10]} · commit {p['git_commit'][:7]}")


def ok(records, **match):
    return [r for r in records if r["status"] == "ok" and all(
        (r["shape"].get(k) if k in benchdata.SHAPE_KEYS else r.get(k)) == v for k, v in match.items())]


def lookup(doc: dict) -> dict:
    """(provider, direction, dtype, causal, B, H, Hkv, Nq, Nk, D) -> record."""
    out = {}
    for r in doc["records"]:
        s = r["shape"]
        out[(r["provider"], r["direction"], r["dtype"], r["causal"], s["B"], s["H"], s["Hkv"], s["Nq"], s["Nk"], s["D"])] = r
    return out


# ----------------------------------------------------------------------------- figure helpers

def _finish(fig: go.Figure, doc_or_docs, title: str, height: int = 430) -> go.Figure:
    docs = doc_or_docs if isinstance(doc_or_docs, list) else [doc_or_docs]
    # Two lines per GPU: one line overflows a chart in the narrow content column.
    prov = "<br>".join(provenance_line(d).replace(" · driver", "<br>driver") for d in docs)
    fig.update_layout(
        title=dict(text=title, x=0.01, y=0.985, yref="container", yanchor="top", font=dict(size=15)),
        template="plotly_white", height=height + 60 + 34 * len(docs),
        margin=dict(l=60, r=20, t=115, b=70 + 32 * len(docs)),
        legend=dict(orientation="h", yanchor="bottom", y=1.09, x=0, xanchor="left", font=dict(size=11)),
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
        font=dict(family="-apple-system, BlinkMacSystemFont, Segoe UI, Roboto, Helvetica, Arial, sans-serif"),
    )
    fig.add_annotation(text=f"Measured on {prov}", xref="paper", yref="paper", x=0, y=0, yshift=-58 - 16 * (len(docs) - 1),
                       showarrow=False, xanchor="left", yanchor="top", align="left", font=dict(size=10, color="#888"))
    return fig


def to_html(fig: go.Figure) -> str:
    """An HTML fragment (a div and one script) that uses the page's plotly.min.js."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True},
                       default_width="100%")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (the site build); False when a post runs as a script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show(obj):
    """Display a figure or an HTML table as raw HTML; as a script, print what it is."""
    if not in_notebook():
        if isinstance(obj, go.Figure):
            print(f"[chart] {obj.layout.title.text}")
        else:
            print("[table] " + re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", obj)))[:400] + " ...")
        return
    from IPython.display import HTML, display
    display(HTML(to_html(obj) if isinstance(obj, go.Figure) else obj))


def md(text: str):
    """Prose with numbers formatted from the data: Markdown in the page, plain text as a script."""
    if not in_notebook():
        print(text)
        return
    from IPython.display import Markdown, display
    display(Markdown(text))


def show_source(obj, *, start: str | None = None, end: str | None = None):
    """Show a kernel's source, read from the package (never copied into a page)."""
    import inspect

    src = inspect.getsource(getattr(obj, "fn", obj))
    if start:
        src = src[src.index(start):]
    if end:
        src = src[: src.index(end)]
    if not in_notebook():
        print(src)
        return
    from IPython.display import HTML, display
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    display(HTML(highlight(src, PythonLexer(), HtmlFormatter(cssclass="highlight", wrapcode=True))))


def fmt_ms(ms: float) -> str:
    return f"{ms * 1e3:.1f} µs" if ms < 0.1 else f"{ms:.3f} ms" if ms < 10 else f"{ms:.1f} ms"


# ----------------------------------------------------------------------------- post 2: the draft's sizes

SEED_PROVIDERS = ["basic", "vectorized", "flash", "eager", "sdpa"]


def seed_comparison(doc: dict, providers=SEED_PROVIDERS) -> go.Figure:
    """Grouped bars: median time per provider at each of the draft's sizes (log scale)."""
    fig = go.Figure()
    sizes = sorted({(r["shape"]["Nq"], r["shape"]["D"]) for r in doc["records"]})
    for p in providers:
        xs, ys, err_hi, err_lo, text = [], [], [], [], []
        for n, d in sizes:
            rs = ok(doc["records"], provider=p, Nq=n, D=d)
            if rs:
                r = rs[0]
                xs.append(f"{n}×{d}"); ys.append(r["p50"])
                err_hi.append(r["p80"] - r["p50"]); err_lo.append(r["p50"] - r["p20"]); text.append(fmt_ms(r["p50"]))
        fig.add_bar(name=LABELS[p], x=xs, y=ys, marker_color=COLORS[p], text=text, textposition="none",
                    error_y=dict(type="data", array=err_hi, arrayminus=err_lo, thickness=1),
                    hovertemplate="%{x}: %{text}<extra>" + LABELS[p] + "</extra>")
    fig.update_yaxes(type="log", title="median time (ms, log scale; bars show p20–p80)")
    fig.update_xaxes(title="sequence length × head dim (one head, fp32)")
    fig.update_layout(barmode="group")
    return _finish(fig, doc, "Forward time at the draft's sizes")


def seed_speedup(doc: dict, baseline="eager", providers=("basic", "vectorized", "flash", "sdpa")) -> go.Figure:
    """Speedup over eager PyTorch (>1 is faster) for each provider and size."""
    fig = go.Figure()
    sizes = sorted({(r["shape"]["Nq"], r["shape"]["D"]) for r in doc["records"]})
    for p in providers:
        xs, ys = [], []
        for n, d in sizes:
            a, b = ok(doc["records"], provider=p, Nq=n, D=d), ok(doc["records"], provider=baseline, Nq=n, D=d)
            if a and b:
                xs.append(f"{n}×{d}"); ys.append(b[0]["p50"] / a[0]["p50"])
        fig.add_scatter(name=LABELS[p], x=xs, y=ys, mode="lines+markers", line=dict(color=COLORS[p]),
                        hovertemplate="%{x}: %{y:.3g}× eager<extra>" + LABELS[p] + "</extra>")
    fig.add_hline(y=1, line_dash="dot", line_color="#888", annotation_text="as fast as eager PyTorch")
    fig.update_yaxes(type="log", title=f"speedup over {LABELS[baseline]} (log; >1 is faster)")
    fig.update_xaxes(title="sequence length × head dim")
    return _finish(fig, doc, "Speedup over eager PyTorch")


def memory_traffic(doc: dict, providers=("basic", "vectorized", "flash", "eager")) -> go.Figure:
    """Model bytes per design (bars) and the bandwidth they imply at the measured time (markers)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("requested bytes (model)", "requested bytes / measured time"))
    sizes = sorted({(r["shape"]["Nq"], r["shape"]["D"]) for r in doc["records"]})
    copy = doc["provenance"]["ceilings"].get("copy_gbps")
    for p in providers:
        xs, model, bw = [], [], []
        for n, d in sizes:
            t = traffic.DESIGNS[p](n, n, d, elem_bytes=4)
            rs = ok(doc["records"], provider=p, Nq=n, D=d)
            xs.append(f"{n}×{d}"); model.append(t.bytes_total)
            bw.append(t.bytes_total / (rs[0]["p50"] * 1e-3) / 1e9 if rs else None)
        fig.add_bar(name=LABELS[p], x=xs, y=model, marker_color=COLORS[p], legendgroup=p, row=1, col=1,
                    hovertemplate="%{x}: %{y:.3s}B<extra>" + LABELS[p] + "</extra>")
        fig.add_scatter(name=LABELS[p], x=xs, y=bw, mode="lines+markers", line=dict(color=COLORS[p]), legendgroup=p,
                        showlegend=False, row=1, col=2, hovertemplate="%{x}: %{y:.4s} GB/s<extra>" + LABELS[p] + "</extra>")
    minimum = [traffic._compulsory(n, n, d, 4, 1) for n, d in sizes]
    fig.add_scatter(name="compulsory (Q, K, V, O once)", x=[f"{n}×{d}" for n, d in sizes], y=minimum, mode="markers",
                    marker=dict(symbol="line-ew-open", size=22, color="#000"), row=1, col=1)
    if copy:
        fig.add_hline(y=copy, line_dash="dot", line_color="#888", row=1, col=2,
                      annotation_text=f"measured copy bandwidth {copy:.0f} GB/s", annotation_position="bottom right")
    fig.update_yaxes(type="log", title="bytes", row=1, col=1)
    fig.update_yaxes(type="log", title="GB/s", row=1, col=2)
    fig.update_layout(barmode="group")
    return _finish(fig, doc, "Memory traffic: what each design asks for, and what it achieves", height=460)


def scaling(doc: dict, providers=("basic", "vectorized", "flash", "eager", "sdpa")) -> go.Figure:
    """Log-log time against sequence length (the ladder suite)."""
    fig = go.Figure()
    d = doc["records"][0]["shape"]["D"]
    for p in providers:
        rs = sorted(ok(doc["records"], provider=p), key=lambda r: r["shape"]["Nq"])
        fig.add_scatter(name=LABELS[p], x=[r["shape"]["Nq"] for r in rs], y=[r["p50"] for r in rs], mode="lines+markers",
                        line=dict(color=COLORS[p]), hovertemplate="N=%{x}: %{y:.4g} ms<extra>" + LABELS[p] + "</extra>")
        missing = [r for r in doc["records"] if r["provider"] == p and r["status"] != "ok"]
        if missing:
            n0 = min(r["shape"]["Nq"] for r in missing)
            fig.add_annotation(x=math.log10(n0), y=0, yref="paper", text=f"{p}: refused from N={n0}",
                               showarrow=False, font=dict(size=10, color=COLORS[p]), yshift=8)
    fig.update_xaxes(type="log", title=f"sequence length N (one head, D={d}, fp32)")
    fig.update_yaxes(type="log", title="median forward time (ms)")
    return _finish(fig, doc, "Scaling with sequence length (log–log)")


def roof_fractions(doc: dict, provider: str) -> dict[int, float]:
    """N -> achieved FLOP/s over the roof at that intensity (above 1: the cache served re-reads)."""
    c = doc["provenance"]["ceilings"]
    out = {}
    for r in ok(doc["records"], provider=provider):
        s = r["shape"]
        t = traffic.DESIGNS[provider](s["Nq"], s["Nk"], s["D"], elem_bytes=4, heads=s["B"] * s["H"])
        roof = min(c["copy_gbps"] * 1e9 * t.intensity, c["matmul_fp32_tflops"] * 1e12)
        out[s["Nq"]] = t.flops / (r["p50"] * 1e-3) / roof
    return dict(sorted(out.items()))


def roofline(doc: dict, providers=("basic", "vectorized", "flash", "eager")) -> go.Figure:
    """Achieved FLOP/s against arithmetic intensity (FLOPs per requested byte, from the model)."""
    c = doc["provenance"]["ceilings"]
    fig = go.Figure()
    for p in providers:
        xs, ys, text = [], [], []
        for r in sorted(ok(doc["records"], provider=p), key=lambda r: r["shape"]["Nq"]):
            s = r["shape"]
            t = traffic.DESIGNS[p](s["Nq"], s["Nk"], s["D"], elem_bytes=4, heads=s["B"] * s["H"])
            xs.append(t.intensity); ys.append(t.flops / (r["p50"] * 1e-3) / 1e12); text.append(f"N={s['Nq']}")
        fig.add_scatter(name=LABELS[p], x=xs, y=ys, text=text, mode="lines+markers", line=dict(color=COLORS[p]),
                        hovertemplate="%{text}: %{x:.3g} FLOP/B, %{y:.3g} TFLOP/s<extra>" + LABELS[p] + "</extra>")
    if c.get("copy_gbps") and c.get("matmul_fp32_tflops"):
        bw, peak = c["copy_gbps"] * 1e9, c["matmul_fp32_tflops"] * 1e12
        xs = [10 ** (i / 10) for i in range(-20, 41)]
        fig.add_scatter(name="roof: min(copy bandwidth × intensity, fp32 matmul rate)", x=xs,
                        y=[min(bw * x, peak) / 1e12 for x in xs], mode="lines", line=dict(color="#888", dash="dash"))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOPs per byte requested, model)")
    fig.update_yaxes(type="log", title="achieved TFLOP/s (FlashAttention convention)")
    return _finish(fig, doc, "Roofline: fp32, one head, the ladder's sizes")


# ----------------------------------------------------------------------------- post 3: production shapes

PROD_PROVIDERS = ["flash", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "eager"]


def production_tflops(docs: list[dict], direction="fwd", dtype="float16", providers=PROD_PROVIDERS) -> go.Figure:
    """TFLOP/s against N, one panel per (head dim, causal), every GPU's file overlaid."""
    panels = [(64, False), (64, True), (128, False), (128, True)]
    fig = make_subplots(rows=1, cols=4, shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"D={d}{', causal' if c else ''}" for d, c in panels])
    dashes = ["solid", "dash", "dot"]
    for gi, doc in enumerate(docs):
        gpu = benchdata.slug(doc["provenance"]["gpu"]).upper()
        for p in providers:
            for col, (d, causal) in enumerate(panels, 1):
                rs = sorted((r for r in ok(doc["records"], provider=p, direction=direction, dtype=dtype, causal=causal, D=d)
                             if r["shape"]["Hkv"] == r["shape"]["H"]), key=lambda r: r["shape"]["Nq"])
                name = LABELS[p] + (f" ({gpu})" if len(docs) > 1 else "")
                fig.add_scatter(name=name, legendgroup=name, showlegend=col == 1, x=[r["shape"]["Nq"] for r in rs],
                                y=[r["tflops"] for r in rs], mode="lines+markers",
                                line=dict(color=COLORS[p], dash=dashes[gi % 3]), row=1, col=col,
                                hovertemplate="N=%{x}: %{y:.0f} TFLOP/s<extra>" + name + "</extra>")
    fig.update_xaxes(type="log", tickvals=[1024, 2048, 4096, 8192, 16384], ticktext=["1k", "2k", "4k", "8k", "16k"])
    fig.update_yaxes(title="TFLOP/s", row=1, col=1, rangemode="tozero")
    word = "Forward" if direction == "fwd" else "Backward (dQ, dK, dV)"
    return _finish(fig, docs, f"{word}, {dtype}, B=4 (H=32 at D=64, H=16 at D=128)", height=420)


def production_ratio_table(doc: dict, dtype="float16") -> str:
    """HTML table: our TFLOP/s and its ratio to cuDNN and FA2 for every production shape."""
    idx = lookup(doc)
    rows = []
    with_graphs = any(r.get("graph_p50") for r in doc["records"] if r["provider"] == "flash" and r["dtype"] == dtype)
    shapes = sorted({(r["shape"]["H"], r["shape"]["Hkv"], r["shape"]["D"], r["causal"], r["shape"]["Nq"]) for r in doc["records"]
                     if r["dtype"] == dtype and r["shape"]["H"] == r["shape"]["Hkv"]})
    for h, hkv, d, causal, n in shapes:
        cells = [f"{d}", "yes" if causal else "no", f"{n // 1024}k"]
        for direction in ("fwd", "bwd"):
            get = lambda p: idx.get((p, direction, dtype, causal, 4, h, hkv, n, n, d))  # noqa: E731
            ours, cud, fa2 = get("flash"), get("sdpa-cudnn"), get("sdpa-flash")
            good = lambda r: r is not None and r["status"] == "ok"  # noqa: E731
            cells.append(f"{ours['tflops']:.0f}" if good(ours) else (ours or {}).get("status", "–"))
            cells.append(f"{ours['tflops'] / cud['tflops']:.2f}" if good(ours) and good(cud) else "–")
            cells.append(f"{ours['tflops'] / fa2['tflops']:.2f}" if good(ours) and good(fa2) else "–")
            if with_graphs:
                graph = good(ours) and ours.get("graph_p50") and good(cud) and cud.get("graph_p50")
                cells.append(f"{cud['graph_p50'] / ours['graph_p50']:.2f}" if graph else "")
        rows.append(cells)
    head = ("<tr><th rowspan=2>D</th><th rowspan=2>causal</th><th rowspan=2>N</th>"
            f"<th colspan={4 if with_graphs else 3}>forward</th><th colspan={4 if with_graphs else 3}>backward</th></tr>"
            + "<tr>" + ("<th>ours TFLOP/s</th><th>÷ cuDNN</th><th>÷ FA2</th>"
                        + ("<th>÷ cuDNN, graphs*</th>" if with_graphs else "")) * 2 + "</tr>")
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f'<table class="bench-table">{head}{body}</table>'
            f'<p class="bench-prov">{dtype}, B=4. '
            + ('* Where a call took under 0.3 ms, both were also timed as CUDA-graph replays, which remove host '
               'launch overhead: the ratio of those times. ' if with_graphs else '')
            + f'Measured on {html.escape(provenance_line(doc))}</p>')


def seed_table(doc: dict, providers=SEED_PROVIDERS + ["flash-tf32"]) -> str:
    """HTML table of the draft's sizes: median time per provider, errors and refusals named."""
    sizes = sorted({(r["shape"]["Nq"], r["shape"]["D"]) for r in doc["records"]})
    present = [p for p in providers if any(r["provider"] == p for r in doc["records"])]
    head = "<tr><th>seq × d</th>" + "".join(f"<th>{html.escape(LABELS[p])}</th>" for p in present) + "</tr>"
    body = []
    for n, d in sizes:
        cells = [f"{n}×{d}"]
        for p in present:
            rs = [r for r in doc["records"] if r["provider"] == p and r["shape"]["Nq"] == n and r["shape"]["D"] == d]
            if not rs:
                cells.append("–")
            elif rs[0]["status"] == "ok":
                r = rs[0]
                g = f" <small>(graph {fmt_ms(r['graph_p50'])})</small>" if r.get("graph_p50") else ""
                cells.append(f"{fmt_ms(r['p50'])}{g}")
            else:
                cells.append(f'<span title="{html.escape(rs[0]["reason"])}">{rs[0]["status"]}</span>')
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table class="bench-table">{head}{"".join(body)}</table>'
            f'<p class="bench-prov">Median of do_bench runs, fp32, one head. "graph": the same call replayed in a CUDA graph, '
            f'without launch overhead. Measured on {html.escape(provenance_line(doc))}</p>')


def median(doc: dict, provider: str, **match) -> float:
    """One record's median time (ms); KeyError, naming the case, if it did not run cleanly."""
    rs = ok(doc["records"], provider=provider, **match)
    if not rs:
        raise KeyError(f"no ok record for {provider} {match} in {doc['suite']}")
    return rs[0]["p50"]


def ratio_summary(doc: dict, direction: str, vs: str, min_n: int = 4096) -> tuple[float, float]:
    """(min, max) of ours / ``vs`` TFLOP/s over the non-GQA production shapes with N >= min_n."""
    idx = lookup(doc)
    ratios = []
    for key, r in idx.items():
        p, dr, dtype, causal, b, h, hkv, nq, nk, d = key
        if p == "flash" and dr == direction and h == hkv and nq >= min_n and r["status"] == "ok":
            other = idx.get((vs, dr, dtype, causal, b, h, hkv, nq, nk, d))
            if other and other["status"] == "ok":
                ratios.append(r["tflops"] / other["tflops"])
    if not ratios:
        raise KeyError(f"no comparable {direction} records against {vs}")
    return min(ratios), max(ratios)




# ----------------------------------------------------------------------------- post 4: the ablation

ABLATION_PANELS = [(128, False), (128, True), (64, False), (64, True)]


def ablation_rows(doc: dict, d: int, causal: bool) -> list[dict]:
    """The rung records of one ablation case, in ladder order, each with ``measured_speedup``
    (over the previous rung) and ``predicted_tflops`` (previous measurement × prediction)."""
    rs = sorted((r for r in doc["records"] if r.get("step") is not None and r["shape"]["D"] == d
                 and r["causal"] == causal), key=lambda r: r["step"])
    out, prev = [], None
    for r in rs:
        row = dict(r)
        good = r["status"] == "ok" and prev is not None and prev["status"] == "ok"
        row["measured_speedup"] = r["tflops"] / prev["tflops"] if good else None
        row["predicted_tflops"] = prev["tflops"] * r["predicted_speedup"] if good else None
        out.append(row)
        prev = r
    return out


def ablation_reference(doc: dict, provider: str, d: int, causal: bool) -> float | None:
    rs = ok(doc["records"], provider=provider, D=d, causal=causal)
    return rs[0]["tflops"] if rs else None


def ablation_ladder(doc: dict) -> go.Figure:
    """Bars: TFLOP/s after each rung; diamonds: what we predicted; lines: cuDNN and FA2."""
    titles = [f"D={d}, {'causal' if c else 'full'}" for d, c in ABLATION_PANELS]
    fig = make_subplots(rows=2, cols=2, shared_yaxes=True, vertical_spacing=0.2, horizontal_spacing=0.04,
                        subplot_titles=titles)
    for i, (d, causal) in enumerate(ABLATION_PANELS):
        row, col = i // 2 + 1, i % 2 + 1
        rows = ablation_rows(doc, d, causal)
        names = [r["provider"] for r in rows]
        fig.add_bar(name="measured", legendgroup="m", showlegend=i == 0, x=names,
                    y=[r["tflops"] if r["status"] == "ok" else None for r in rows], marker_color=COLORS["flash"],
                    customdata=[r["label"] for r in rows], row=row, col=col,
                    hovertemplate="%{customdata}: %{y:.0f} TFLOP/s<extra>measured</extra>")
        fig.add_scatter(name="predicted", legendgroup="p", showlegend=i == 0, x=names,
                        y=[r["predicted_tflops"] for r in rows], mode="markers",
                        marker=dict(symbol="diamond", size=10, color="#212121", line=dict(width=1, color="#fff")),
                        row=row, col=col, hovertemplate="predicted %{y:.0f} TFLOP/s<extra></extra>")
        for p in ("sdpa-cudnn", "sdpa-flash"):
            ref = ablation_reference(doc, p, d, causal)
            if ref is not None:
                fig.add_scatter(name=LABELS[p].replace("SDPA ", ""), legendgroup=p, showlegend=i == 0,
                                x=[names[0], names[-1]], y=[ref, ref],
                                mode="lines", line=dict(color=COLORS[p], dash="dash"), row=row, col=col,
                                hovertemplate=f"{LABELS[p]}: %{{y:.0f}} TFLOP/s<extra></extra>")
    fig.update_yaxes(title="TFLOP/s", col=1, rangemode="tozero")
    fig.update_xaxes(tickangle=-35, tickfont=dict(size=10))
    shape = next(r["shape"] for r in doc["records"])
    fig = _finish(fig, doc, f"Forward, one switch at a time: {doc['records'][0]['dtype']}, "
                  f"B={shape['B']}, N={shape['Nq']}", height=640)
    fig.update_layout(legend=dict(y=1.06))  # two rows of panels: keep the legend clear of the title
    return fig


def ablation_table(doc: dict) -> str:
    """HTML: each rung's measured speed-up over the previous rung, with the prediction, per case."""
    cases = [(d, c, {r["provider"]: r for r in ablation_rows(doc, d, c)}) for d, c in ABLATION_PANELS]
    rungs = ablation_rows(doc, *ABLATION_PANELS[0])
    head = "<tr><th>step</th>" + "".join(f"<th>D={d}, {'causal' if c else 'full'}</th>" for d, c, _ in cases) + "</tr>"
    body = []
    for r in rungs:
        cells = [f"<td><code>{html.escape(r['provider'])}</code><br><small>{html.escape(r['label'])}</small></td>"]
        for _, _, by_name in cases:
            x = by_name.get(r["provider"])
            if x is None or x["measured_speedup"] is None:
                cells.append("<td>" + (f"{x['tflops']:.0f} TFLOP/s" if x and x["status"] == "ok" else "–") + "</td>")
                continue
            miss = ' class="miss"' if abs(x["measured_speedup"] / x["predicted_speedup"] - 1) > 0.1 else ""
            cells.append(f"<td{miss}>{x['measured_speedup']:.2f}× <small>(predicted {x['predicted_speedup']:.2f}×)"
                         "</small></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="bench-table">{head}{"".join(body)}</table>'
            '<p class="bench-prov">Measured speed-up of each step over the step before it (ratio of median times), '
            'with the prediction written before the run. The first row gives the starting throughput. Highlighted: '
            f'measurements more than 10% away from the prediction. Measured on {html.escape(provenance_line(doc))}</p>')


def round_spread(records) -> list[float]:
    """Per ok record timed in several rounds: slowest round median / fastest round median - 1."""
    return [max(r["round_p50"]) / min(r["round_p50"]) - 1 for r in records
            if r["status"] == "ok" and len(r.get("round_p50") or []) > 1]


# ----------------------------------------------------------------------------- post 4: warp specialisation

_PTX_KEYS = ("registers", "shared_bytes", "ptx_lines", "ptx_wgmma", "ptx_ex2", "ptx_fma_f32", "ptx_mul_f32")


def warpspec_pairs(doc: dict) -> list[dict]:
    """Each tile with the loop's warp_specialize flag off and on, per case: TFLOP/s, status,
    whether the two compiled kernels match in every counted property, setmaxnreg count."""
    by = {(r["shape"]["D"], r["causal"], r["provider"]): r for r in doc["records"]}
    out = []
    for (d, causal, name), plain in sorted(by.items(), key=lambda kv: (-kv[0][0], kv[0][1], kv[0][2])):
        if not name.endswith("-plain"):
            continue
        ws = by.get((d, causal, name[: -len("-plain")] + "-ws"))
        if ws is None:
            continue
        same = (plain.get("compiler") is not None and ws.get("compiler") is not None
                and all(plain["compiler"].get(k) == ws["compiler"].get(k) for k in _PTX_KEYS))
        ref = {p: ablation_reference(doc, p, d, causal) for p in ("flash", "sdpa-cudnn")}
        out.append(dict(D=d, causal=causal, tile=plain["config"], plain=plain, ws=ws, same_code=same,
                        setmaxnreg=(ws.get("compiler") or {}).get("ptx_setmaxnreg"), flash=ref["flash"],
                        cudnn=ref["sdpa-cudnn"]))
    return out


def warpspec_table(doc: dict) -> str:
    """HTML: the descriptor kernel with warp specialisation off and on, beside flash_attention and cuDNN."""
    head = ("<tr><th>case</th><th>tile</th><th>plain</th><th>warp-specialised</th><th>same compiled code?</th>"
            "<th><code>setmaxnreg</code> in PTX</th></tr>")
    body = []
    for p in warpspec_pairs(doc):
        t = p["tile"]

        def cell(r):
            return f"{r['tflops']:.0f}" if r["status"] == "ok" else f"<em>{html.escape(r['status'])}</em>"
        same = "yes" if p["same_code"] else ("–" if p["ws"]["status"] != "ok" else "no")
        body.append(f"<tr><td>D={p['D']}, {'causal' if p['causal'] else 'full'}<br><small>flash_attention "
                    f"{p['flash']:.0f}, cuDNN {p['cudnn']:.0f}</small></td>"
                    f"<td>{t['BLOCK_M']}×{t['BLOCK_N']}, {t['num_warps']} warps</td><td>{cell(p['plain'])}</td>"
                    f"<td>{cell(p['ws'])}</td><td>{same}</td>"
                    f"<td>{'–' if p['setmaxnreg'] is None else p['setmaxnreg']}</td></tr>")
    return (f'<table class="bench-table">{head}{"".join(body)}</table>'
            '<p class="bench-prov">Forward TFLOP/s (median of 3 interleaved rounds). "Same compiled code": equal '
            'registers, shared memory, PTX line count and counts of wgmma, ex2, fma and mul. <code>setmaxnreg</code> '
            'is the instruction specialised warp groups use to trade registers; none means no split. '
            f'Measured on {html.escape(provenance_line(doc))}</p>')


def compiler_table(doc: dict, d: int = 128, causal: bool = False) -> str:
    """HTML: what the compiler made of each rung (registers, spills, shared memory, PTX counts)."""
    cols = [("tile", None), ("registers / thread", "registers"), ("spills", "spills"),
            ("shared memory", "shared_bytes"), ("wgmma", "ptx_wgmma"), ("ex2", "ptx_ex2"),
            ("mul.f32", "ptx_mul_f32"), ("fma.f32", "ptx_fma_f32")]
    head = "<tr><th>step</th>" + "".join(f"<th>{c}</th>" for c, _ in cols) + "</tr>"
    body = []
    for r in ablation_rows(doc, d, causal):
        rep, cfg = r.get("compiler") or {}, r.get("config") or {}
        tile = (f"{cfg.get('BLOCK_M')}×{cfg.get('BLOCK_N')}, {cfg.get('num_warps')} warps, "
                f"{cfg.get('num_stages')} stages") if cfg else "–"
        cells = [f"<code>{html.escape(r['provider'])}</code>", tile]
        for _, key in cols[1:]:
            v = rep.get(key)
            cells.append("–" if v is None else f"{v / 1024:.0f} KB" if key == "shared_bytes" else str(v))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table class="bench-table">{head}{"".join(body)}</table>'
            f'<p class="bench-prov">D={d}, {"causal" if causal else "full"}. Registers and spills from the compiled '
            'kernel; instruction counts are static counts in the PTX (code size, not executed instructions). '
            f'Measured on {html.escape(provenance_line(doc))}</p>')


# ----------------------------------------------------------------------------- explanatory figures

def address_grid(n: int = 6, d: int = 5, stride_n: int | None = None) -> go.Figure:
    """The (BLOCK_N, BLOCK_D) grid of element offsets that ``n[:, None] * stride + d[None, :]`` builds."""
    import torch

    block_n, block_d = 1 << (n - 1).bit_length(), 1 << (d - 1).bit_length()
    stride_n = stride_n or d
    offs_n, offs_d = torch.arange(block_n), torch.arange(block_d)
    offsets = offs_n[:, None] * stride_n + offs_d[None, :]  # the same broadcast the kernel does
    mask = (offs_n[:, None] < n) & (offs_d[None, :] < d)
    z = torch.where(mask, offsets, torch.full_like(offsets, -1)).tolist()
    text = [[str(o) if m else "masked" for o, m in zip(row_o, row_m)] for row_o, row_m in zip(offsets.tolist(), mask.tolist())]
    fig = go.Figure(go.Heatmap(
        z=z, text=text, texttemplate="%{text}", textfont=dict(size=11), showscale=False, xgap=2, ygap=2,
        colorscale=[[0, "#bdbdbd"], [1e-9, "#c5cae9"], [1, "#3f51b5"]], zmin=-1,
        hovertemplate="key n=%{y}, feature d=%{x}: offset %{text}<extra></extra>",
        x=[f"d={i}" for i in range(block_d)], y=[f"n={i}" for i in range(block_n)]))
    fig.update_yaxes(autorange="reversed", title=f"offs_n[:, None]  (keys, padded {n} → {block_n})")
    fig.update_xaxes(title=f"offs_d[None, :]  (features, padded {d} → {block_d})")
    fig.update_layout(title=dict(text=f"K offsets = offs_n[:, None] × {stride_n} + offs_d[None, :]  (grey: masked, never loaded)",
                                 x=0.01, font=dict(size=14)),
                      height=130 + 34 * block_n, margin=dict(l=60, r=20, t=50, b=60),
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return fig


def causal_tiles(n: int = 512, block_m: int = 128, block_n: int = 64) -> go.Figure:
    """Which (query tile, key tile) pairs the causal forward computes unmasked, masked, or skips."""
    tm, tn = -(-n // block_m), -(-n // block_n)
    z, text = [], []
    for i in range(tm):
        row, trow = [], []
        lo_row, hi_row = i * block_m, min(n, (i + 1) * block_m) - 1
        for j in range(tn):
            lo_col, hi_col = j * block_n, min(n, (j + 1) * block_n) - 1
            if hi_col <= lo_row:
                row.append(2); trow.append("full, no mask")
            elif lo_col <= hi_row:
                row.append(1); trow.append("diagonal, masked")
            else:
                row.append(0); trow.append("skipped")
        z.append(row); text.append(trow)
    fig = go.Figure(go.Heatmap(z=z, text=text, showscale=False, xgap=2, ygap=2, zmin=0, zmax=2,
                               colorscale=[[0, "#eeeeee"], [0.5, "#ff9800"], [1, "#3f51b5"]],
                               hovertemplate="query tile %{y}, key tile %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title=f"query tile (BLOCK_M={block_m})")
    fig.update_xaxes(title=f"key tile (BLOCK_N={block_n})")
    fig.update_layout(title=dict(text=f"Causal, N={n}: blue computed without masks, orange masked, grey skipped",
                                 x=0.01, font=dict(size=14)), height=360, margin=dict(l=60, r=20, t=50, b=60),
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return fig
