"""The site's Plotly figures, built from benchmark records (and two explanatory diagrams).

Every figure uses the one ``blog`` template, takes its panels, sizes and captions from
the records it draws, and keeps in ``layout.meta`` what the page needs besides the plot:
the provenance lines (shown as a caption), a short title for phones, and the facet grid
that ``charts.js`` reflows on a narrow screen. Faceting is done with ``make_subplots``
rather than plotly.express: the facets here hold several trace kinds (bars, markers,
reference lines) and a GPU/dtype control, which plotly.express does not build, and it
would add pandas to the site's dependencies.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from perfdata import traffic

from . import fmt, query, theme
from .theme import CELL_TEXT, CELLS, TEMPLATE_NAME, color, label, mark_color, short_label

PANEL_HEIGHT = 300  # px per row of facets; charts.js adds rows of this height when it reflows


# ----------------------------------------------------------------------------- shared pieces

def _failure_notes(views: list[tuple[str, list[dict]]], providers) -> list[str]:
    """One line per provider and reason for records that have no point in the chart, naming
    the sizes per view (a view: one GPU and dtype of a chart with buttons; unnamed otherwise)."""
    where: dict[tuple, dict[str, set]] = {}
    for view, records in views:
        for r in records:
            if r["status"] != "ok" and r["provider"] in providers:
                key = (r["provider"], r["status"], r.get("reason") or "no reason recorded")
                where.setdefault(key, {}).setdefault(view, set()).add(r["shape"]["Nq"])
    return [f"{label(p)}: {status} ({reason}), "
            + "; ".join(f"{view + ' ' if view else ''}at N = {', '.join(str(n) for n in sorted(ns))}"
                        for view, ns in by_view.items())
            for (p, status, reason), by_view in where.items()]


def _finish(fig: go.Figure, docs: list[dict], title: str, *, short_title: str | None = None,
            height: int = 450, facets: dict | None = None, notes: list[str] = ()) -> go.Figure:
    shown = {t.name for t in fig.data if t.name and t.showlegend is not False and t.visible is not False}
    # Data from different commits drawn together: the first note says so, so a code difference
    # does not read as a GPU difference.
    mixed = query.commit_note(docs)
    meta = {"short_title": short_title or title, "provenance": [query.provenance_line(d) for d in docs],
            "legend_entries": len(shown), "notes": ([mixed] if mixed else []) + list(notes)}
    if facets:
        meta["facets"] = facets
    fig.update_layout(template=TEMPLATE_NAME, title_text=title, height=height, meta=meta)
    return fig


def _facets(titles: list[str], cols: int, *, shared_y: bool = True, gap: float = 0.05) -> tuple[go.Figure, dict]:
    """Empty panels in a grid, titled by annotations tied to each panel's own domain, so
    they follow the panel when charts.js reflows the grid on a phone."""
    if not titles:
        raise ValueError("no panels to draw: the records hold no case for this figure")
    cols = max(1, min(cols, len(titles)))
    rows = math.ceil(len(titles) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=shared_y, horizontal_spacing=gap,
                        vertical_spacing=0.22 if rows > 1 else 0.1)
    for i, text in enumerate(titles):
        suffix = "" if i == 0 else str(i + 1)
        fig.add_annotation(text=f"<b>{text}</b>", xref=f"x{suffix} domain", yref=f"y{suffix} domain", x=0.5, y=1,
                           yanchor="bottom", yshift=4, showarrow=False, font=dict(size=12, color=color("text")))
    grid = {"rows": rows, "cols": cols, "panels": len(titles), "narrow_cols": 1 if cols <= 2 else 2,
            "panel_height": PANEL_HEIGHT}
    return fig, grid


def _reference_line(fig: go.Figure, y: float, text: str, *, log: bool, axis: str = "") -> None:
    """A horizontal reference line across one panel with its label sitting on the line.

    Shapes take data values on a log axis, but annotations take log10 of them: passing
    ``y`` to both would draw the label at 10^y.
    """
    fig.add_shape(type="line", xref=f"x{axis} domain", yref=f"y{axis}", x0=0, x1=1, y0=y, y1=y,
                  line=dict(color=color("reference"), dash="dot", width=1.5))
    fig.add_annotation(text=text, xref=f"x{axis} domain", yref=f"y{axis}", x=1, xanchor="right",
                       y=math.log10(y) if log else y, yanchor="bottom", showarrow=False,
                       font=dict(color=color("muted"), size=11))


def log_ticks(values, label=lambda v: f"{v:g}") -> dict:
    """Tick values and labels for a log axis over ``values``: decades when the data span 2.5
    decades or more, else 1, 2 and 5 of each decade, every one labelled in full ("0.5", "1", "2").
    Left to itself Plotly labels the ticks between decades with their leading digit alone, so
    an axis read "5 2 10 5 2 1 5"."""
    positive = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    if not positive:
        raise ValueError("log_ticks: no positive value to tick")
    lo, hi = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    hi = max(hi, lo + 1)
    steps = (1,) if math.log10(max(positive) / min(positive)) >= 2.5 else (1, 2, 5)
    vals = [float(f"{m}e{k}") for k in range(lo, hi + 1) for m in steps if float(f"{m}e{k}") <= 10.0 ** hi]
    return dict(tickmode="array", tickvals=vals, ticktext=[label(v) for v in vals])


def byte_label(n: float) -> str:
    """A byte count as a tick label: "100 kB", "1 GB" (decimal units, as the hovers' SI prefixes)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n:g} B"


def _size_label(record: dict) -> str:
    return f"{record['shape']['Nq']}×{record['shape']['D']}"


def _sizes(records: list[dict]) -> list[tuple[int, int]]:
    return query.distinct(records, "Nq", "D")


def _providers(records: list[dict], wanted) -> list[str]:
    """``wanted`` if given (each must be in the data), else every provider in the records."""
    present = list(dict.fromkeys(r["provider"] for r in records))
    if wanted is None:
        return present
    missing = [p for p in wanted if p not in present]
    if missing:
        raise ValueError(f"providers {missing} are not in the data; present: {present}")
    return list(wanted)


def _one_dtype(records: list[dict]) -> str:
    dtypes = [d for (d,) in query.distinct(records, "dtype")]
    if len(dtypes) != 1:
        raise ValueError(f"this figure models one dtype at a time; the records hold {dtypes}")
    return dtypes[0]


def _dtype_caption(records: list[dict]) -> str:
    return ", ".join(d for (d,) in query.distinct(records, "dtype"))


# ----------------------------------------------------------------------------- post 2: the draft's sizes

def seed_comparison(doc: dict, providers=None) -> go.Figure:
    """Grouped bars: median time per provider at each size (log scale), p20–p80 as error bars."""
    records = doc["records"]
    fig = go.Figure()
    for p in _providers(records, providers):
        rs = sorted(query.ok(records, provider=p), key=lambda r: (r["shape"]["Nq"], r["shape"]["D"]))
        fig.add_bar(name=label(p), x=[_size_label(r) for r in rs], y=[r["p50"] for r in rs],
                    marker_color=mark_color(p), text=[fmt.ms(r["p50"]) for r in rs], textposition="none",
                    error_y=dict(type="data", array=[r["p80"] - r["p50"] for r in rs],
                                 arrayminus=[r["p50"] - r["p20"] for r in rs], thickness=1),
                    hovertemplate="%{text}<extra>" + label(p) + "</extra>")
    order = [f"{n}×{d}" for n, d in _sizes(records)]
    common = query.shape_caption(records, skip=("Nq", "Nk", "D", "Hkv"))
    fig.update_xaxes(title=f"sequence length × head dim ({common}, {_dtype_caption(records)})",
                     categoryorder="array", categoryarray=order)
    fig.update_yaxes(type="log", dtick=1, title="median time (ms, log; bars: p20–p80)")
    fig.update_layout(barmode="group")
    return _finish(fig, [doc], "Forward time at each size", short_title="Forward time",
                   notes=_failure_notes([("", records)], _providers(records, providers)))


def seed_speedup(doc: dict, baseline: str = "eager", providers=None) -> go.Figure:
    """Speed-up over ``baseline`` (>1 is faster) per provider and size, log scale."""
    records = doc["records"]
    base = {_size_label(r): r["p50"] for r in query.ok(records, provider=baseline)}
    if not base:
        raise ValueError(f"baseline {baseline!r} has no ok record in {doc['suite']}")
    fig = go.Figure()
    for p in _providers(records, providers):
        if p == baseline:
            continue
        rs = [r for r in sorted(query.ok(records, provider=p), key=lambda r: (r["shape"]["Nq"], r["shape"]["D"]))
              if _size_label(r) in base]
        fig.add_scatter(name=label(p), x=[_size_label(r) for r in rs], y=[base[_size_label(r)] / r["p50"] for r in rs],
                        mode="lines+markers", line=dict(color=mark_color(p)),
                        hovertemplate="%{y:.3g}×<extra>" + label(p) + "</extra>")
    _reference_line(fig, 1, f"as fast as {label(baseline)}", log=True)
    fig.update_yaxes(type="log", dtick=1, title=f"speed-up over {label(baseline)} (log; >1 is faster)")
    fig.update_xaxes(title="sequence length × head dim")
    return _finish(fig, [doc], f"Speed-up over {label(baseline)}", short_title="Speed-up")


def memory_traffic(doc: dict, providers=None) -> go.Figure:
    """Model bytes per design (bars) and the bandwidth they imply at the measured time (markers)."""
    records = doc["records"]
    chosen = [p for p in _providers(records, providers) if p in traffic.DESIGNS]
    fig, grid = _facets(["requested bytes (model)", "requested bytes ÷ measured time"], cols=2, shared_y=False,
                        gap=0.14)
    e = traffic.element_bytes(_one_dtype(records))
    shapes = query.distinct(records, "Nq", "Nk", "D", "B", "H")
    xs = [f"{nq}×{d}" for nq, _, d, _, _ in shapes]
    for p in chosen:
        model, bandwidth = [], []
        for nq, nk, d, b, h in shapes:
            t = traffic.DESIGNS[p](nq, nk, d, elem_bytes=e, heads=b * h)
            rs = query.ok(records, provider=p, Nq=nq, Nk=nk, D=d, B=b, H=h)
            model.append(t.bytes_total)
            bandwidth.append(t.bytes_total / (rs[0]["p50"] * 1e-3) / 1e9 if rs else None)
        fig.add_bar(name=label(p), x=xs, y=model, marker_color=mark_color(p), legendgroup=p, row=1, col=1,
                    hovertemplate="%{y:.3s}B<extra>" + label(p) + "</extra>")
        fig.add_scatter(name=label(p), x=xs, y=bandwidth, mode="lines+markers", line=dict(color=mark_color(p)),
                        legendgroup=p, showlegend=False, row=1, col=2,
                        hovertemplate="%{y:.4s} GB/s<extra>" + label(p) + "</extra>")
    fig.add_scatter(name="compulsory (Q, K, V, O once)", x=xs,
                    y=[traffic.compulsory_bytes(nq, nk, d, elem_bytes=e, heads=b * h) for nq, nk, d, b, h in shapes],
                    mode="markers", marker=dict(symbol="line-ew-open", size=22, color=color("reference"),
                                                line=dict(width=2)),
                    row=1, col=1, hovertemplate="%{y:.3s}B<extra>compulsory</extra>")
    copy = doc["provenance"]["ceilings"].get("copy_gbps")
    if copy:
        _reference_line(fig, copy, f"measured copy bandwidth {copy:.0f} GB/s", log=True, axis="2")
    # Bytes in units ("1 GB"): Plotly's own exponent format printed 1e9 as "1B", a billion.
    requested = [y for trace in fig.data if trace.yaxis in (None, "y") for y in trace.y]
    fig.update_yaxes(type="log", title="bytes", row=1, col=1, **log_ticks(requested, byte_label))
    fig.update_yaxes(type="log", dtick=1, title="GB/s", row=1, col=2)
    fig.update_xaxes(title="sequence length × head dim")
    fig.update_layout(barmode="group")
    return _finish(fig, [doc], "Memory traffic: what each design asks for, and what it achieves",
                   short_title="Memory traffic", height=480, facets=grid)


def scaling(doc: dict, providers=None) -> go.Figure:
    """Log-log median time against sequence length; where a provider stopped, and why, is marked."""
    records = doc["records"]
    fig = go.Figure()
    for p in _providers(records, providers):
        rs = sorted(query.ok(records, provider=p), key=lambda r: r["shape"]["Nq"])
        fig.add_scatter(name=label(p), x=[r["shape"]["Nq"] for r in rs], y=[r["p50"] for r in rs],
                        mode="lines+markers", line=dict(color=mark_color(p)),
                        hovertemplate="%{y:.4g} ms<extra>" + label(p) + "</extra>")
        failed = sorted((r for r in records if r["provider"] == p and r["status"] != "ok"),
                        key=lambda r: r["shape"]["Nq"])
        if failed:
            first = failed[0]
            # x on a log axis: annotations take log10 of the value.
            fig.add_annotation(x=math.log10(first["shape"]["Nq"]), y=0, yref="paper", yanchor="bottom", yshift=6,
                               text=f"{label(p)}: {first['status']} from N={first['shape']['Nq']}",
                               hovertext=first["reason"], showarrow=False, font=dict(size=11, color=mark_color(p)))
    common = query.shape_caption(records, skip=("Nq", "Nk", "Hkv"))
    fig.update_xaxes(type="log", dtick=1, title=f"sequence length N ({common}, {_dtype_caption(records)})")
    fig.update_yaxes(type="log", dtick=1, title="median forward time (ms)")
    return _finish(fig, [doc], "Scaling with sequence length (log–log)", short_title="Scaling with N",
                   notes=_failure_notes([("", records)], _providers(records, providers)))


def roofline(doc: dict, providers=None) -> go.Figure:
    """Achieved FLOP/s against arithmetic intensity (FLOPs per requested byte, from the model)."""
    records = doc["records"]
    c = doc["provenance"]["ceilings"]
    e = traffic.element_bytes(_one_dtype(records))
    fig = go.Figure()
    for p in [p for p in _providers(records, providers) if p in traffic.DESIGNS]:
        xs, ys, text = [], [], []
        for r in sorted(query.ok(records, provider=p), key=lambda r: r["shape"]["Nq"]):
            s = r["shape"]
            t = traffic.DESIGNS[p](s["Nq"], s["Nk"], s["D"], elem_bytes=e, heads=s["B"] * s["H"])
            xs.append(t.intensity)
            ys.append(t.flops / (r["p50"] * 1e-3) / 1e12)
            text.append(f"N={s['Nq']}")
        fig.add_scatter(name=label(p), x=xs, y=ys, text=text, mode="lines+markers", line=dict(color=mark_color(p)),
                        hovertemplate="%{text}: %{x:.3g} FLOP/B, %{y:.3g} TFLOP/s<extra>" + label(p) + "</extra>")
    dtype = _one_dtype(records)
    peak = query.matmul_ceiling(doc, dtype)
    if c.get("copy_gbps") and peak:
        bw, peak = c["copy_gbps"] * 1e9, peak * 1e12
        xs = [10 ** (i / 10) for i in range(-20, 41)]
        fig.add_scatter(name=f"roof: min(copy bandwidth × intensity, {dtype} matmul rate)", x=xs,
                        y=[min(bw * x, peak) / 1e12 for x in xs], mode="lines", hoverinfo="skip",
                        line=dict(color=color("reference"), dash="dash"))
    fig.update_xaxes(type="log", dtick=1, title="arithmetic intensity (FLOPs per byte requested, model)")
    fig.update_yaxes(type="log", dtick=1, title="achieved TFLOP/s (FlashAttention convention)")
    fig.update_layout(hovermode="closest")  # x differs per point here: one x does not line the series up
    common = query.shape_caption(records, skip=("Nq", "Nk", "D", "Hkv"))
    return _finish(fig, [doc], f"Roofline: {_dtype_caption(records)}, {common}",
                   short_title="Roofline")


# ----------------------------------------------------------------------------- post 3: production shapes

def production_tflops(docs: list[dict], direction: str = "fwd", providers=None) -> go.Figure:
    """TFLOP/s against N, one panel per (head dim, causal), for one GPU and dtype at a time;
    buttons pick the GPU and dtype. Grouped-query cases (Hkv < H) and decoding cases (Nq = 1 against
    a long Nk) are left to the tables."""
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
    if not docs:
        raise ValueError("no production documents to draw")
    views = []  # (button label, doc, dtype, records)
    for doc in docs:
        records = [r for r in query.square(doc["records"])
                   if r["direction"] == direction and r["shape"]["H"] == r["shape"]["Hkv"]]
        for dtype in dict.fromkeys(r["dtype"] for r in records):  # in the order the benchmark ran them
            chosen = [r for r in records if r["dtype"] == dtype]
            views.append((f"{query.gpu_label(doc)} · {dtype}", doc, dtype, chosen))
    if not views:
        raise ValueError(f"no {direction} records without grouped-query heads to draw")
    every = [r for _, _, _, rs in views for r in rs]
    cases = query.panels(every)
    titles = []
    for d, causal in cases:
        heads = query.distinct([r for r in every if r["shape"]["D"] == d and r["causal"] == causal], "H")
        titles.append(f"D={d}{', causal' if causal else ''}" + (f" · H={heads[0][0]}" if len(heads) == 1 else ""))
    fig, grid = _facets(titles, cols=4, gap=0.03)
    wanted = _providers(every, providers) if providers is not None else [
        p for p in dict.fromkeys(r["provider"] for r in every if r["status"] == "ok")]
    word = "Forward" if direction == "fwd" else "Backward (dQ, dK, dV)"
    visibility, view_titles = [], []
    for vi, (name, doc, dtype, records) in enumerate(views):
        for p in wanted:
            in_legend = True
            for i, (d, causal) in enumerate(cases):
                rs = sorted(query.ok(records, provider=p, D=d, causal=causal), key=lambda r: r["shape"]["Nq"])
                if not rs:
                    continue  # this GPU or dtype lacks the panel, or the provider failed in all of it
                fig.add_scatter(name=label(p), legendgroup=p, showlegend=in_legend, visible=vi == 0,
                                x=[r["shape"]["Nq"] for r in rs], y=[r["tflops"] for r in rs], mode="lines+markers",
                                line=dict(color=mark_color(p)), row=i // grid["cols"] + 1, col=i % grid["cols"] + 1,
                                hovertemplate="%{y:.0f} TFLOP/s<extra>" + label(p) + "</extra>")
                visibility.append(vi)
                in_legend = False
        view_titles.append(f"{word}, {dtype}, {query.shape_caption(records, skip=('Nq', 'Nk', 'D', 'H', 'Hkv'))}"
                           f" on the {query.gpu_label(doc)}")
    ns = [n for (n,) in query.distinct(every, "Nq")]
    fig.update_xaxes(type="log", tickvals=ns, ticktext=[fmt.size(n) for n in ns], title="N")
    fig.update_yaxes(title="TFLOP/s", col=1, rangemode="tozero")
    if len(views) > 1:
        fig.update_layout(updatemenus=[dict(
            type="buttons", direction="right", x=0, xanchor="left", y=1, yanchor="bottom", pad=dict(b=28),
            showactive=True, active=0,
            buttons=[dict(label=name, method="update",
                          args=[{"visible": [v == vi for v in visibility]}, {"title.text": view_titles[vi]}])
                     for vi, (name, _, _, _) in enumerate(views)])])
    notes = []  # the kernel-choice note (query.dispatch_note) is said once per page, by the page
    notes += _failure_notes([(name, records) for name, _, _, records in views], wanted)
    fig = _finish(fig, docs, view_titles[0], short_title=f"{word.split(' ')[0]} TFLOP/s",
                  height=PANEL_HEIGHT * grid["rows"] + 200, facets=grid, notes=notes)
    fig.update_layout(margin=dict(t=120 if len(views) > 1 else 80))
    return fig


# ----------------------------------------------------------------------------- post 4: the ablation

def ablation_ladder(doc: dict) -> go.Figure:
    """Bars: TFLOP/s after each rung; diamonds: what we predicted; dashed: the reference backends."""
    cases = query.ablation_cases(doc)
    fig, grid = _facets([f"D={d}, {'causal' if c else 'full'}" for d, c in cases], cols=2, gap=0.05)
    references = [p for p in dict.fromkeys(r["provider"] for r in doc["records"] if r.get("step") is None)]
    for i, (d, causal) in enumerate(cases):
        row, col = i // grid["cols"] + 1, i % grid["cols"] + 1
        rows = query.ablation_rows(doc, d, causal)
        names = [r["provider"] for r in rows]
        fig.add_bar(name="measured", legendgroup="measured", showlegend=i == 0, x=names,
                    y=[r["tflops"] if r["status"] == "ok" else None for r in rows], marker_color=mark_color("flash"),
                    customdata=[r["label"] for r in rows], row=row, col=col,
                    hovertemplate="%{customdata}: %{y:.0f} TFLOP/s<extra>measured</extra>")
        fig.add_scatter(name="predicted", legendgroup="predicted", showlegend=i == 0, x=names,
                        y=[r["predicted_tflops"] for r in rows], mode="markers",
                        marker=dict(symbol="diamond", size=10, color=color("reference")),
                        row=row, col=col, hovertemplate="%{y:.0f} TFLOP/s<extra>predicted</extra>")
        for p in references:
            ref = query.ablation_reference(doc, p, d, causal)
            if ref is not None:
                fig.add_scatter(name=label(p), legendgroup=p, showlegend=i == 0, x=[names[0], names[-1]], y=[ref, ref],
                                mode="lines", line=dict(color=mark_color(p), dash="dash"), row=row, col=col,
                                hovertemplate="%{y:.0f} TFLOP/s<extra>" + label(p) + "</extra>")
    fig.update_yaxes(title="TFLOP/s", col=1, rangemode="tozero")
    fig.update_xaxes(tickfont=dict(size=10), title="step")
    rungs = [r for r in doc["records"] if r.get("step") is not None]
    return _finish(fig, [doc], f"Forward, one switch at a time: {_dtype_caption(rungs)}, "
                   f"{query.shape_caption(rungs, skip=('Nk', 'Hkv', 'D', 'H'))}",
                   short_title="One switch at a time", height=PANEL_HEIGHT * grid["rows"] + 260, facets=grid)


def hopper_variants(doc: dict) -> go.Figure:
    """Post 5: TFLOP/s of each Gluon variant (bars) beside the pointer kernel, cuDNN and FA4 (dashed)."""
    cases = query.hopper_cases(doc)
    fig, grid = _facets([f"D={d}, {'causal' if c else 'full'}" for d, c in cases], cols=2, gap=0.05)
    for i, (d, causal) in enumerate(cases):
        row, col = i // grid["cols"] + 1, i % grid["cols"] + 1
        rows = query.hopper_rows(doc, d, causal)
        ours = [r for r in rows if r["provider"].startswith("gluon-")]
        names = [short_label(r["provider"]) for r in ours]
        ys = [r["tflops"] if r["status"] == "ok" else None for r in ours]
        spans = [query.tflops_range(r) if r["status"] == "ok" else (None, None) for r in ours]
        fig.add_bar(name="Gluon kernel", legendgroup="gluon", showlegend=i == 0, x=names, y=ys,
                    marker_color=mark_color("gluon"), customdata=[label(r["provider"]) for r in ours],
                    # whiskers: the slowest and fastest of the timing rounds
                    error_y=dict(type="data", symmetric=False, color=mark_color("reference"), thickness=1.2,
                                 array=[hi - y if y else None for y, (lo, hi) in zip(ys, spans)],
                                 arrayminus=[y - lo if y else None for y, (lo, hi) in zip(ys, spans)]),
                    row=row, col=col, hovertemplate="%{customdata}: %{y:.0f} TFLOP/s<extra></extra>")
        for r in rows:
            if r["provider"].startswith("gluon-") or r["status"] != "ok":
                continue
            p = r["provider"]
            fig.add_scatter(name=label(p), legendgroup=p, showlegend=i == 0, x=[names[0], names[-1]],
                            y=[r["tflops"]] * 2, mode="lines", line=dict(color=mark_color(p), dash="dash"),
                            row=row, col=col, hovertemplate="%{y:.0f} TFLOP/s<extra>" + label(p) + "</extra>")
    fig.update_yaxes(title="TFLOP/s", col=1, rangemode="tozero")
    fig.update_xaxes(tickfont=dict(size=10))
    missing = _failure_notes([("", doc["records"])], {r["provider"] for r in doc["records"]})
    missing.append("Whiskers: the slowest and the fastest timing round of each bar; dashed lines: the other kernels "
                   "in the same run.")
    return _finish(fig, [doc], f"The Gluon kernel's switches: {_dtype_caption(doc['records'])}, "
                   f"{query.shape_caption(doc['records'], skip=('Nk', 'Hkv', 'D', 'H'))}",
                   short_title="The Gluon kernel's switches", height=PANEL_HEIGHT * grid["rows"] + 260,
                   facets=grid, notes=missing)


# ----------------------------------------------------------------------------- explanatory figures

def _diagram(fig: go.Figure, title: str, short_title: str, height: int, *, subtitle: str | None = None) -> go.Figure:
    """A diagram's layout. Its colour key goes in ``subtitle``, a line of its own under the
    title: on one line with the title it ran under the modebar."""
    fig.update_layout(template=TEMPLATE_NAME, title_text=title, height=height, hovermode="closest",
                      meta={"short_title": short_title})
    if subtitle:
        fig.update_layout(title_subtitle=dict(text=subtitle, font=dict(size=11)), margin=dict(t=90))
    return fig


def address_grid(n: int = 6, d: int = 5, stride_n: int | None = None) -> go.Figure:
    """The (BLOCK_N, BLOCK_D) grid of element offsets that ``n[:, None] * stride + d[None, :]`` builds."""
    for name, value in (("n", n), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    block_n, block_d = 1 << (n - 1).bit_length(), 1 << (d - 1).bit_length()
    stride_n = stride_n or d
    loaded = [[i < n and j < d for j in range(block_d)] for i in range(block_n)]
    text = [[str(i * stride_n + j) if loaded[i][j] else "masked" for j in range(block_d)] for i in range(block_n)]
    fig = go.Figure(go.Heatmap(
        z=[[1 if x else 0 for x in row] for row in loaded], text=text, texttemplate="%{text}",
        textfont=dict(size=11, color=CELL_TEXT), showscale=False, xgap=2, ygap=2, zmin=0, zmax=1,
        colorscale=[[0, CELLS["cell-off"]], [1, CELLS["cell-on"]]],
        hovertemplate="key %{y}, feature %{x}: offset %{text}<extra></extra>",  # the labels say "n=", "d="
        x=[f"d={i}" for i in range(block_d)], y=[f"n={i}" for i in range(block_n)]))
    fig.update_yaxes(autorange="reversed", title=f"offs_n[:, None]  (keys, padded {n} → {block_n})")
    fig.update_xaxes(title=f"offs_d[None, :]  (features, padded {d} → {block_d})")
    return _diagram(fig, f"K offsets = offs_n[:, None] × {stride_n} + offs_d[None, :]  (grey: masked, never loaded)",
                    "K offsets (grey: masked)", 150 + 34 * block_n)


def causal_tiles(n: int = 512, block_m: int = 128, block_n: int = 64) -> go.Figure:
    """Which (query tile, key tile) pairs the causal forward computes unmasked, masked, or skips."""
    for name, value in (("n", n), ("block_m", block_m), ("block_n", block_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    # Cell labels are short enough for a cell on a phone (about 37 px); the hover says more.
    kinds = ["skipped", "masked", "full"]
    hover = ["skipped (past the diagonal)", "on the diagonal: computed, masked", "computed without a mask"]
    z = []
    for i in range(-(-n // block_m)):
        lo_row, hi_row = i * block_m, min(n, (i + 1) * block_m) - 1
        z.append([2 if min(n, (j + 1) * block_n) - 1 <= lo_row else 1 if j * block_n <= hi_row else 0
                  for j in range(-(-n // block_n))])
    fig = go.Figure(go.Heatmap(
        z=z, text=[[kinds[k] for k in row] for row in z], texttemplate="%{text}",
        customdata=[[hover[k] for k in row] for row in z],
        textfont=dict(size=9, color=CELL_TEXT),
        showscale=False, xgap=2, ygap=2, zmin=0, zmax=2,
        colorscale=[[0, CELLS["cell-off"]], [0.5, CELLS["cell-edge"]], [1, CELLS["cell-on"]]],
        hovertemplate="query tile %{y}, key tile %{x}: %{customdata}<extra></extra>"))
    # Whole tiles only: on a phone Plotly ticked the 4 query tiles every 0.5.
    fig.update_yaxes(autorange="reversed", title=f"query tile (BLOCK_M={block_m})", tickmode="linear", tick0=0, dtick=1)
    fig.update_xaxes(title=f"key tile (BLOCK_N={block_n})", tickmode="linear", tick0=0, dtick=1)
    return _diagram(fig, f"Causal tiles, N={n}", f"Causal tiles, N={n}", 400,
                    subtitle="blue computed without masks, orange masked, grey skipped")


def ablation_profile(prof: dict, abl: dict) -> go.Figure:
    """Per ablation step, from Nsight Compute: pipe activity (% of peak), DRAM bytes beside the
    model's requested bytes, and the profiled duration beside the benchmark's median (same GPU)."""
    steps = query.profile_steps(prof)
    if not steps:
        raise ValueError("the profile holds no measured ablation step")
    order = [r["provider"] for r in sorted(steps.values(), key=lambda r: r["step"])]
    names = list(dict.fromkeys(order))
    cases = sorted({c for c, _ in steps})
    shape = next(iter(steps.values()))["shape"]
    same_gpu = prof["provenance"]["gpu"] == abl["provenance"]["gpu"]
    pipes = [(key, text) for key, text in (("tensor_pct", "tensor pipe"), ("xu_pct", "XU pipe (special functions)"))
             if any(r["measured"][key] is not None for r in steps.values())]
    titles = [f"D={shape['D']}, {'causal' if c else 'full'}" for c in cases]
    fig = make_subplots(rows=3, cols=len(cases), shared_xaxes=True, vertical_spacing=0.08, horizontal_spacing=0.08,
                        subplot_titles=titles)
    roles = {"tensor pipe": "flash", "XU pipe (special functions)": "vectorized", "DRAM read + written": "eager",
             "requested (model)": "reference", "under ncu": "basic", "timed benchmark": "sdpa"}
    for col, causal in enumerate(cases, 1):
        rows = [(n, steps[(causal, n)]) for n in names if (causal, n) in steps]
        x = [n for n, _ in rows]
        first = col == 1

        def add(kind, name, y, row, hover, **kw):
            getattr(fig, kind)(name=name, legendgroup=name, showlegend=first, x=kw.pop("x", x), y=y, row=row,
                               col=col, hovertemplate=hover + "<extra>" + name + "</extra>", **kw)

        for key, text in pipes:
            add("add_bar", text, [r["measured"][key] for _, r in rows], 1, "%{x}: %{y:.0f}% of peak",
                marker_color=mark_color(roles[text]))
        add("add_bar", "DRAM read + written", [(r["measured"]["dram_read_bytes"] + r["measured"]["dram_write_bytes"])
                                               / 1e9 for _, r in rows], 2, "%{x}: %{y:.2f} GB",
            marker_color=mark_color("eager"))
        add("add_scatter", "requested (model)", [r["model"]["requested_bytes"] / 1e9 for _, r in rows], 2,
            "%{x}: %{y:.1f} GB", mode="markers", marker=dict(symbol="diamond", size=9, color=mark_color("reference")))
        add("add_bar", "under ncu", [r["measured"]["duration_ns"] / 1e6 for _, r in rows], 3, "%{x}: %{y:.2f} ms",
            marker_color=mark_color("basic"))
        if same_gpu:
            timed = {r["provider"]: r["p50"] for r in query.ablation_rows(abl, shape["D"], causal) if r["status"] == "ok"}
            add("add_scatter", "timed benchmark", [timed[n] for n in x if n in timed], 3, "%{x}: %{y:.2f} ms",
                x=[n for n in x if n in timed], mode="markers", marker=dict(size=8, color=mark_color("sdpa")))
    fig.update_yaxes(rangemode="tozero", row=1)
    # Requested and DRAM bytes differ by an order of magnitude: a log axis, ticked 1-2-5 in full.
    gigabytes = [y for trace in fig.data if trace.yaxis in {f"y{i}" for i in range(len(cases) + 1, 2 * len(cases) + 1)}
                 for y in trace.y]
    fig.update_yaxes(type="log", row=2, **log_ticks(gigabytes))
    fig.update_yaxes(rangemode="tozero", row=3)
    for row, title in ((1, "% of peak"), (2, "GB (log)"), (3, "ms")):
        fig.update_yaxes(title=title, row=row, col=1)
    fig.update_xaxes(title="step", row=3)
    fig.update_layout(barmode="group")
    dtype = next(iter(steps.values()))["dtype"]
    return _finish(fig, [prof, abl] if same_gpu else [prof], f"Each step under Nsight Compute: {dtype}, B={shape['B']}, H={shape['H']}, "
                   f"N={shape['Nq']}", short_title="Each step, profiled", height=820)


# ----------------------------------------------------------------------------- post 5: inside one program

ROW_PX = 20  # px per warp row of the timeline
# The time axis per unit of the file: (divisor, axis unit, hover format). Cycles stay whole: the
# axis prints them with SI suffixes (20k).
TIME_AXES = {"ns": (1e3, "µs", ".3f"), "cycles": (1, "SM cycles", ",.0f")}


def _scope_colors(scopes) -> dict[str, str]:
    """A colour per scope name: its kind's family, shades taken in order of first appearance, so a
    scope keeps its colour in every panel and program of one figure."""
    taken: dict[str, int] = {}
    out = {}
    for scope in dict.fromkeys(scopes):
        kind = query.scope_kind(scope)
        out[scope] = theme.scope_color(kind, taken.get(kind, 0))
        taken[kind] = taken.get(kind, 0) + 1
    return out


def _warp_label(role: str, warp: int) -> str:
    return f"{role} · warp {warp}"


def timeline(doc: dict) -> go.Figure:
    """Post 5: what each warp of one program did over time, from Proton's instrumentation. One panel
    per traced case (schedule), one row per warp, one bar per scope; the panels share the time axis.
    A dropdown picks the program when several were traced."""
    cases = query.timeline_cases(doc)
    if not cases:
        raise ValueError("the timeline holds no event that ran: every record failed")
    divisor, unit, form = TIME_AXES[query.timeline_unit(doc)]
    ctas = sorted({cta for c in cases for cta in c["ctas"]})
    rows = [[_warp_label(*rw) for rw in query.timeline_warps(query.timeline_events(doc, c["case"]))] for c in cases]
    # Scopes in the order the kernel reaches them in the first case, so the legend reads like the loop.
    events = [r for c in cases for r in query.timeline_events(doc, c["case"])]
    colors = _scope_colors(r["scope"] for r in sorted(events, key=lambda r: r["start"]))
    plot_px = ROW_PX * sum(len(r) for r in rows)
    title_px = 34  # room over each panel for its title
    height_px = plot_px + title_px * len(cases)
    fig = make_subplots(rows=len(cases), cols=1, shared_xaxes=True, vertical_spacing=title_px / height_px,
                        row_heights=[len(r) for r in rows])
    for i, c in enumerate(cases):
        suffix = "" if i == 0 else str(i + 1)
        name = label(c["provider"]) if c["provider"] in theme.LABELS else f"schedule {c['schedule']}"
        fig.add_annotation(text=f"<b>{name}</b>", xref=f"x{suffix} domain", yref=f"y{suffix} domain", x=0, y=1,
                           xanchor="left", yanchor="bottom", yshift=2, showarrow=False,
                           font=dict(size=12, color=color("text")))
    visibility = []
    for vi, cta in enumerate(ctas):
        in_legend = set()
        for i, c in enumerate(cases):
            if cta not in c["ctas"]:
                continue
            by_scope: dict[str, list[dict]] = {}
            for r in query.timeline_events(doc, c["case"], cta):
                by_scope.setdefault(r["scope"], []).append(r)
            for scope in colors:
                rs = by_scope.get(scope)
                if not rs:
                    continue
                fig.add_bar(orientation="h", name=scope, legendgroup=scope, showlegend=scope not in in_legend,
                            visible=vi == 0, y=[_warp_label(r["role"], r["warp"]) for r in rs],
                            base=[round(r["start"] / divisor, 4) for r in rs],
                            x=[round((r["end"] - r["start"]) / divisor, 4) for r in rs],
                            # Start and length from customdata: with a base, plotly.js hovers x as the bar's end.
                            customdata=[[round(r["start"] / divisor, 4), round((r["end"] - r["start"]) / divisor, 4)]
                                        for r in rs],
                            marker=dict(color=colors[scope], line=dict(width=0)), row=i + 1, col=1,
                            hovertemplate=f"%{{y}}<br><b>{scope}</b> from %{{customdata[0]:{form}}} {unit}, "
                                          f"%{{customdata[1]:{form}}} {unit} long<extra></extra>")
                visibility.append(vi)
                in_legend.add(scope)
    for i, r in enumerate(rows):
        fig.update_yaxes(type="category", categoryorder="array", categoryarray=r, autorange="reversed",
                         fixedrange=True, title=dict(text="warp", standoff=4), row=i + 1, col=1)
    fig.update_xaxes(rangemode="tozero")
    fig.update_xaxes(title=f"{unit} since the program's first record", row=len(cases), col=1)
    fig.update_layout(barmode="overlay", bargap=0.25, hovermode="closest")
    first = cases[0]
    what = (f"{first['dtype']}, {query.shape_caption([{'shape': c['shape']} for c in cases], skip=('Nk', 'Hkv'))}"
            f"{', causal' if first['causal'] else ''}")
    view_titles = [f"Inside one program (program {cta}): {what}" for cta in ctas]
    if len(ctas) > 1:
        # A dropdown, not buttons: plotly.js paints the active button a fixed near-white, which
        # the dark palette's light text cannot be read on.
        fig.update_layout(updatemenus=[dict(
            type="dropdown", direction="down", x=0, xanchor="left", y=1, yanchor="bottom", pad=dict(b=30),
            showactive=True, active=0,
            buttons=[dict(label=f"program {cta}", method="update",
                          args=[{"visible": [v == vi for v in visibility]}, {"title.text": view_titles[vi]}])
                     for vi, cta in enumerate(ctas)])])
    proton = doc["provenance"]["proton"]
    notes = [f"Proton's trace ({proton['mode']}; clock: {proton['clock']}"
             + (f"; {proton['warps']}" if proton.get("warps") else "") + f"). {proton['note'].rstrip('.')}.",
             "Each bar is the time one warp spent between two records of one scope; every program's time starts at "
             "its first record. A warp inside a matmul scope may be issuing, or waiting for, the tensor cores."]
    untraced = [f"{label(c['provider'])}: programs {', '.join(map(str, c['ctas']))} only" for c in cases
                if c["ctas"] != ctas]
    if untraced:
        notes.append("Not every program was traced in every case: " + "; ".join(untraced) + ".")
    fig = _finish(fig, [doc], view_titles[0], short_title="Inside one program",
                  height=height_px + (250 if len(ctas) > 1 else 210), notes=notes)
    fig.update_layout(margin=dict(t=130 if len(ctas) > 1 else 80))
    return fig


# ----------------------------------------------------------------------------- post 6: the variants

VARIANT_SCHEMA = "variants/1"  # what scripts/bench_variants.py writes
# provider -> (name in the chart, colour role); our own other routes are drawn as diamonds.
VARIANT_PEERS = {"flex": ("FlexAttention", "sdpa-flash"), "fa4": ("FlashAttention-4", "fa4"),
                 "sdpa-dense": ("SDPA, dense mask", "sdpa"), "eager": ("eager PyTorch", "eager"),
                 "ours-pointer": ("ours, post 3's causal kernel", "flash"),
                 "ours-block-mask": ("ours, as a block mask", "flash"),
                 "ours-per-document": ("ours, one call per document", "flash-tf32"),
                 "ours-padded": ("ours, padded to the longest", "vectorized")}


def load_variants(data_dir=None) -> list[dict]:
    """The documents scripts/bench_variants.py wrote (docs/data/variants*.json), one per file;
    an empty list when the benchmark has not run. A file of another schema raises ValueError."""
    import json
    from pathlib import Path

    folder = Path(data_dir) if data_dir is not None else query.DATA_DIR
    docs = []
    for path in sorted(folder.glob("variants*.json")):
        doc = json.loads(path.read_text())
        if doc.get("schema") != VARIANT_SCHEMA or not isinstance(doc.get("records"), list):
            raise ValueError(f"{path}: not a {VARIANT_SCHEMA} document (scripts/bench_variants.py writes one)")
        docs.append(doc)
    return docs


def variant_views(doc: dict, direction: str) -> list[tuple[str, int]]:
    """(dtype, D) pairs of ``direction``'s records, in the order the benchmark ran them."""
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
    return list(dict.fromkeys((r["dtype"], r["shape"]["D"]) for r in doc["records"] if r["direction"] == direction))


def variant_ratios(doc: dict, direction: str) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """(dtype, D) -> variant -> peer -> ours ÷ peer in speed (the peer's median time over ours), for
    every case where both ran; a peer that did not run is absent."""
    out: dict = {}
    by_case: dict = {}
    for r in doc["records"]:
        if r["direction"] == direction:
            by_case.setdefault(r["case"], {})[r["provider"]] = r
    for rs in by_case.values():
        ours = rs.get("ours")
        if not ours or ours["status"] != "ok":
            continue
        row = out.setdefault((ours["dtype"], ours["shape"]["D"]), {}).setdefault(ours["variant"], {})
        for p, other in rs.items():
            if p != "ours" and other["status"] == "ok" and other.get("p50"):
                row[p] = other["p50"] / ours["p50"]
    return out


def variants_comparison(doc: dict, direction: str = "fwd") -> go.Figure:
    """Post 6: ours ÷ each peer in speed, per variant (rows), one marker per peer; buttons pick the
    dtype and head dim. Above 1: ours is faster. Cases a peer could not run are named in the notes."""
    views = variant_views(doc, direction)
    if not views:
        raise ValueError(f"no {direction} records to draw")
    ratios = variant_ratios(doc, direction)
    peers = [p for p in dict.fromkeys(r["provider"] for r in doc["records"]) if p not in ("ours",)]
    fig = go.Figure()
    visibility = []
    for vi, view in enumerate(views):
        rows = ratios.get(view, {})
        variants = list(rows)
        for p in peers:
            xs = [rows[v].get(p) for v in variants]
            if not any(x is not None for x in xs):
                continue
            name, role = VARIANT_PEERS.get(p, (label(p), "reference"))
            fig.add_scatter(x=xs, y=variants, mode="markers", name=name, legendgroup=p, visible=vi == 0,
                            showlegend=True, marker=dict(color=mark_color(role), size=10,
                                                         symbol="diamond" if p.startswith("ours-") else "circle"),
                            hovertemplate="%{y}: ours %{x:.2f}× " + name + "<extra></extra>")
            visibility.append(vi)
    fig.add_vline(x=1, line_dash="dot", line_color=mark_color("reference"))
    if len(views) > 1:
        menu = [dict(label=f"{dt} · D={d}", method="restyle", args=[{"visible": [v == i for v in visibility]}])
                for i, (dt, d) in enumerate(views)]
        fig.update_layout(updatemenus=[dict(type="buttons", direction="right", buttons=menu, x=0, y=1,
                                            xanchor="left", yanchor="bottom", pad=dict(b=28), showactive=True,
                                            active=0)])
    every = [x for t in fig.data for x in t.x if x is not None] + [1.0]  # 1 (a tie) always on the axis
    fig.update_xaxes(type="log", title="ours ÷ peer, speed (above 1: ours faster)", **log_ticks(every))
    fig.update_yaxes(autorange="reversed")
    notes = []
    for r in doc["records"]:
        if r["direction"] == direction and r["status"] != "ok":
            name = VARIANT_PEERS.get(r["provider"], (label(r["provider"]),))[0]
            note = f"{name}, {r['variant']}: {r['status']} ({r.get('reason') or 'no reason recorded'})"
            if note not in notes:
                notes.append(note)
    word = "Forward" if direction == "fwd" else "Backward"
    n_var = len({r["variant"] for r in doc["records"]})
    return _finish(fig, [doc], f"{word}: the variants against their peers, {query.gpu_label(doc)}",
                   short_title=f"{word}: variants vs peers", height=200 + 36 * n_var, notes=notes)
