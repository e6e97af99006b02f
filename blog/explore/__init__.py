"""Explorable figures: Plotly sliders, buttons and frames over states computed at build time.

One module per figure. Every state a control can show is computed here in Python, from
the kernels' own logic or from docs/data, and shipped in the figure's JSON; the page adds
no JavaScript of its own. A control that must combine with another one (a slider over
steps and a causal switch, say) does so by splitting the work: one control restyles the
data of every variant at once, the other only picks which variant is visible.

Nothing here imports torch or the kernels at module level: the figure functions do, lazily.
"""

from __future__ import annotations

import plotly.graph_objects as go

from .. import theme

# The site's palette (blog.theme): light values here, swapped for their dark values by
# docs/javascripts/charts.js when the reader picks the dark scheme.
PINK, INDIGO, ORANGE, GREY = (theme.mark_color(p) for p in ("flash", "eager", "vectorized", "basic"))
GREEN = theme.mark_color("sdpa-flash")
# Controls keep one opaque face in both schemes (theme.BUTTON_BG, with BUTTON_TEXT on it):
# plotly.js paints the active and the hovered button a fixed near-white, under which light text
# could not be read, and an opened dropdown must hide the plot behind it. Their outlines, the
# slider's ticks and its labels take roles that charts.js swaps with the palette, so each stands
# 3:1 (outline, ticks) or 4.5:1 (labels) off the page in either scheme.
EDGE = theme.color("muted")
MENU = dict(bgcolor=theme.BUTTON_BG, bordercolor=EDGE, borderwidth=1)
SLIDER = dict(bgcolor=theme.BUTTON_BG, activebgcolor=theme.BUTTON_ACTIVE, bordercolor=EDGE, borderwidth=1,
              tickcolor=EDGE)
# A phone's screen less Material's header: an explorable taller than this cannot show its
# control and what the control changes at once (tests/site/test_contrast.py measures it).
PHONE_SCREEN = 844 - 56
MONO = "SFMono-Regular, Menlo, Consolas, 'Liberation Mono', monospace"


def finish(fig: go.Figure, title: str, height: int, *, subtitle: str | None = None, short_title: str | None = None,
           top: int = 70, bottom: int = 40) -> go.Figure:
    """The site's template (fonts, colours, transparent backgrounds) with this figure's size.

    ``title`` is one line: Plotly anchors a multi-line title by its first line's baseline,
    which pushes the first line above the chart. A second line goes in ``subtitle``, which
    Plotly lays out below the title. ``short_title`` replaces the title on a phone.
    """
    if "<br" in title:
        raise ValueError(f"finish: the title must be one line (put the rest in subtitle): {title!r}")
    if not isinstance(height, int) or not 0 < height <= PHONE_SCREEN:
        raise ValueError(f"finish: an explorable is at most {PHONE_SCREEN} px tall (one phone screen, its control "
                         f"visible), got {height!r}: make it shorter or split it into two figures")
    fig.update_layout(title=dict(text=title, font=dict(size=14)), template=theme.TEMPLATE_NAME, height=height,
                      margin=dict(l=48, r=12, t=top, b=bottom), showlegend=False, font=dict(size=11),
                      modebar=dict(orientation="v"),  # down the right edge, clear of the controls
                      meta={"short_title": short_title or title, "explorable": True})
    if subtitle:
        fig.update_layout(title_subtitle=dict(text=subtitle, font=dict(size=11)))
    return fig


def provenance(doc: dict, lead: str = "Measured on") -> str:
    """Where a benchmark document's numbers come from, in three short lines (a narrow screen)."""
    p = doc["provenance"]
    return (f"{lead} {p['gpu']}<br>torch {p['torch']} · triton {p['triton']} · CUDA {p['cuda']}<br>"
            f"driver {p['driver']} · {p['date'][:10]} · commit {p['git_commit'][:7]}")


def restyle(fig: go.Figure, updates: dict[int, dict]) -> list:
    """``Plotly.restyle`` arguments that set, per trace index, the attributes in ``updates``.

    Restyle takes one list per attribute with an entry per trace; a trace that does not
    change an attribute gets its current value, so no trace is reset by omission.
    """
    if not isinstance(updates, dict) or not updates:
        raise ValueError("restyle: updates must be a non-empty {trace index: {attribute: value}} dict")
    indices = sorted(updates)
    keys = sorted({k for u in updates.values() for k in u})
    args = {}
    for key in keys:
        column = []
        for i in indices:
            if key in updates[i]:
                column.append(updates[i][key])
            elif key.split(".")[0] not in fig.data[i]:
                column.append(None)  # not an attribute of this trace type: restyle leaves it alone
            else:
                current = fig.data[i][key]
                column.append(current.tolist() if hasattr(current, "tolist") else current)
        args[key] = column
    return [args, indices]


def slider(steps: list[dict], *, prefix: str, active: int = 0, y: float = 1.0, pad_t: int = 0) -> dict:
    """A Plotly slider over precomputed steps, drawn in the shared control style."""
    if not steps:
        raise ValueError("slider: no steps")
    # pad r: Plotly centres each step's label on its tick, so the last label reaches half its
    # width past the rail's end; the padding keeps it inside the chart on a phone.
    return dict(active=active, steps=steps, x=0, len=1, y=y, yanchor="top", xanchor="left",
                pad=dict(t=pad_t, b=0, r=24), currentvalue=dict(prefix=prefix, font=dict(size=12)),
                font=dict(size=10), ticklen=4, minorticklen=2, **SLIDER)


def buttons(items: list[dict], *, x: float = 0, y: float = 1.0, active: int = 0, dropdown: bool = False) -> dict:
    """A row of Plotly buttons (or a dropdown) in the shared control style."""
    if not items:
        raise ValueError("buttons: no items")
    return dict(type="dropdown" if dropdown else "buttons", direction="down" if dropdown else "right",
                active=active, buttons=items, x=x, y=y, xanchor="left", yanchor="bottom",
                pad=dict(t=0, r=4, b=2, l=0), showactive=True, font=dict(size=11, color=theme.BUTTON_TEXT), **MENU)


def wrap_code(line: str, width: int = 56) -> str:
    """A source line broken at commas and spaces for a narrow screen (continuations indented)."""
    import textwrap

    return "<br>".join(textwrap.wrap(line, width=width, subsequent_indent="    ", break_on_hyphens=False))
