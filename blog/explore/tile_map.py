"""Figure 1 (post 6): the tile map of one head under a mask, and the FLOPs it saves.

Every map is the kernel package's own host-side schedule, not re-derived here:

- causal and the sliding window: ``kernels.variants.window_tile_kinds``, the forward's loop
  bounds (``window_tiles`` in the kernel) run on the host, on the forward's first candidate
  tile at D = 128 (``flash.FWD_TILES[128][0]``, the tile with autotuning off);
- packed documents and prefix-LM: the ``BlockMask`` that ``kernels.block_mask`` builds from
  the ready-made ``mask_mod``s (``packed_documents``, ``prefix_lm``), its ``kind`` array.

A tile is skipped (never visited: outside the loop bounds, or absent from the block mask),
partial (visited, the mask evaluated inside it) or full (visited, no mask). The FLOPs saved
are the skipped tiles' (query, key) pairs over the dense N x N: the kernel spends 4 D FLOPs
on every pair of a visited tile, kept or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import GREY, INDIGO, ORANGE, buttons, finish, restyle, slider

SKIPPED, PARTIAL, FULL = 0, 1, 2
KIND_NAMES = {SKIPPED: "skipped", PARTIAL: "partial (masked inside)", FULL: "full (no mask)"}
N = 1024  # one head's sequence: long enough for a pattern, short enough to build on the CPU
MASK_BLOCK = 64  # the block masks' block (kernels.block_mask.BLOCKS)
LENGTHS = (64, 128, 256, 384, 512, 768)  # the slider: window width, mean document length, prefix length
VARIANTS = ("causal", "window", "documents", "prefix-LM")
# Multipliers of the mean length, in turn, for mixed document lengths (their mean is 1).
DOCUMENT_PATTERN = (1.5, 0.55, 1.2, 0.3, 0.95, 1.5)
_KIND_COLOURS = [[0, "rgba(158,158,158,0.25)"], [0.5, ORANGE], [1, INDIGO]]


@dataclass(frozen=True)
class TileMap:
    """One head's tiles: ``kinds[i][j]`` for query tile i and key tile j (SKIPPED, PARTIAL, FULL)."""

    variant: str
    param: object  # the window's left width, the document lengths, the prefix length, or None
    kinds: tuple[tuple[int, ...], ...]
    block_m: int
    block_n: int
    n: int
    source: str  # what computed the map, for the caption

    def pairs(self) -> dict[int, int]:
        """(query, key) pairs per kind, counting the ragged last tiles by their real size."""
        out = {SKIPPED: 0, PARTIAL: 0, FULL: 0}
        for i, row in enumerate(self.kinds):
            rows = min(self.block_m, self.n - i * self.block_m)
            for j, kind in enumerate(row):
                out[kind] += rows * min(self.block_n, self.n - j * self.block_n)
        return out

    def shares(self) -> dict[str, float]:
        """Fractions of the dense N x N pairs: skipped (the FLOPs saved), partial, full."""
        p = self.pairs()
        total = self.n * self.n
        return {"skipped": p[SKIPPED] / total, "partial": p[PARTIAL] / total, "full": p[FULL] / total}

    def tile_counts(self) -> dict[str, int]:
        flat = [k for row in self.kinds for k in row]
        return {"skipped": flat.count(SKIPPED), "partial": flat.count(PARTIAL), "full": flat.count(FULL)}


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"tile_map: {name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"tile_map: {name} must be >= {low}, got {value}")


def _block_mask_module():
    # The module, not the function: ``kernels.block_mask`` the attribute is the builder.
    import importlib

    return importlib.import_module("kernels.block_mask")


def forward_tile() -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the forward's first candidate at D = 128 (autotuning off)."""
    from kernels import flash

    return tuple(flash.FWD_TILES[128][0][:2])


def document_lengths(mean: int, n: int = N) -> list[int]:
    """Mixed document lengths (``DOCUMENT_PATTERN`` times ``mean``, in turn) packed into ``n`` tokens;
    the last one is cut to fit."""
    _check_int("mean", mean, 1)
    _check_int("n", n, 1)
    lengths: list[int] = []
    while sum(lengths) < n:
        want = max(1, round(DOCUMENT_PATTERN[len(lengths) % len(DOCUMENT_PATTERN)] * mean))
        lengths.append(min(want, n - sum(lengths)))
    return lengths


def window_map(left: int, n: int = N, *, variant: str = "window") -> TileMap:
    """The forward's schedule for a causal sliding window of ``left`` keys (-1: plain causal),
    FlashAttention's ``window_size=(left, 0)``: ``variants.window_tile_kinds``."""
    from kernels import variants

    _check_int("left", left, -1)
    _check_int("n", n, 1)
    block_m, block_n = forward_tile()
    # The kernel's codes, named here: a masked boundary tile is a partial one.
    code = {variants.SKIPPED: SKIPPED, variants.MASKED: PARTIAL, variants.UNMASKED: FULL}
    kinds = variants.window_tile_kinds(n, n, (left, 0), block_m=block_m, block_n=block_n)
    return TileMap(variant, None if left < 0 else left, tuple(tuple(code[k] for k in row) for row in kinds),
                   block_m, block_n, n, f"variants.window_tile_kinds, {block_m}×{block_n} tiles")


def block_mask_map(mask, variant: str, param) -> TileMap:
    """The tile map of a ``BlockMask`` (batch row 0, head 0): its ``kind`` array."""
    bm = _block_mask_module()
    code = {bm.ABSENT: SKIPPED, bm.PARTIAL: PARTIAL, bm.FULL: FULL}
    kinds = mask.kind[0, 0].tolist()
    if mask.N_q != mask.N_k:
        raise ValueError("tile_map: the figure shows square masks (N_q == N_k)")
    return TileMap(variant, param, tuple(tuple(code[k] for k in row) for row in kinds), mask.block, mask.block,
                   mask.N_q, f"kernels.block_mask, {mask.block}×{mask.block} blocks")


def documents_map(lengths: list[int], n: int = N, block: int = MASK_BLOCK) -> TileMap:
    """Causal attention within each packed document: ``block_mask(packed_documents, ...)``."""
    import torch

    import kernels

    if not isinstance(lengths, (list, tuple)) or not lengths or any(
            isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in lengths):
        raise ValueError(f"tile_map: lengths must be a non-empty list of ints >= 1, got {lengths!r}")
    if sum(lengths) != n:
        raise ValueError(f"tile_map: the document lengths must fill the {n} tokens, they sum to {sum(lengths)}")
    bm = _block_mask_module()
    device = "cpu" if kernels.INTERPRET else "cuda"
    ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None].to(device)
    mask = kernels.block_mask(bm.packed_documents, 1, 1, n, n, block=block, aux=bm.document_aux(ids))
    return block_mask_map(mask, "documents", list(lengths))


def prefix_map(prefix: int, n: int = N, block: int = MASK_BLOCK) -> TileMap:
    """Bidirectional over the first ``prefix`` tokens, causal after: ``block_mask(prefix_lm, ...)``."""
    import torch

    import kernels

    _check_int("prefix", prefix, 0)
    bm = _block_mask_module()
    device = "cpu" if kernels.INTERPRET else "cuda"
    mask = kernels.block_mask(bm.prefix_lm, 1, 1, n, n, block=block,
                              aux=torch.tensor([prefix], dtype=torch.int32, device=device))
    return block_mask_map(mask, "prefix-LM", prefix)


def tile_map(variant: str, length: int, n: int = N) -> TileMap:
    """The map of ``variant`` (one of ``VARIANTS``) at the slider's ``length`` (ignored by causal)."""
    if variant not in VARIANTS:
        raise ValueError(f"tile_map: variant must be one of {VARIANTS}, got {variant!r}")
    _check_int("length", length, 1)
    if variant == "causal":
        return window_map(-1, n, variant="causal")
    if variant == "window":
        return window_map(length, n)
    if variant == "documents":
        return documents_map(document_lengths(length, n), n)
    return prefix_map(length, n)


def describe(m: TileMap) -> str:
    """The text under the map (short lines: a phone): the mask, and the shares of the dense FLOPs."""
    s, t = m.shares(), m.tile_counts()
    visited = t["full"] + t["partial"]
    if m.variant == "causal":
        what = "causal: no parameter (the slider sets the others)"
    elif m.variant == "window":
        what = f"window: each query sees {m.param} keys back"
    elif m.variant == "documents":
        docs = len(m.param)
        what = (f"1 document of {m.param[0]} tokens, causal" if docs == 1 else
                f"{docs} documents, {min(m.param)}–{max(m.param)} tokens, causal in each")
    else:
        what = f"prefix of {m.param} bidirectional, causal after"
    return (f"{what}<br>skipped: {s['skipped']:.0%} of the dense FLOPs saved<br>"
            f"computed: {s['full']:.0%} in full tiles, {s['partial']:.0%} partial<br>"
            f"{visited} of {visited + t['skipped']} tiles visited<br>{m.source}")


def _trace_attrs(m: TileMap) -> tuple[dict, dict]:
    edges_y = [min(m.n, i * m.block_m) for i in range(len(m.kinds) + 1)]
    edges_x = [min(m.n, j * m.block_n) for j in range(len(m.kinds[0]) + 1)]
    hover = [[f"queries {edges_y[i]}–{edges_y[i + 1] - 1}, keys {edges_x[j]}–{edges_x[j + 1] - 1}: "
              f"{KIND_NAMES[k]}" for j, k in enumerate(row)] for i, row in enumerate(m.kinds)]
    return (dict(z=[list(r) for r in m.kinds], x=edges_x, y=edges_y, customdata=hover),
            dict(text=[describe(m)]))


def figure(n: int = N) -> go.Figure:
    """Buttons: the variant; slider: the window width, mean document length or prefix length.
    Top: one head's tile map; below it, the FLOPs the skipped tiles save."""
    fig = make_subplots(rows=2, cols=1, row_heights=[0.8, 0.2], vertical_spacing=0.04)
    start = VARIANTS.index("window")
    for v, _ in enumerate(VARIANTS):
        fig.add_heatmap(z=[[0]], zmin=0, zmax=2, colorscale=_KIND_COLOURS, showscale=False, visible=v == start,
                        xgap=1, ygap=1, hovertemplate="%{customdata}<extra></extra>", row=1, col=1)
    for v, _ in enumerate(VARIANTS):
        fig.add_scatter(x=[0], y=[0], mode="text", text=[""], textposition="bottom right",
                        textfont=dict(size=10), hoverinfo="skip", visible=v == start, row=2, col=1)
    per = len(VARIANTS)

    def updates(length: int) -> dict[int, dict]:
        out = {}
        for v, name in enumerate(VARIANTS):
            grid, text = _trace_attrs(tile_map(name, length, n))
            out[v], out[per + v] = grid, text
        return out

    states = {length: updates(length) for length in LENGTHS}
    steps = [dict(method="restyle", args=restyle(fig, states[length]), label=str(length)) for length in LENGTHS]
    first = LENGTHS.index(256)
    for i, attrs in states[LENGTHS[first]].items():
        fig.data[i].update(attrs)
    menu = [dict(label=name, method="restyle",
                 args=[{"visible": [i % per == v for i in range(2 * per)]}]) for v, name in enumerate(VARIANTS)]
    fig.update_layout(sliders=[slider(steps, prefix="window / mean document / prefix length: ", active=first,
                                      y=-0.02, pad_t=8)],
                      updatemenus=[buttons(menu, x=0, y=1.1, active=start)])
    fig.update_yaxes(autorange="reversed", title=dict(text="← query position", font=dict(size=10)),
                     showgrid=False, row=1, col=1)
    fig.update_xaxes(title=dict(text="key position →", font=dict(size=10), standoff=2), side="top",
                     showgrid=False, row=1, col=1)
    fig.update_xaxes(visible=False, range=[0, 1], row=2, col=1)
    fig.update_yaxes(visible=False, range=[-1, 0], row=2, col=1)
    fig.add_annotation(text="grey skipped · orange partial · blue full", xref="paper", yref="paper", x=0, y=1.0,
                       yshift=88, showarrow=False, xanchor="left", yanchor="bottom", font=dict(size=10, color=GREY))
    return finish(fig, f"Tile map of one head, N = {n}", 700, subtitle="which tiles the kernel visits, per mask",
                  top=176, bottom=80)
