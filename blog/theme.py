"""The site's look for charts: one Plotly template, in a light and a dark variant.

Every colour a figure uses is a *role* (a provider such as ``"flash"``, or a part of the
chart such as ``"text"``) with one value per scheme. Figures are built with the light
values; ``docs/javascripts/charts.js`` swaps each light value for its dark twin when the
reader picks Material's dark palette, using the map from :func:`dark_recolor`. So the
two variants can never drift apart, and ``tests/test_blog.py`` checks every role's
contrast against the page background of its scheme.
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE_NAME = "blog"

# Page backgrounds behind the (transparent) charts: Material's default scheme is white;
# its slate scheme is hsla(225deg, 15%, 14%), which is #1e2129 in sRGB.
BACKGROUNDS = {"light": "#ffffff", "dark": "#1e2129"}
# Chart buttons, the same in both schemes (see template): a mid-grey face under near-black text
# (5:1), which stands 3:1 off the near-white face plotly.js gives the active and the hovered
# button (fixed in plotly.js), so the selected view shows, and 3:1 off either page.
BUTTON_BG, BUTTON_TEXT, BUTTON_ACTIVE = "#8790a0", "#1b1f24", "#f4faff"

LABELS = {
    "basic": "basic (post 1)",
    "vectorized": "vectorized (post 2)",
    "flash": "flash_attention",
    "flash-tf32": "flash, TF32 dots",
    "eager": "eager PyTorch",
    "sdpa": "PyTorch SDPA (default)",
    "sdpa-flash": "SDPA flash (FA2)",
    "sdpa-cudnn": "SDPA cuDNN",
    "sdpa-efficient": "SDPA mem-efficient",
    "fa4": "FlashAttention-4",
    "flash-pointer": "flash, pointer kernel (post 4)",
    "gluon-serial": "Gluon, serial consumers",
    "gluon-pipelined": "Gluon, intra-warpgroup overlap",
    "gluon-pingpong": "Gluon, ping-pong",
    "gluon-in-order": "Gluon, causal blocks in order",
    "gluon-3-stages": "Gluon, 3 K/V stages",
}
# For table headers, where width is short; the caption says what the columns are.
SHORT_LABELS = {"flash-tf32": "flash TF32", "eager": "eager", "sdpa": "SDPA", "sdpa-flash": "FA2",
                "sdpa-cudnn": "cuDNN", "sdpa-efficient": "mem-eff.", "fa4": "FA4", "flash-pointer": "pointer",
                "gluon-serial": "serial", "gluon-pipelined": "overlap", "gluon-pingpong": "ping-pong",
                "gluon-in-order": "in order", "gluon-3-stages": "3 stages"}

# role -> (light value, dark value). Marks (lines, bars, markers) need 3:1 against their
# page background, text 4.5:1 (WCAG 2.1, 1.4.11 and 1.4.3). Each value is unique within
# its scheme, so the light -> dark swap is a one-to-one map.
MARKS = {
    "basic": ("#616161", "#b3b3b3"),
    "vectorized": ("#b35c00", "#ffb74d"),
    "flash": ("#d81b60", "#f06292"),
    "flash-tf32": ("#8e24aa", "#ce93d8"),
    "eager": ("#3f51b5", "#8c9eff"),
    "sdpa": ("#00796b", "#4db6ac"),
    "sdpa-flash": ("#2e7d32", "#81c784"),
    "sdpa-cudnn": ("#5e35b1", "#b39ddb"),
    "sdpa-efficient": ("#795548", "#bcaaa4"),
    "fa4": ("#e65100", "#ff9e40"),
    "gluon": ("#00838f", "#4dd0e1"),  # post 5's Gluon kernel, every variant
    "reference": ("#424242", "#c7c7c7"),  # reference lines, predictions, the compulsory-bytes ticks
    # Post 5's timeline colours its bars by what a scope does (blog.query.scope_kind): matmuls in
    # blues, softmax in oranges, copies in greens, waits in greys, anything else in plum and brown.
    # Within a family, the scopes take the shades in turn (SCOPE_FAMILIES).
    "scope-matmul-1": ("#1a56b8", "#6fa8f5"),
    "scope-matmul-2": ("#0b7fa6", "#4fd0f0"),
    "scope-matmul-3": ("#4a3fb5", "#a59cf5"),
    "scope-softmax-1": ("#c75a00", "#ffa040"),
    "scope-softmax-2": ("#a33b1e", "#ff7a5c"),
    "scope-load-1": ("#3d7a1f", "#8fd16a"),
    "scope-load-2": ("#1f7a55", "#5fd6a4"),
    "scope-wait-1": ("#8a8a8a", "#70747c"),
    "scope-wait-2": ("#62808f", "#8fa9b5"),
    "scope-wait-3": ("#575757", "#aeb2ba"),
    "scope-wait-4": ("#857a70", "#b0a59b"),
    "scope-wait-5": ("#6e7a63", "#a6b59b"),
    "scope-wait-6": ("#7a6e80", "#b8a9c0"),
    "scope-other-1": ("#9c2f7a", "#f08cd0"),
    "scope-other-2": ("#8c5a3c", "#d6a88a"),
}
SCOPE_FAMILIES = {kind: tuple(role for role in MARKS if role.startswith(f"scope-{kind}-"))
                  for kind in ("matmul", "softmax", "load", "wait", "other")}
TEXT = {
    "text": ("#212121", "#e3e5ea"),
    "muted": ("#595959", "#a9adb8"),  # secondary labels; still 4.5:1
}
# Heat-map cells carry their own black labels, so they keep one value in both schemes:
# mid-tone fills that stand 3:1 off either background and leave black text 4.5:1.
CELLS = {
    "cell-on": "#7986cb",
    "cell-off": "#858585",
    "cell-edge": "#d07a00",
}
CELL_TEXT = "#000000"
# Colour scales for heat maps whose cells carry labels: every colour on them leaves black text
# 4.5:1 (the dark ends stop at mid-tones), and, opaque, they read the same on either page.
CELL_SCALES = {
    "diverging": [[0, "#5f95dc"], [0.5, "#f7f7f7"], [1, "#e57368"]],  # signed values, zero white
    "sequential": [[0, "#f2f0f7"], [1, "#8f8ac4"]],
    "greys": [[0, "#fcfcfc"], [1, CELLS["cell-off"]]],
}
# Decoration that carries no meaning of its own (grid lines, axis lines): no contrast rule.
DECOR = {
    "grid": ("rgba(0,0,0,0.10)", "rgba(255,255,255,0.12)"),
    "hover": ("#ffffff", "#2b2f3a"),
}


def _pick(scheme: str) -> int:
    if scheme not in BACKGROUNDS:
        raise ValueError(f"scheme must be one of {sorted(BACKGROUNDS)}, got {scheme!r}")
    return 0 if scheme == "light" else 1


def color(role: str, scheme: str = "light") -> str:
    """The colour of ``role`` (a provider name or a chart part) in ``scheme``."""
    i = _pick(scheme)
    for table in (MARKS, TEXT, DECOR):
        if role in table:
            return table[role][i]
    if role in CELLS:
        return CELLS[role]
    raise ValueError(f"no colour for role {role!r}; known: {sorted({**MARKS, **TEXT, **DECOR, **CELLS})}")


def label(provider: str) -> str:
    """The reader-facing name of a provider; an unknown provider keeps its own name."""
    if not isinstance(provider, str):
        raise TypeError(f"provider must be a str, got {type(provider).__name__}")
    return LABELS.get(provider, provider)


def short_label(provider: str) -> str:
    """A provider's name in a table header: 'eager', 'SDPA', 'flash TF32'."""
    if not isinstance(provider, str):
        raise TypeError(f"provider must be a str, got {type(provider).__name__}")
    return SHORT_LABELS.get(provider, provider)


def mark_color(provider: str, scheme: str = "light") -> str:
    """A provider's trace colour; providers without one of their own share the reference colour."""
    return color(provider if provider in MARKS else "reference", scheme)


def scope_color(kind: str, index: int, scheme: str = "light") -> str:
    """The ``index``-th shade (cycling) of a scope family ("matmul", "softmax", "load", "wait", "other")."""
    if kind not in SCOPE_FAMILIES:
        raise ValueError(f"no colours for scope kind {kind!r}; kinds: {sorted(SCOPE_FAMILIES)}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    family = SCOPE_FAMILIES[kind]
    return color(family[index % len(family)], scheme)


def cell_scale(name: str) -> list[list]:
    """A Plotly colour scale for labelled heat-map cells (black labels, CELL_TEXT)."""
    if name not in CELL_SCALES:
        raise ValueError(f"no cell colour scale {name!r}; known: {sorted(CELL_SCALES)}")
    return [list(stop) for stop in CELL_SCALES[name]]


def dark_recolor() -> dict[str, str]:
    """light value -> dark value for every role that changes between the schemes."""
    return {light: dark for table in (MARKS, TEXT, DECOR) for light, dark in table.values()}


def template(scheme: str = "light") -> go.layout.Template:
    """The one layout every figure shares; the dark variant differs only in colours."""
    def c(role):
        return color(role, scheme)

    axis = dict(gridcolor=c("grid"), linecolor=c("grid"), zerolinecolor=c("grid"), automargin=True,
                title=dict(standoff=8, font=dict(size=12)), tickfont=dict(size=11))
    return go.layout.Template(layout=dict(
        font=dict(family="-apple-system, BlinkMacSystemFont, Segoe UI, Roboto, Helvetica, Arial, sans-serif",
                  size=12, color=c("text")),
        title=dict(x=0.01, xanchor="left", y=1, yanchor="top", yref="container", pad=dict(t=8),
                   font=dict(size=15), automargin=True),
        paper_bgcolor="rgba(0,0,0,0)",  # the page's own background shows through
        plot_bgcolor="rgba(0,0,0,0)",
        hovermode="x unified",  # hover compares every series at one x
        hoverlabel=dict(bgcolor=c("hover"), bordercolor=c("grid"), font=dict(color=c("text"))),
        # The legend sits under the plot, in rows: above it, it fought the title and panel titles.
        legend=dict(orientation="h", x=0, xanchor="left", y=0, yanchor="bottom", yref="container",
                    font=dict(size=11), bgcolor="rgba(0,0,0,0)"),
        margin=dict(l=60, r=20, t=70, b=60),
        xaxis=axis, yaxis=axis,
        modebar=dict(bgcolor="rgba(0,0,0,0)", color=c("muted"), activecolor=c("text")),
        # Buttons keep one face and dark text in both schemes: plotly.js paints the active button a
        # fixed near-white (BUTTON_ACTIVE), under which the dark scheme's light text could not be
        # read. Their outline takes the muted role, 4.5:1 off the page in either scheme.
        updatemenudefaults=dict(bgcolor=BUTTON_BG, bordercolor=c("muted"), font=dict(color=BUTTON_TEXT, size=11)),
        annotationdefaults=dict(font=dict(color=c("muted"), size=11), showarrow=False),
        shapedefaults=dict(line=dict(color=c("reference"))),
    ))


pio.templates[TEMPLATE_NAME] = template("light")
