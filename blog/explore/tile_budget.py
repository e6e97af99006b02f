"""Figure 4 (post 4): what a forward tile costs in registers and shared memory, and what fits.

A model from the tile sizes alone, set beside what the compiler reported for the tiles
the ablation benchmark compiled (docs/data/ablation.*.json, ``compiler`` and ``config``):

- registers per thread: the fp32 accumulator (BLOCK_M x HEAD_DIM), the fp32 score tile
  S, reused for P (BLOCK_M x BLOCK_N), and the Q tile (BLOCK_M x HEAD_DIM in the input
  dtype, two fp16 values per 32-bit register), spread over the program's threads;
- shared memory: the Q tile plus ``num_stages`` buffers of one K and one V tile;
- occupancy: programs per SM under the H100's limits (below).

The model counts only the tiles' data. The compiler also keeps addresses, row statistics
and temporaries in registers, and decides for itself where Q lives; ``disagreements``
names every tile where model and compiler part ways.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import GREY, INDIGO, ORANGE, PINK, buttons, finish

# Hopper (compute capability 9.0) limits, from NVIDIA's Hopper tuning guide, "Occupancy"
# (https://docs.nvidia.com/cuda/hopper-tuning-guide/index.html#occupancy) and the CUDA C++
# Programming Guide's table of technical specifications per compute capability
# (https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#features-and-technical-specifications).
REGISTERS_PER_SM = 64 * 1024
MAX_REGISTERS_PER_THREAD = 255
THREADS_PER_SM = 2048
MAX_PROGRAMS_PER_SM = 32  # thread blocks per SM
SHARED_PER_SM = 228 * 1024
SHARED_PER_PROGRAM = 227 * 1024
SHARED_RESERVED_PER_PROGRAM = 1024  # the system's share of each block's shared memory
SHORT = {"registers": "regs", "shared memory": "smem", "threads": "threads", "programs": "blocks"}
LIGHT_INDIGO, LIGHT_ORANGE = "#9fa8da", "#ffcc80"
SOURCES = {
    "Hopper tuning guide": "https://docs.nvidia.com/cuda/hopper-tuning-guide/index.html#occupancy",
    "CUDA C++ Programming Guide": "https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html"
                                  "#features-and-technical-specifications",
}


@dataclass(frozen=True)
class Budget:
    block_m: int
    block_n: int
    warps: int
    stages: int
    head_dim: int
    elem_bytes: int
    regs_acc: float
    regs_sp: float
    regs_q: float
    smem_q: int
    smem_k: int  # all stages
    smem_v: int  # all stages

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def registers(self) -> float:
        return self.regs_acc + self.regs_sp + self.regs_q

    @property
    def shared_bytes(self) -> int:
        return self.smem_q + self.smem_k + self.smem_v

    @property
    def programs_per_sm(self) -> int:
        return occupancy(self.registers, self.shared_bytes, self.warps)[0]

    @property
    def limiter(self) -> str:
        return occupancy(self.registers, self.shared_bytes, self.warps)[1]


def budget(block_m: int, block_n: int, warps: int, stages: int, head_dim: int, elem_bytes: int = 2) -> Budget:
    """The model's registers per thread and shared bytes of one forward tile."""
    for name, value in (("block_m", block_m), ("block_n", block_n), ("warps", warps), ("stages", stages),
                        ("head_dim", head_dim), ("elem_bytes", elem_bytes)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"tile_budget: {name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"tile_budget: {name} must be >= 1, got {value}")
    if elem_bytes not in (2, 4):
        raise ValueError(f"tile_budget: elem_bytes must be 2 (fp16/bf16) or 4 (fp32), got {elem_bytes}")
    threads = 32 * warps
    word = 4  # bytes per 32-bit register
    return Budget(
        block_m, block_n, warps, stages, head_dim, elem_bytes,
        regs_acc=block_m * head_dim * 4 / word / threads,
        regs_sp=block_m * block_n * 4 / word / threads,
        regs_q=block_m * head_dim * elem_bytes / word / threads,
        smem_q=block_m * head_dim * elem_bytes,
        smem_k=stages * block_n * head_dim * elem_bytes,
        smem_v=stages * block_n * head_dim * elem_bytes,
    )


def occupancy(registers: float, shared_bytes: int, warps: int) -> tuple[int, str]:
    """(programs resident per SM, the limit that binds) under the Hopper limits above.

    Registers above 255 per thread spill instead of failing, so they count as 255 here.
    A program needing more than 227 KB of shared memory cannot launch: 0 programs.
    """
    if registers < 0 or shared_bytes < 0 or warps < 1:
        raise ValueError(f"tile_budget.occupancy: bad resources {registers}, {shared_bytes}, {warps}")
    if shared_bytes > SHARED_PER_PROGRAM:
        return 0, "shared memory"
    threads = 32 * warps
    limits = {
        "registers": REGISTERS_PER_SM // (min(registers, MAX_REGISTERS_PER_THREAD) * threads) if registers else 10**9,
        "shared memory": SHARED_PER_SM // (shared_bytes + SHARED_RESERVED_PER_PROGRAM),
        "threads": THREADS_PER_SM // threads,
        "programs": MAX_PROGRAMS_PER_SM,
    }
    name = min(limits, key=limits.get)
    return int(limits[name]), name


# ----------------------------------------------------------------------------- measured

def measured(doc: dict) -> dict[tuple[int, tuple], dict]:
    """(head_dim, (BLOCK_M, BLOCK_N, warps, stages)) -> what the compiler reported, from an
    ablation document. Of several rungs with one tile, the latest (closest to the production
    kernel) is kept; ``rung`` names it."""
    if not isinstance(doc, dict) or "records" not in doc:
        raise TypeError("tile_budget.measured: expected a benchmark document with records")
    out = {}
    for r in sorted(doc["records"], key=lambda r: r.get("step") if r.get("step") is not None else -1):
        cfg, rep = r.get("config"), r.get("compiler")
        if r.get("step") is None or not cfg or not rep or r["status"] != "ok" or r["dtype"] not in ("float16", "bfloat16"):
            continue
        head_dim = max(16, 1 << (r["shape"]["D"] - 1).bit_length())
        tile = (cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["num_warps"], cfg["num_stages"])
        out[(head_dim, tile)] = dict(rep, rung=r["provider"], causal=r["causal"])
    return out


def disagreements(doc: dict, tiles_by_head_dim: dict[int, list[tuple]]) -> list[str]:
    """Sentences naming each measured tile where the model and the compiler part ways:
    shared memory off by more than 1 KB, registers under the model's count (so the compiler
    kept part of the modelled data elsewhere), or a spill verdict that differs."""
    found = measured(doc)
    notes = []
    for head_dim, tiles in tiles_by_head_dim.items():
        for tile in tiles:
            rep = found.get((head_dim, tile))
            if rep is None:
                continue
            b = budget(*tile, head_dim)
            name = f"{tile[0]}×{tile[1]}, {tile[2]} warps, {tile[3]} stages at D={head_dim}"
            if abs(rep["shared_bytes"] - b.shared_bytes) > 1024:
                notes.append(f"{name}: the model puts Q plus {tile[3]} × (K + V) at {b.shared_bytes / 1024:.0f} KB of "
                             f"shared memory, the compiler allocated {rep['shared_bytes'] / 1024:.0f} KB.")
            if rep["registers"] < b.registers:
                notes.append(f"{name}: the compiler used {rep['registers']} registers per thread, fewer than the "
                             f"model's {b.registers:.0f} for the tiles alone, so part of them lives elsewhere.")
            if (b.registers > MAX_REGISTERS_PER_THREAD) != (rep["spills"] > 0):
                notes.append(f"{name}: the model {'predicts' if b.registers > MAX_REGISTERS_PER_THREAD else 'rules out'}"
                             f" spills; the compiler reported {rep['spills']} spilled bytes.")
    return notes


# ----------------------------------------------------------------------------- figure

def figure(doc: dict, provenance: str) -> go.Figure:
    """Dropdown over head dim and dtype; per forward candidate of ``flash.FWD_TILES``: the
    model's registers (stacked) and shared memory (stacked) beside the compiler's measured
    values (diamonds, where the ablation compiled that tile), and programs per SM."""
    from kernels import flash

    found = measured(doc)
    variants = [(hd, eb) for hd in (64, 128, 256) for eb in (2, 4)]
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.1, row_heights=[0.37, 0.37, 0.26],
                        subplot_titles=("registers per thread", "shared memory per program (KB)",
                                        "programs per SM and what limits them"))
    per_variant = 10
    for vi, (head_dim, eb) in enumerate(variants):
        tiles = flash.candidate_tiles("fwd", head_dim)
        labels = [f"{bm}×{bn}<br>{w}w {s}s" for bm, bn, w, s in tiles]
        bs = [budget(*t, head_dim, eb) for t in tiles]
        reps = [found.get((head_dim, t)) if eb == 2 else None for t in tiles]
        vis = vi == 2  # D=128, fp16: the production case
        hover_src = [f"measured on rung {r['rung']}" if r else "not compiled by the benchmark" for r in reps]
        for name, vals, colour in (("acc", [b.regs_acc for b in bs], INDIGO),
                                   ("S/P", [b.regs_sp for b in bs], ORANGE),
                                   ("Q", [b.regs_q for b in bs], GREY)):
            fig.add_bar(x=labels, y=[round(v, 1) for v in vals], name=name, marker_color=colour, visible=vis,
                        legendgroup=name, showlegend=True,
                        hovertemplate="%{x}: %{y} registers<extra>" + name + "</extra>", row=1, col=1)
        fig.add_scatter(x=labels, y=[r["registers"] if r else None for r in reps], mode="markers", visible=vis,
                        name="compiler", legendgroup="compiler", showlegend=True,
                        marker=dict(symbol="diamond", size=11, color=PINK, line=dict(width=1, color="#fff")),
                        customdata=[[h, r["spills"] if r else None] for h, r in zip(hover_src, reps)],
                        hovertemplate="compiler: %{y} registers, %{customdata[1]} spilled bytes "
                                      "(%{customdata[0]})<extra></extra>", row=1, col=1)
        for name, vals, colour in (("Q", [b.smem_q for b in bs], GREY),
                                   ("K × stages", [b.smem_k for b in bs], LIGHT_INDIGO),
                                   ("V × stages", [b.smem_v for b in bs], LIGHT_ORANGE)):
            fig.add_bar(x=labels, y=[round(v / 1024, 1) for v in vals], name=name, marker_color=colour, visible=vis,
                        legendgroup=name, showlegend=name != "Q",
                        hovertemplate="%{x}: %{y} KB<extra>" + name + "</extra>", row=2, col=1)
        fig.add_scatter(x=labels, y=[r["shared_bytes"] / 1024 if r else None for r in reps], mode="markers",
                        visible=vis, showlegend=False,
                        marker=dict(symbol="diamond", size=11, color=PINK, line=dict(width=1, color="#fff")),
                        customdata=hover_src, hovertemplate="compiler: %{y:.0f} KB (%{customdata})<extra></extra>",
                        row=2, col=1)
        fig.add_bar(x=labels, y=[b.programs_per_sm for b in bs], marker_color=GREY, visible=vis,
                    text=[f"{b.programs_per_sm} · {SHORT[b.limiter]}" for b in bs], textposition="outside",
                    textfont=dict(size=9), cliponaxis=False, constraintext="none", showlegend=False,
                    hovertemplate="%{x}: %{y} per SM, limited by %{text}<extra>model</extra>", row=3, col=1)
        fig.add_scatter(x=labels, y=[occupancy(r["registers"], r["shared_bytes"], t[2])[0] if r else None
                                     for r, t in zip(reps, tiles)],
                        mode="markers", visible=vis, showlegend=False,
                        marker=dict(symbol="diamond", size=11, color=PINK, line=dict(width=1, color="#fff")),
                        hovertemplate="from the compiler's registers and shared memory: %{y} per SM<extra></extra>",
                        row=3, col=1)
    assert len(fig.data) == per_variant * len(variants)
    fig.add_hline(y=MAX_REGISTERS_PER_THREAD, line_dash="dot", line_color=GREY, row=1, col=1,
                  annotation_text="255: beyond, spills", annotation_font_size=9, annotation_position="top left")
    fig.add_hline(y=SHARED_PER_PROGRAM / 1024, line_dash="dot", line_color=GREY, row=2, col=1,
                  annotation_text="227 KB per program", annotation_font_size=9, annotation_position="top left")
    menu = [dict(label=f"D={hd}, {'fp16' if eb == 2 else 'fp32'}", method="restyle",
                 args=[{"visible": [i // per_variant == vi for i in range(len(fig.data))]}])
            for vi, (hd, eb) in enumerate(variants)]
    fig.update_layout(barmode="stack", updatemenus=[buttons(menu, x=0, y=1.115, active=2, dropdown=True)], bargap=0.3)
    fig.update_xaxes(tickfont=dict(size=9))
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(range=[0, 300], row=1, col=1)
    fig.update_yaxes(range=[0, 400], row=2, col=1)
    fig.add_annotation(text=provenance, xref="paper", yref="paper", x=0, y=0, yshift=-30, showarrow=False,
                       xanchor="left", yanchor="top", align="left", font=dict(size=9, color=GREY))
    for ann in fig.layout.annotations:
        if ann.text in ("registers per thread", "shared memory per program (KB)", "programs per SM and what limits them"):
            ann.font = dict(size=11)
    fig = finish(fig, "The forward candidates' budget", 784, subtitle="model (bars), compiler (diamonds)",
                 top=172, bottom=60)
    # Above the plot, under the dropdown: the template's legend sits at the container's bottom,
    # where this figure keeps its provenance lines.
    fig.update_layout(showlegend=True, legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom", yref="paper",
                                                   font=dict(size=10)))
    return fig
