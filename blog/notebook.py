"""Display helpers for the posts: raw HTML in the executed notebook, plain text as a script."""

from __future__ import annotations

import html
import inspect
import textwrap
import re

import plotly.graph_objects as go

from .render import figure_html, figure_title


def in_notebook() -> bool:
    """True inside a Jupyter kernel (the site build); False when a post runs as a script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show(obj: go.Figure | str) -> None:
    """Display a figure or an HTML table; as a script, print what it is."""
    if not isinstance(obj, (go.Figure, str)):
        raise TypeError(f"show takes a plotly Figure or an HTML string, got {type(obj).__name__}")
    if not in_notebook():
        if isinstance(obj, go.Figure):
            print(f"[chart] {figure_title(obj)}")
        else:
            print("[table] " + re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", obj))).strip()[:400] + " ...")
        return
    from IPython.display import HTML, display

    display(HTML(figure_html(obj) if isinstance(obj, go.Figure) else obj))


def md(text: str) -> None:
    """Prose with numbers formatted from the data: Markdown in the page, plain text as a script."""
    if not isinstance(text, str):
        raise TypeError(f"md takes a str, got {type(text).__name__}")
    if not in_notebook():
        print(text)
        return
    from IPython.display import Markdown, display

    display(Markdown(text))


def show_source(obj, *, start: str | None = None, end: str | None = None) -> None:
    """Show a kernel's source, read from the package (never copied into a page)."""
    src = inspect.getsource(getattr(obj, "fn", obj))  # a @triton.jit kernel keeps its function in .fn
    for marker in (start, end):
        if marker is not None and marker not in src:
            raise ValueError(f"{marker!r} is not in the source of {getattr(obj, '__name__', obj)}")
    if start:
        src = src[src.rfind("\n", 0, src.index(start)) + 1:]  # from the start of the marker's line
    if end:
        src = src[: src.index(end)]
    src = textwrap.dedent(src)  # a function cut from inside a block keeps no useless indent
    if not in_notebook():
        print(src)
        return
    from IPython.display import HTML, display
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    display(HTML(highlight(src, PythonLexer(), HtmlFormatter(cssclass="highlight", wrapcode=True))))
