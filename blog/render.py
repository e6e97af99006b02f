"""A Plotly figure as an HTML fragment that does not block the page's first paint.

The fragment holds the figure as JSON in a ``<script type="application/json">`` beside an
empty container; ``docs/javascripts/charts.js`` draws it once plotly.js has loaded
(deferred), switches its colours with the palette and adapts it to narrow screens. The
provenance (GPU, versions, date, commit) is a line of text under the chart, so it wraps
instead of being cut on a phone.
"""

from __future__ import annotations

import html
import json
import re

import plotly.graph_objects as go
import plotly.io as pio

from . import theme

# Box and lasso select do nothing on this site (no page code reads a selection), and the two
# buttons pushed the modebar under chart titles.
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}


def plain_text(markup: str) -> str:
    """Plotly's small HTML subset (<br>, <b>, ...) as plain text, for accessible names."""
    if not isinstance(markup, str):
        raise TypeError(f"markup must be a str, got {type(markup).__name__}")
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<br\s*/?>", " ", re.sub(r"<(?!br)[^>]+>", "", markup)))).strip()


def figure_title(fig: go.Figure) -> str:
    """The figure's title, and its subtitle if any, as plain text; every figure on the site
    must have a title."""
    if not isinstance(fig, go.Figure):
        raise TypeError(f"expected a plotly Figure, got {type(fig).__name__}")
    title = plain_text(fig.layout.title.text or "")
    if not title:
        raise ValueError("a figure needs a title: it is the chart's accessible name")
    subtitle = plain_text(fig.layout.title.subtitle.text or "")
    return f"{title} — {subtitle}" if subtitle else title


def figure_html(fig: go.Figure) -> str:
    """The fragment: a labelled container, the figure JSON, and the provenance caption."""
    title = figure_title(fig)
    meta = fig.layout.meta or {}
    payload = json.dumps({"config": CONFIG, "dark": theme.dark_recolor()})
    # "</" inside a script element would end it early; JSON allows "<\/" for the same text.
    figure_json = pio.to_json(fig, validate=False).replace("</", "<\\/")
    data = payload[:-1] + ', "figure": ' + figure_json + "}"
    height = int(fig.layout.height or 450)
    caption = ""
    if meta.get("notes"):  # why a series has no point somewhere: on the page, not only in a tooltip
        items = "".join(f"<li>{html.escape(note)}</li>" for note in meta["notes"])
        caption += f'<ul class="chart-notes">{items}</ul>'
    if meta.get("provenance"):
        lines = "<br>".join(html.escape(line) for line in meta["provenance"])
        caption += f'<p class="chart-provenance">Measured on {lines}</p>'
    # A div, not <figure>: Material shrinks figures to their content's width (made for images).
    return (f'<div class="chart"><div class="plotly-chart" role="img" aria-label="{html.escape(title)}" '
            f'style="min-height:{height}px"><div class="plotly-graph-div"></div>'
            f'<script type="application/json">{data}</script></div>{caption}</div>')
