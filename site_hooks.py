"""MkDocs hooks: ship plotly.js, and fill chart placeholders in Markdown pages from docs/data.

A Markdown page writes ``<!-- chart: NAME -->``; NAME is a function below that
returns HTML. Posts (executed notebooks) call the blog package directly instead.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PLACEHOLDER = re.compile(r"<!--\s*chart:\s*([a-z_]+)\s*-->")


def _headline() -> str:
    from blog import home

    return home.headline_figure_html()


def _headline_sentence() -> str:
    from blog import home

    return home.headline_sentence()


RENDERERS = {"production_fwd": _headline, "headline_sentence": _headline_sentence}


def on_page_markdown(markdown, page, config, files):
    def fill(m):
        name = m.group(1)
        if name not in RENDERERS:
            raise ValueError(f"{page.file.src_path}: unknown chart placeholder {name!r}")
        return RENDERERS[name]()

    return PLACEHOLDER.sub(fill, markdown)


# nbconvert inlines ~600 KB of JupyterLab CSS into every notebook page. Large inline
# styles move to shared files (downloaded once, cached), and nbconvert's mermaid loader,
# which would import mermaid from a CDN, is dropped: no page here has a diagram.
_SHARED_CSS: dict[str, str] = {}
_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.S)
_MERMAID = re.compile(r'<script type="module">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*?</script>', re.S)


def on_post_page(output, page, config):
    root = "../" * page.url.count("/")

    def share(m):
        css = m.group(1)
        if len(css) < 20_000:
            return m.group(0)
        name = f"nb-{hashlib.sha1(css.encode()).hexdigest()[:10]}.css"
        _SHARED_CSS[name] = css
        return f'<link rel="stylesheet" href="{root}stylesheets/{name}">'

    return _MERMAID.sub("", _STYLE.sub(share, output))


def on_post_build(config):
    import plotly.offline

    css_dir = Path(config["site_dir"]) / "stylesheets"
    css_dir.mkdir(parents=True, exist_ok=True)
    for name, css in _SHARED_CSS.items():
        (css_dir / name).write_text(css, encoding="utf-8")

    target = Path(config["site_dir"]) / "javascripts" / "plotly.min.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
