"""Figure 3 (post 2): broadcast addressing, with N and D under the reader's control.

``offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd`` for a contiguous (N, D) key
matrix (stride_kn = D, stride_kd = 1), padded to the power-of-two block sizes the
vectorized kernel launches with (``next_pow2`` of N and of D), with the kernel's mask
``(offs_n < N)[:, None] & (offs_d < D)[None, :]``. Masked cells still show the offset the
broadcast computes: the mask is what keeps the load from reading it.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .. import theme
from . import GREY, buttons, finish, restyle, slider

N_VALUES = tuple(range(1, 13))
D_VALUES = tuple(range(1, 9))


def next_pow2(x: int) -> int:
    """The kernels' block size for an extent (kernels.runtime.next_pow2)."""
    return 1 << max(0, (int(x) - 1).bit_length())


def offsets(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, mask) of the (BLOCK_N, BLOCK_D) tile the vectorized kernel loads for N keys of D features."""
    for name, value in (("n", n), ("d", d)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"addressing: {name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"addressing: {name} must be >= 1, got {value}")
    offs_n, offs_d = np.arange(next_pow2(n)), np.arange(next_pow2(d))
    stride_kn, stride_kd = d, 1  # a contiguous (N, D) matrix
    offs = offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd  # the kernel's broadcast
    mask = (offs_n < n)[:, None] & (offs_d < d)[None, :]
    return offs, mask


def figure() -> go.Figure:
    """Slider over N, dropdown over D: offsets in blue where loaded, grey where masked."""
    fig = go.Figure()
    for d in D_VALUES:
        # The hover names cells by their labels, which already say "n=" and "d=".
        # Opaque mid-tone cells with black offsets, the same in both schemes (theme.CELLS): on a
        # see-through grey, Plotly's automatic label colour went dark on the dark page.
        fig.add_heatmap(z=[[0]], text=[[""]], texttemplate="%{text}", textfont=dict(size=11, color=theme.CELL_TEXT),
                        zmin=0, zmax=1, colorscale=[[0, theme.CELLS["cell-off"]], [1, theme.CELLS["cell-on"]]],
                        showscale=False, xgap=2, ygap=2,
                        customdata=[[""]], visible=d == 5,
                        hovertemplate="key %{y}, feature %{x}: offset %{text} (%{customdata})<extra></extra>")

    def updates(n: int) -> dict[int, dict]:
        out = {}
        for i, d in enumerate(D_VALUES):
            offs, mask = offsets(n, d)
            aliases = [[("loaded" if m else
                         f"masked: would read key {o // d}, feature {o % d}" if o < n * d else "masked: past the end")
                        for o, m in zip(ro, rm)] for ro, rm in zip(offs.tolist(), mask.tolist())]
            out[i] = dict(z=mask.astype(int).tolist(), text=offs.tolist(), customdata=aliases,
                          x=[f"d={j}" for j in range(offs.shape[1])], y=[f"n={j}" for j in range(offs.shape[0])])
        return out

    steps = [dict(method="restyle", args=restyle(fig, updates(n)), label=str(n)) for n in N_VALUES]
    first = N_VALUES.index(6)
    for i, attrs in updates(6).items():
        fig.data[i].update(attrs)
    menu = [dict(label=f"D = {d} (BLOCK_D = {next_pow2(d)})", method="restyle",
                 args=[{"visible": [j == i for j in range(len(D_VALUES))]}]) for i, d in enumerate(D_VALUES)]
    fig.update_layout(sliders=[slider(steps, prefix="N (keys) = ", active=first, y=-0.1, pad_t=10)],
                      updatemenus=[buttons(menu, x=0, y=1.09, active=D_VALUES.index(5), dropdown=True)])
    fig.update_yaxes(autorange="reversed", )
    fig.update_xaxes(side="top")
    # Two lines: one would run past the right edge of a phone.
    fig.add_annotation(text="grey: masked (never loaded);<br>offsets for a contiguous (N, D) matrix, stride_kn = D",
                       align="left",
                       xref="paper", yref="paper", x=0, y=0, yshift=-8, yanchor="top", xanchor="left",
                       showarrow=False, font=dict(size=10, color=GREY))
    return finish(fig, "K offsets = offs_n[:, None] × D + offs_d[None, :]",
                  600, subtitle="rows: offs_n (keys), columns: offs_d (features)", top=125, bottom=120)
