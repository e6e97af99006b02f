"""Figure 2 (post 3): which tiles the kernels compute, and how their programs fill the GPU.

The loop bounds here are those of ``kernels/flash.py`` with the production switches
(SPLIT_LOOPS and SKIP_FUTURE on): ``forward_key_tiles`` is the forward kernel's two
``fwd_tiles`` ranges, ``dkdv_query_tiles`` and ``dq_key_tiles`` the backward kernels'.
The tile sizes offered are the kernel's own candidates (``flash.FWD_TILES``); the SM
count is the benchmarked GPU's, from docs/data. The waves are a model, not a measurement:
programs start in launch order on the first free slot, each taking time in proportion to
the key tiles it visits.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import theme
from . import GREY, INDIGO, ORANGE, PINK, buttons, finish, restyle, slider

SKIPPED, MASKED, UNMASKED = 0, 1, 2


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"schedule: {name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"schedule: {name} must be >= 1, got {value}")


def forward_key_tiles(pid_m: int, n_k: int, block_m: int, block_n: int, causal: bool) -> list[tuple[int, bool]]:
    """(start_n, masked) of every key tile forward program ``pid_m`` visits, in order.

    ``_flash_fwd_kernel``: an unmasked loop over [0, full_n), then a masked one over
    [full_n, hi); causal programs stop at the end of their own rows.
    """
    _check_sizes(n_k=n_k, block_m=block_m, block_n=block_n)
    if causal and block_m % block_n:
        raise ValueError(f"schedule: causal needs BLOCK_M % BLOCK_N == 0, got {block_m} and {block_n}")
    full_n = (n_k // block_n) * block_n
    hi = n_k
    if causal:
        full_n = min(full_n, pid_m * block_m)
        hi = min(n_k, (pid_m + 1) * block_m)
    return [(s, False) for s in range(0, full_n, block_n)] + [(s, True) for s in range(full_n, hi, block_n)]


def dkdv_query_tiles(pid_n: int, n_q: int, block_m: int, block_n: int, causal: bool) -> list[tuple[int, bool]]:
    """(start_m, masked) of every query tile dK/dV program ``pid_n`` visits (per query head), in order."""
    _check_sizes(n_q=n_q, block_m=block_m, block_n=block_n)
    full_m = (n_q // block_m) * block_m
    n0 = pid_n * block_n
    out = []
    if causal:
        out += [(s, True) for s in range(n0, min(n0 + block_n, n_q), block_m)]
        lo = n0 + block_n
    else:
        lo = 0
    out += [(s, False) for s in range(lo, full_m, block_m)]
    out += [(s, True) for s in range(max(lo, full_m), n_q, block_m)]
    return out


def dq_key_tiles(pid_m: int, n_k: int, block_m: int, block_n: int, causal: bool) -> list[tuple[int, bool]]:
    """(start_n, masked) of every key tile dQ program ``pid_m`` visits: the forward's bounds."""
    return forward_key_tiles(pid_m, n_k, block_m, block_n, causal)


@dataclass(frozen=True)
class Grid:
    """The forward pass's (query tile x key tile) grid for one N, tile and mask."""
    n: int
    block_m: int
    block_n: int
    causal: bool
    kind: np.ndarray  # (query tiles, key tiles): SKIPPED, MASKED or UNMASKED
    useful: np.ndarray  # score entries that count (inside N, not masked by causality)

    @property
    def computed_pairs(self) -> dict[int, int]:
        """Score entries the hardware computes, per kind (a visited tile costs BLOCK_M x BLOCK_N)."""
        area = self.block_m * self.block_n
        return {kind: int((self.kind == kind).sum()) * area for kind in (SKIPPED, MASKED, UNMASKED)}

    def flops(self, head_dim: int) -> int:
        """Useful FLOPs, summed tile by tile: 4 per score entry per feature (QK^T and PV)."""
        return 4 * head_dim * int(self.useful.sum())


def forward_grid(n: int, block_m: int, block_n: int, causal: bool) -> Grid:
    """Classify every (query tile, key tile) pair by the forward kernel's loop bounds."""
    _check_sizes(n=n, block_m=block_m, block_n=block_n)
    tm, tn = -(-n // block_m), -(-n // block_n)
    kind = np.zeros((tm, tn), dtype=np.int8)
    useful = np.zeros((tm, tn), dtype=np.int64)
    for i in range(tm):
        rows = np.arange(i * block_m, min(n, (i + 1) * block_m))
        for start_n, masked in forward_key_tiles(i, n, block_m, block_n, causal):
            j = start_n // block_n
            kind[i, j] = MASKED if masked else UNMASKED
            cols = np.arange(start_n, min(n, start_n + block_n))
            keep = rows[:, None] >= cols[None, :] if causal else np.ones((len(rows), len(cols)), bool)
            useful[i, j] = int(keep.sum())
    return Grid(n, block_m, block_n, causal, kind, useful)


def exact_flops(n: int, head_dim: int, causal: bool) -> int:
    """4 FLOPs per kept score entry per feature: N^2 entries, or N(N+1)/2 under a causal mask.
    (The FlashAttention convention rounds the causal count to half of N^2.)"""
    return 4 * head_dim * (n * (n + 1) // 2 if causal else n * n)


@dataclass(frozen=True)
class Waves:
    programs: int
    slots: int  # programs resident per SM at once
    sm_busy: np.ndarray  # per SM: when its last program ends (unit: one key tile of one program alone on an SM)
    ideal: float  # total work / SMs

    @property
    def makespan(self) -> float:
        return float(self.sm_busy.max())


def waves(n: int, block_m: int, block_n: int, causal: bool, heads: int, sms: int, slots: int) -> Waves:
    """Lay the forward grid's programs over ``sms`` SMs with ``slots`` programs resident per SM.

    Programs start in launch order (query block fastest, then batch x head) on the slot
    that frees first; a program takes its key tiles x ``slots`` time units, since the
    programs of an SM share its throughput.
    """
    _check_sizes(n=n, heads=heads, sms=sms, slots=slots)
    tm = -(-n // block_m)
    cost = [len(forward_key_tiles(i, n, block_m, block_n, causal)) * slots for i in range(tm)] * heads
    lanes = [(0.0, lane) for lane in range(sms * slots)]
    heapq.heapify(lanes)
    busy = np.zeros(sms)
    for c in cost:
        start, lane = heapq.heappop(lanes)
        heapq.heappush(lanes, (start + c, lane))
        busy[lane % sms] = max(busy[lane % sms], start + c)
    return Waves(len(cost), slots, busy, sum(cost) / slots / sms)


# ----------------------------------------------------------------------------- figures

_KIND_COLOURS = [[0, "rgba(158,158,158,0.25)"], [0.5, ORANGE], [1, INDIGO]]
NS = (256, 512, 1024, 2048)


def _shares_text(g: Grid, w: Waves, head_dim: int) -> str:
    pairs = g.computed_pairs
    total = sum(pairs.values())
    useful = g.flops(head_dim)
    computed = 4 * head_dim * (pairs[MASKED] + pairs[UNMASKED])
    return (f"of the grid: unmasked {pairs[UNMASKED] / total:.0%},<br>masked {pairs[MASKED] / total:.0%}, "
            f"skipped {pairs[SKIPPED] / total:.0%}<br>"
            f"useful {useful / 1e9:.3g} of {computed / 1e9:.3g} GFLOP<br>"
            f"{w.programs} programs, {w.slots} per SM:<br>{w.programs / (len(w.sm_busy) * w.slots):.2f} waves; "
            f"last SM ends<br>at {w.makespan / w.ideal:.2f}× the even split")


def figure(sms: int, *, head_dim: int = 128, heads: int = 64) -> go.Figure:
    """Dropdown: the forward candidates for ``head_dim``; slider: N. Left full, right causal:
    the tile grid, and each SM's busy time when ``heads`` (batch x heads) such grids run."""
    from kernels import flash

    from .tile_budget import budget

    _check_sizes(sms=sms, head_dim=head_dim, heads=heads)
    tiles = flash.candidate_tiles("fwd", head_dim)
    fig = make_subplots(rows=3, cols=2, row_heights=[0.48, 0.32, 0.2], vertical_spacing=0.07,
                        horizontal_spacing=0.08, subplot_titles=("full", "causal", "", "", "", ""))
    per_tile = 8  # per tile: (grid, busy, even split, text) x (full, causal)
    for t, (bm, bn, warps, stages) in enumerate(tiles):
        for c, causal in enumerate((False, True)):
            vis = t == 0
            fig.add_heatmap(z=[[0]], zmin=0, zmax=2, colorscale=_KIND_COLOURS, showscale=False, visible=vis,
                            hovertemplate="query tile %{y}, key tile %{x}: %{z}<extra>2 unmasked, 1 masked, "
                                          "0 skipped</extra>", row=1, col=c + 1)
            fig.add_bar(y=[0], marker_color=PINK, marker_line_width=0, visible=vis,
                        hovertemplate="SM %{x}: busy until %{y}<extra></extra>", row=2, col=c + 1)
            fig.add_scatter(x=[0, sms - 1], y=[0, 0], mode="lines", line=dict(color=GREY, dash="dash", width=1),
                            visible=vis, hovertemplate="even split: %{y:.3g}<extra></extra>", row=2, col=c + 1)
            fig.add_scatter(x=[0], y=[0], mode="text", text=[""], textposition="bottom right",
                            textfont=dict(size=9.5), hoverinfo="skip", visible=vis, row=3, col=c + 1)

    def updates(n: int) -> dict[int, dict]:
        out = {}
        for t, (bm, bn, warps, stages) in enumerate(tiles):
            slots = max(1, budget(bm, bn, warps, stages, head_dim).programs_per_sm)
            for c, causal in enumerate((False, True)):
                g = forward_grid(n, bm, bn, causal)
                w = waves(n, bm, bn, causal, heads, sms, slots)
                base = t * per_tile + c * 4
                out[base] = dict(z=g.kind.tolist())
                out[base + 1] = dict(y=[round(float(b), 1) for b in w.sm_busy])
                out[base + 2] = dict(y=[round(w.ideal, 2)] * 2)
                out[base + 3] = dict(text=[_shares_text(g, w, head_dim)])
        return out

    steps = [dict(method="restyle", args=restyle(fig, updates(n)), label=f"{n}") for n in NS]
    first = updates(NS[1])
    for i, attrs in first.items():
        fig.data[i].update(attrs)
    n_traces = len(fig.data)
    menu = [dict(label=f"{bm}×{bn}, {w} warps, {s} stages", method="restyle",
                 args=[{"visible": [i // per_tile == t for i in range(n_traces)]}])
            for t, (bm, bn, w, s) in enumerate(tiles)]
    fig.update_layout(
        sliders=[slider(steps, prefix="N = ", active=1, y=-0.01, pad_t=8)],
        updatemenus=[buttons(menu, x=0, y=1.04, dropdown=True)],
        bargap=0,
    )
    for col in (1, 2):
        fig.update_yaxes(autorange="reversed", title=dict(text="← query tile", font=dict(size=10)) if col == 1 else None,
                         showticklabels=False, showgrid=False, row=1, col=col)
        fig.update_xaxes(title=dict(text="key tile →", font=dict(size=10)), showticklabels=False, showgrid=False,
                         row=1, col=col)
        fig.update_xaxes(title=dict(text=f"SM (of {sms})", font=dict(size=10)), row=2, col=col)
        fig.update_yaxes(rangemode="tozero", row=2, col=col,
                         title=dict(text="busy (tile steps)", font=dict(size=10)) if col == 1 else None)
        fig.update_xaxes(visible=False, range=[0, 1], row=3, col=col)
        fig.update_yaxes(visible=False, range=[-1, 0], row=3, col=col)
    fig.update_yaxes(matches="y3", row=2, col=2)
    return finish(fig, f"Forward tiles and waves, D={head_dim}, {heads} (batch × head)s", 784,
                  subtitle="blue unmasked, orange masked, grey skipped",
                  short_title=f"Forward tiles and waves, D={head_dim}", top=108, bottom=84)


def _tick_step(tiles: int) -> int:
    """A whole-number tick step that puts at most 8 ticks on an axis of ``tiles`` tiles."""
    return max(1, math.ceil(tiles / 8))


def backward_figure(n: int = 512, head_dim: int = 128) -> go.Figure:
    """Slider over program ids; buttons switch the causal mask. Left: the dK/dV program holding
    one K/V tile walks down the query tiles; right: the dQ program holding one Q tile walks
    along the key tiles. Numbers give the visiting order."""
    from kernels import flash

    _check_sizes(n=n, head_dim=head_dim)
    kv_bm, kv_bn = flash.candidate_tiles("dkdv", head_dim)[0][:2]
    dq_bm, dq_bn = flash.candidate_tiles("dq", head_dim)[0][:2]
    rows_q, cols_k = -(-n // kv_bm), -(-n // kv_bn)  # dK/dV grid: query tiles of kv_bm x key tiles of kv_bn
    rows_q2, cols_k2 = -(-n // dq_bm), -(-n // dq_bn)
    programs = min(cols_k, rows_q2)
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.14, row_heights=[0.6, 0.4],
                        subplot_titles=(f"dK/dV: a program holds {kv_bn} keys, walks {kv_bm}-row query tiles",
                                        f"dQ: a program holds {dq_bm} queries, walks {dq_bn}-key tiles"))

    def order_grid(shape, visits, axis_fixed, fixed, block_visit, block_fixed):
        z = [[None] * shape[1] for _ in range(shape[0])]
        text = [[""] * shape[1] for _ in range(shape[0])]
        for k, (start, masked) in enumerate(visits):
            i = start // block_visit
            r, c = (i, fixed) if axis_fixed == "col" else (fixed, i)
            z[r][c] = 2 if masked else 1
            text[r][c] = str(k + 1)
        if axis_fixed == "col":
            for r in range(shape[0]):
                if z[r][fixed] is None:
                    z[r][fixed] = 0
        else:
            for c in range(shape[1]):
                if z[fixed][c] is None:
                    z[fixed][c] = 0
        return z, text

    # Visited cells carry their visit number in black on opaque mid-tones (theme.CELLS), which
    # read the same in both schemes; skipped cells carry no number and stay a faint grey.
    colours = [[0, "rgba(158,158,158,0.25)"], [0.5, theme.CELLS["cell-on"]], [1, theme.CELLS["cell-edge"]]]
    for causal in (False, True):
        for col in (1, 2):
            fig.add_heatmap(z=[[0]], text=[[""]], texttemplate="%{text}", textfont=dict(size=10, color=theme.CELL_TEXT),
                            zmin=0, zmax=2,
                            colorscale=colours, showscale=False, xgap=1, ygap=1, visible=not causal,
                            hovertemplate="query tile %{y}, key tile %{x}: visit %{text}<extra></extra>",
                            row=col, col=1)

    def updates(p: int) -> dict[int, dict]:
        out = {}
        for v, causal in enumerate((False, True)):
            z1, t1 = order_grid((rows_q, cols_k), dkdv_query_tiles(p, n, kv_bm, kv_bn, causal), "col", p, kv_bm, kv_bn)
            z2, t2 = order_grid((rows_q2, cols_k2), dq_key_tiles(p, n, dq_bm, dq_bn, causal), "row", p, dq_bn, dq_bm)
            out[v * 2] = dict(z=z1, text=t1)
            out[v * 2 + 1] = dict(z=z2, text=t2)
        return out

    steps = [dict(method="restyle", args=restyle(fig, updates(p)), label=str(p)) for p in range(programs)]
    for i, attrs in updates(0).items():
        fig.data[i].update(attrs)
    switch = [dict(label=label, method="restyle", args=[{"visible": [(i >= 2) == causal for i in range(4)]}])
              for label, causal in (("full", False), ("causal", True))]
    fig.update_layout(sliders=[slider(steps, prefix="program id ", y=-0.06, pad_t=8)],
                      updatemenus=[buttons(switch, x=0, y=1.06)])
    # Whole-number ticks: left to itself Plotly ticks a 4-tile axis every 0.5, and "d" rounds
    # those to "0, 1, 1, 2, 2".
    for row, (tiles_q, tiles_k) in ((1, (rows_q, cols_k)), (2, (rows_q2, cols_k2))):
        fig.update_yaxes(autorange="reversed", title=dict(text="query tile", font=dict(size=10)),
                         tickmode="linear", tick0=0, dtick=_tick_step(tiles_q), showgrid=False, row=row, col=1)
        fig.update_xaxes(title=dict(text="key tile", font=dict(size=10)), tickmode="linear", tick0=0,
                         dtick=_tick_step(tiles_k), showgrid=False, row=row, col=1)
    for ann in fig.layout.annotations:
        ann.font = dict(size=11)
    return finish(fig, f"The backward kernels' loop orders, N={n}, D={head_dim}", 760,
                  subtitle="numbers give the order; blue unmasked, orange masked",
                  short_title=f"Backward loop orders, N={n}, D={head_dim}", top=120, bottom=110)


def gqa_figure(heads: int = 8) -> go.Figure:
    """Buttons over the group size: which k/v head each query head reads (``hk = h // GROUP``)."""
    _check_sizes(heads=heads)
    groups = [g for g in (1, 2, 4, heads) if heads % g == 0]
    fig = go.Figure()
    for gi, group in enumerate(groups):
        xs, ys = [], []
        for h in range(heads):
            hk = h // group  # the kernels' mapping (_flash_fwd_kernel, _flash_bwd_dq_kernel)
            xs += [0, 1, None]
            ys += [h, hk * group + (group - 1) / 2, None]
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=GREY, width=1.5), hoverinfo="skip",
                        visible=gi == 0)
        kv = heads // group
        fig.add_scatter(x=[1] * kv, y=[hk * group + (group - 1) / 2 for hk in range(kv)], mode="markers+text",
                        marker=dict(size=22, color=PINK), text=[f"k/v {hk}" for hk in range(kv)],
                        textposition="middle right", hovertemplate="k/v head %{text}<extra></extra>", visible=gi == 0)
    fig.add_scatter(x=[0] * heads, y=list(range(heads)), mode="markers+text", marker=dict(size=16, color=INDIGO),
                    text=[f"q {h}" for h in range(heads)], textposition="middle left", hoverinfo="skip")
    menu = [dict(label=f"{g}" + (" (MQA)" if g == heads else ""), method="restyle",
                 args=[{"visible": [i // 2 == gi for i in range(2 * len(groups))] + [True]}])
            for gi, g in enumerate(groups)]
    fig.update_layout(updatemenus=[buttons(menu, x=0.12, y=1.02)])
    fig.update_xaxes(visible=False, range=[-0.6, 1.6])
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.add_annotation(text="GROUP:", xref="paper", yref="paper", x=0.11, y=1.02, yshift=14, xanchor="right",
                       yanchor="bottom", showarrow=False, font=dict(size=11))
    return finish(fig, "Grouped-query attention", 400, subtitle="query head h reads k/v head h // GROUP", top=110)
