"""Figure 1 (post 3): the online softmax, one key tile at a time, on a real small example.

One program of the forward kernel (its BLOCK_M query rows) is re-executed in float64,
tile by tile, with the same recurrence and the same loop bounds as
``kernels.flash.flash_fwd_kernel``: scores in log2 units, a running max ``m_i``, a running
sum ``l_i``, the rescale factor ``alpha`` and the accumulator ``acc``. The kernel lines
shown beside each quantity are read from the kernel's source, so an edit to the kernel
that renames or rewrites one of them fails the build instead of leaving a stale figure.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import theme
from . import MONO, buttons, finish, restyle, slider, wrap_code
from .schedule import forward_key_tiles

LOG2E = 1.4426950408889634  # the kernels' constant (kernels.tiles.LOG2E), not imported: no torch here

# The example: the last query block of a 32 x 32 attention, key tiles of 8, head dim 4.
N, D, BLOCK_M, BLOCK_N, SEED = 32, 4, 8, 8, 7
PID_M = N // BLOCK_M - 1  # the last block: under a causal mask it sees every key tile, the last one masked


@dataclass(frozen=True)
class Step:
    """The program's state after one key tile."""
    start_n: int
    masked: bool
    s: np.ndarray  # (BLOCK_M, BLOCK_N) scores in log2 units; -inf where masked
    m_old: np.ndarray
    m_new: np.ndarray
    alpha: np.ndarray
    l: np.ndarray
    acc: np.ndarray
    lse: np.ndarray  # m + log2(l) if this were the last tile


def example(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k, v of shape (N, D) in float64. Keys grow along the sequence so the running max
    moves as tiles arrive and alpha visibly rescales the earlier sums."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((N, D))
    k = rng.standard_normal((N, D)) * np.linspace(0.6, 1.8, N)[:, None]
    v = rng.standard_normal((N, D))
    return q, k, v


def run(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool, pid_m: int = PID_M,
        block_m: int = BLOCK_M, block_n: int = BLOCK_N) -> list[Step]:
    """The forward kernel's program ``pid_m``, re-executed in float64; one Step per key tile."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, np.ndarray) or t.ndim != 2:
            raise TypeError(f"online_softmax.run: {name} must be a 2-D numpy array, got {type(t).__name__}")
    if k.shape != v.shape or q.shape[1] != k.shape[1]:
        raise ValueError(f"online_softmax.run: shapes q {q.shape}, k {k.shape}, v {v.shape} do not match")
    n_q, d = q.shape
    n_k = k.shape[0]
    if not 0 <= pid_m * block_m < n_q:
        raise ValueError(f"online_softmax.run: program {pid_m} has no rows among {n_q} queries")
    qk_scale = LOG2E / math.sqrt(d)  # the launcher's scale * LOG2E, with scale = 1/sqrt(D)
    rows = pid_m * block_m + np.arange(block_m)
    q_tile = np.where((rows < n_q)[:, None], q[np.minimum(rows, n_q - 1)], 0.0)
    m_i = np.full(block_m, -np.inf)
    l_i = np.zeros(block_m)
    acc = np.zeros((block_m, d))
    steps = []
    for start_n, masked in forward_key_tiles(pid_m, n_k, block_m, block_n, causal):
        cols = start_n + np.arange(block_n)
        k_tile = np.where((cols < n_k)[:, None], k[np.minimum(cols, n_k - 1)], 0.0)
        v_tile = np.where((cols < n_k)[:, None], v[np.minimum(cols, n_k - 1)], 0.0)
        qk = q_tile @ k_tile.T
        if not masked:
            # The kernel's unmasked branch (SOFTMAX="exp2-fma"): max of the raw scores, then one FMA.
            m_new = np.maximum(m_i, qk.max(1) * qk_scale)
            s = qk * qk_scale
            p = np.exp2(qk * qk_scale - m_new[:, None])
        else:
            s = qk * qk_scale
            keep = (cols < n_k)[None, :]
            if causal:
                keep = keep & (rows[:, None] >= cols[None, :])
            s = np.where(keep, s, -np.inf)
            m_new = np.maximum(m_i, s.max(1))
            p = np.exp2(s - m_new[:, None])
        alpha = np.exp2(m_i - m_new)
        l_new = l_i * alpha + p.sum(1)
        acc = acc * alpha[:, None] + p @ v_tile
        steps.append(Step(start_n, masked, s, m_i, m_new, alpha, l_new, acc.copy(), m_new + np.log2(l_new)))
        m_i, l_i = m_new, l_new
    return steps


def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool, pid_m: int = PID_M,
              block_m: int = BLOCK_M) -> tuple[np.ndarray, np.ndarray]:
    """softmax(S) @ V and the log2-sum-exp2 of the same rows, computed directly in float64."""
    n_q, d = q.shape
    rows = np.arange(pid_m * block_m, min(n_q, (pid_m + 1) * block_m))
    s = q[rows] @ k.T / math.sqrt(d)
    if causal:
        s = np.where(rows[:, None] >= np.arange(k.shape[0])[None, :], s, -np.inf)
    w = np.exp(s - s.max(1, keepdims=True))
    out = (w / w.sum(1, keepdims=True)) @ v
    lse = (s.max(1) + np.log(w.sum(1))) * LOG2E
    return out, lse


def kernel_check(causal: bool) -> tuple[float, float]:
    """Max |difference| of (output, lse) between this re-execution and the Triton kernel
    (fp32, on this machine: the GPU or the CPU interpreter) on the same inputs."""
    import torch

    from kernels import flash
    from kernels.settings import INTERPRET

    q, k, v = example()
    steps = run(q, k, v, causal=causal)
    ours = steps[-1].acc / steps[-1].l[:, None]
    t = [torch.tensor(x, dtype=torch.float32).reshape(1, 1, N, D) for x in (q, k, v)]
    if not INTERPRET:
        t = [x.cuda() for x in t]
    o4, lse, _ = flash.flash_forward(*t, causal, 1 / math.sqrt(D), "ieee")
    rows = slice(PID_M * BLOCK_M, (PID_M + 1) * BLOCK_M)
    o = o4[0, 0, rows].double().cpu().numpy()
    lse = lse[0, 0, rows].double().cpu().numpy()
    return float(np.abs(o - ours).max()), float(np.abs(lse - steps[-1].lse).max())


# ----------------------------------------------------------------------------- kernel lines

def kernel_lines() -> dict[str, str]:
    """Quantity -> the line of the forward kernel that computes it, read from the source (the tile
    loop in ``kernels/tiles.py``, the kernel body in ``kernels/flash.py``)."""
    from kernels import flash, tiles as tile_loops

    tiles = inspect.getsource(tile_loops.fwd_tiles.fn)
    body = inspect.getsource(flash.flash_fwd_kernel.fn)
    wanted = {
        "S (unmasked tile)": (tiles, "p = tl.exp2(qk * qk_scale - m_new"),
        "S (masked tile)": (tiles, 's = tl.where(keep, s, float("-inf"))'),
        "m (unmasked tile)": (tiles, "m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)"),
        "m (masked tile)": (tiles, "m_new = tl.maximum(m_i, tl.max(s, 1))"),
        "alpha": (tiles, "alpha = tl.exp2(m_i - m_new)"),
        "l": (tiles, "l_i = l_i * alpha + tl.sum(p, 1)"),
        "acc": (tiles, "acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None]"),
        "out": (body, "out = acc / l_i[:, None]"),
        "lse": (body, "lse = m_i + tl.log2(l_i)"),
    }
    found = {}
    for quantity, (src, needle) in wanted.items():
        lines = [ln.strip() for ln in src.splitlines() if needle in ln]
        if len(lines) != 1:
            raise LookupError(f"online_softmax: expected one kernel line containing {needle!r}, found {len(lines)}: "
                              "kernels/flash.py or kernels/tiles.py changed, update blog/explore/online_softmax.py")
        found[quantity] = lines[0].split("  # ")[0]  # the code, without its comment
    return found


# ----------------------------------------------------------------------------- figure

def _round(a: np.ndarray, digits: int = 3):
    return [[None if not math.isfinite(x) else round(float(x), digits) for x in row] for row in np.atleast_2d(a)]


MASKED = theme.CELLS["cell-off"]  # the masked cells' grey, opaque and the same in both schemes


def mask_text(s: np.ndarray) -> list[list[str]]:
    """The mask's cell labels: "−∞" on each masked score (-inf), nothing on the others."""
    return [["−∞" if np.isneginf(x) else "" for x in row] for row in np.atleast_2d(s)]


def _code_text(step: Step, lines: dict[str, str], last: bool) -> str:
    kind = "masked" if step.masked else "unmasked"
    picks = [f"S ({kind} tile)" if step.masked else "S (unmasked tile)", f"m ({kind} tile)", "alpha", "l", "acc"]
    if last:
        picks += ["out", "lse"]
    return "<br>".join(wrap_code(lines[p], width=50) for p in picks)


def figure() -> go.Figure:
    """Slider over the key tiles; buttons switch the causal mask. Panels: the S tile (grey:
    masked, -inf), per-row m, alpha, l and lse, the accumulator, and acc / l minus
    softmax(S) @ V (zero only after the last tile); below, the kernel lines at work."""
    q, k, v = example()
    lines = kernel_lines()
    variants = {causal: run(q, k, v, causal=causal) for causal in (False, True)}
    refs = {causal: reference(q, k, v, causal=causal) for causal in (False, True)}
    n_steps = len(variants[False])
    # One colour scale for the difference over every step, so the last step reads as zero.
    worst = max(float(np.abs(st.acc / st.l[:, None] - refs[c][0]).max()) for c in variants for st in variants[c])
    if len(variants[True]) != n_steps:
        raise AssertionError("online_softmax: the example must visit as many tiles with and without the mask")

    fig = make_subplots(rows=4, cols=2, specs=[[{"colspan": 2}, None], [{}, {}], [{}, {}], [{"colspan": 2}, None]],
                        row_heights=[0.3, 0.24, 0.24, 0.22], vertical_spacing=0.06, horizontal_spacing=0.14,
                        subplot_titles=("S tile (log2 units; grey: masked, −∞)", "m · α · ℓ · lse per row",
                                        "acc (unnormalised output)", "acc / ℓ − softmax(S) @ V", "O = acc / ℓ",
                                        "the kernel lines at work"))
    row_labels = [f"q{PID_M * BLOCK_M + i}" for i in range(BLOCK_M)]
    # Trace layout per variant (causal False, then True): S, mask, stats, acc, diff, out, code.
    per_variant = 7
    for causal in (False, True):
        vis = not causal
        cells = dict(textfont=dict(size=9, color=theme.CELL_TEXT), xgap=1, ygap=1, showscale=False, visible=vis)
        signed = dict(colorscale=theme.cell_scale("diverging"), zmid=0, texttemplate="%{z:.2f}", **cells)
        fig.add_heatmap(z=[[0]], x=[0], y=row_labels, **signed,
                        hovertemplate="row %{y}, key %{x}: s = %{z:.4f}<extra></extra>", row=1, col=1)
        # The mask: a grey cell under each masked score, labelled "−∞" there and nowhere else
        # (a texttemplate would print on the empty cells too, over the live scores).
        fig.add_heatmap(z=[[None]], x=[0], y=row_labels, colorscale=[[0, MASKED], [1, MASKED]], zmin=0, zmax=1,
                        text=[[""]], texttemplate="%{text}", hoverinfo="skip", **cells, row=1, col=1)
        fig.add_heatmap(z=[[0]], x=["m", "α", "ℓ", "lse"], y=row_labels, colorscale=theme.cell_scale("sequential"),
                        text=[[""]], texttemplate="%{text}", zmin=0, zmax=1,
                        hovertemplate="row %{y}: %{x} = %{text}<extra></extra>", **cells, row=2, col=1)
        fig.add_heatmap(z=[[0]], x=[f"d{j}" for j in range(D)], y=row_labels, **signed,
                        hovertemplate="row %{y}, %{x}: acc = %{z:.4f}<extra></extra>", row=2, col=2)
        fig.add_heatmap(z=[[0]], x=[f"d{j}" for j in range(D)], y=row_labels, colorscale=theme.cell_scale("greys"),
                        text=[[""]], texttemplate="%{text}", zmin=0, zmax=worst,
                        hovertemplate="row %{y}, %{x}: difference %{text}<extra></extra>", **cells, row=3, col=1)
        fig.add_heatmap(z=[[0]], x=[f"d{j}" for j in range(D)], y=row_labels, **signed,
                        hovertemplate="row %{y}, %{x}: O = %{z:.4f}<extra></extra>", row=3, col=2)
        fig.add_scatter(x=[0], y=[0], mode="text", text=[""], textposition="bottom right",
                        textfont=dict(family=MONO, size=9.5), hoverinfo="skip", visible=vis, row=4, col=1)

    def state(causal: bool, t: int) -> dict[int, dict]:
        st = variants[causal][t]
        out_ref, _ = refs[causal]
        partial = st.acc / st.l[:, None]
        diff = partial - out_ref
        mask = np.where(np.isfinite(st.s), np.nan, 1.0)
        cols = [f"k{st.start_n + j}" for j in range(BLOCK_N)]
        stats = np.stack([st.m_new, st.alpha, st.l, st.lse], 1)
        span = stats.max(0) - stats.min(0)
        shade = (stats - stats.min(0)) / np.where(span > 0, span, 1)
        base = (1 if causal else 0) * per_variant
        return {
            base: dict(z=_round(st.s), x=cols),
            base + 1: dict(z=_round(mask, 0), x=cols, text=mask_text(st.s)),
            base + 2: dict(z=_round(shade, 2), text=[[f"{x:.3g}" for x in row] for row in stats]),
            base + 3: dict(z=_round(st.acc)),
            base + 4: dict(z=_round(np.abs(diff), 12), text=[[f"{x:.0e}" for x in row] for row in diff]),
            base + 5: dict(z=_round(partial)),
            base + 6: dict(text=[_code_text(st, lines, t == n_steps - 1)]),
        }

    steps = []
    for t in range(n_steps):
        upd = {**state(False, t), **state(True, t)}
        tile = variants[False][t]
        steps.append(dict(method="restyle", args=restyle(fig, upd),
                          label=f"keys {tile.start_n}–{tile.start_n + BLOCK_N - 1}"))
    # Show the last step first: the reader sees the finished result, then steps back through it.
    last = {**state(False, n_steps - 1), **state(True, n_steps - 1)}
    for i, attrs in last.items():
        fig.data[i].update(attrs)

    n_traces = 2 * per_variant
    switch = [dict(label=label, method="restyle",
                   args=[{"visible": [(i >= per_variant) == causal for i in range(n_traces)]}])
              for label, causal in (("full", False), ("causal", True))]
    fig.update_layout(sliders=[slider(steps, prefix="after the tile of ", active=n_steps - 1, y=-0.005, pad_t=6)],
                      updatemenus=[buttons(switch, x=0, y=1.045)])
    for r, c in ((1, 1), (2, 1), (2, 2), (3, 1), (3, 2)):
        fig.update_yaxes(autorange="reversed", tickfont=dict(size=9), row=r, col=c)
        fig.update_xaxes(tickfont=dict(size=9), row=r, col=c)
    fig.update_xaxes(visible=False, range=[0, 1], row=4, col=1)
    fig.update_yaxes(visible=False, range=[-1, 0], row=4, col=1)
    for ann in fig.layout.annotations:
        ann.font = dict(size=11)
    return finish(fig, "The online softmax of one program", 784,
                  subtitle=f"rows {PID_M * BLOCK_M}–{(PID_M + 1) * BLOCK_M - 1} of a {N}×{N} attention, "
                           f"key tiles of {BLOCK_N}", top=112, bottom=80)
