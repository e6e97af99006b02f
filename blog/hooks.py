"""MkDocs hooks: chart placeholders, notebook HTML made to read like the rest of the site,
a search index of prose, and notebook re-execution only where a post's inputs changed.

A Markdown page writes ``<!-- chart: NAME -->``; NAME is a key of RENDERERS. Posts
(executed notebooks) call the chart code themselves, in their own kernel.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import platform
import posixpath
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from bs4 import BeautifulSoup
from mkdocs.plugins import event_priority

log = logging.getLogger("mkdocs.hooks.blog")

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"<!--\s*chart:\s*([a-z_]+)\s*-->")

# What an executed post depends on besides its own text: a change here re-executes every
# post; a change to one post's .py re-executes that post only. The machine is part of it
# (a post prints where its examples ran), so a cache never travels between machines.
EXECUTION_INPUTS = ("kernels", "blog", "perfdata", "docs/data")  # perfdata: the schema every chart reads through
NOT_EXECUTION_INPUTS = {"blog/hooks.py"}  # it changes pages after execution only
EXECUTION_PACKAGES = ("torch", "triton", "plotly", "nbconvert", "mkdocs-jupyter", "ipykernel")
NOTEBOOK_CACHE = ROOT / ".cache" / "mkdocs-jupyter"

# The kernel's own log: ipykernel warns on every start that its local TCP sockets are not
# encrypted. Errors still show, and a failing cell still fails the build (allow_errors).
JUPYTER_CONFIG = ROOT / "blog" / "jupyter"


# ---------------------------------------------------------------------------------------
# Build setup


def on_config(config):
    paths = [p for p in os.environ.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p]
    if str(JUPYTER_CONFIG) not in paths:
        os.environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(JUPYTER_CONFIG), *paths])
    return config


def on_pre_build(config):
    _forget_project_modules()
    _key_notebook_cache(config)


def _forget_project_modules():
    """Drop the project's modules imported by the last build, so `mkdocs serve` redraws
    from the chart code as it is now (this hook module itself is loaded once by MkDocs)."""
    this = sys.modules.get(__name__)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if module is not this and path and Path(path).resolve().is_relative_to(ROOT) \
                and ".venv" not in Path(path).parts:
            del sys.modules[name]


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for top in EXECUTION_INPUTS:
        for path in sorted((ROOT / top).rglob("*")):
            relative = path.relative_to(ROOT).as_posix()
            if path.is_file() and "__pycache__" not in path.parts and relative not in NOT_EXECUTION_INPUTS:
                digest.update(relative.encode())
                digest.update(path.read_bytes())
    for package in EXECUTION_PACKAGES:
        digest.update(f"{package}=={metadata.version(package)}".encode())
    switches = sorted((k, v) for k, v in os.environ.items() if k.startswith(("KERNELS_", "CUDA_VISIBLE")))
    digest.update(f"{platform.node()} {sys.version} {switches}".encode())
    return digest.hexdigest()[:16]


def _key_notebook_cache(config):
    """mkdocs-jupyter keys its cache on the notebook's text only; putting the cache in a
    folder named after everything else the posts import makes a hit mean "nothing changed"."""
    plugin = config.plugins.get("mkdocs-jupyter")
    if plugin is None or not plugin.config["cache"]:
        return
    folder = NOTEBOOK_CACHE / _inputs_digest()
    if NOTEBOOK_CACHE.is_dir():
        for stale in NOTEBOOK_CACHE.iterdir():
            if stale != folder:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    plugin.config["cache_dir"] = str(folder)


# ---------------------------------------------------------------------------------------
# Markdown pages: chart placeholders


def _headline() -> str:
    return importlib.import_module("blog.home").headline_figure_html()


def _headline_sentence() -> str:
    return importlib.import_module("blog.home").headline_sentence()


RENDERERS = {"production_fwd": _headline, "headline_sentence": _headline_sentence}


def on_page_markdown(markdown, page, config, files):
    def fill(m):
        name = m.group(1)
        if name not in RENDERERS:
            raise ValueError(f"{page.file.src_path}: unknown chart placeholder {name!r}")
        return RENDERERS[name]()

    return PLACEHOLDER.sub(fill, markdown)


# ---------------------------------------------------------------------------------------
# Every page's HTML: notebook chrome out, one code style, links, search hints

CHART_MARKER = "plotly-graph-div"


def on_page_content(html, page, config, files):
    soup = BeautifulSoup(html, "html.parser")
    _drop_notebook_styles(soup)
    _flatten_input_cells(soup)
    _fix_ids(soup)
    _use_material_permalinks(soup)
    _resolve_source_links(soup, page, files)
    _scroll_wide_tables(soup)
    _captions_outside_scroll_boxes(soup)
    _name_charts(soup)
    _exclude_from_search(soup)
    _space_table_cells(soup)
    page.meta["has_charts"] = CHART_MARKER in html  # the template loads Plotly only then
    page.meta["has_math"] = has_math(soup)  # ... and KaTeX only then
    return str(soup)


# What KaTeX's auto-render (javascripts/site.js) takes for math: $$…$$, \[…\], \(…\), $…$.
MATH = re.compile(r"\$\$.+?\$\$|\\\[|\\\(|\$[^$\n]+\$", re.S)
NOT_PROSE = ("pre", "code", "script", "style", "textarea")


def has_math(soup) -> bool:
    """Whether any text outside code and scripts holds a math delimiter KaTeX would render."""
    for text in soup.find_all(string=True):
        if text.find_parent(NOT_PROSE) is None and MATH.search(text):
            return True
    return False


def _drop_notebook_styles(soup):
    """nbconvert inlines ~600 KB of JupyterLab CSS, its own Pygments theme and a mermaid
    loader from a CDN; the site styles notebook cells itself (stylesheets/notebook.css)."""
    for style in soup.find_all("style"):
        style.decompose()
    for script in soup.find_all("script", type="module"):
        if "mermaid" in script.get_text():
            script.decompose()


def _flatten_input_cells(soup):
    """Input cells become Material code blocks (`div.highlight > pre > code`), the same as
    the kernel source the posts print, so both share one style and Material's copy button
    replaces mkdocs-jupyter's own (whose hidden "Copied!" text landed in the search index)."""
    for button in soup.select(".clipboard-copy-txt, clipboard-copy"):
        button.decompose()
    for block in soup.select("div.highlight-ipynb"):
        block["class"] = ["highlight"]
        pre = block.find("pre")
        if pre is not None and pre.find("code", recursive=False) is None:
            code = soup.new_tag("code")
            for child in list(pre.contents):
                code.append(child.extract())
            pre.append(code)


def _fix_ids(soup):
    """nbconvert's `id="cell-id=…"` is not a valid CSS id selector, and Material builds its
    copy button's target from the closest id; every code block gets an id of its own."""
    for el in soup.select('[id^="cell-id="]'):
        el["id"] = "cell-" + el["id"].removeprefix("cell-id=")
    for number, block in enumerate(soup.select("div.highlight")):
        if not block.get("id"):
            block["id"] = f"code-{number}"


def _use_material_permalinks(soup):
    """Notebook headings carry nbconvert's "¶" links; Material's class gives them the
    theme's look and keeps the "¶" out of search titles and suggestions."""
    for link in soup.select("a.anchor-link"):
        link["class"] = ["headerlink"]
        link["title"] = "Permanent link"


def _resolve_source_links(soup, page, files):
    """A post links to another by its source name (`02_vectorized_attention.py`), as the
    notebook would on disk; on the site that becomes the other page's URL. Markdown pages
    get this from MkDocs already; notebook HTML does not go through it."""
    for link in soup.find_all("a", href=True):
        parts = urlsplit(link["href"])
        if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
            continue
        if not parts.path.endswith((".py", ".md", ".ipynb")):
            continue
        src = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), parts.path))
        target = files.get_file_from_path(src)
        if target is None or not target.is_documentation_page():
            log.warning("%s: link to %r matches no page", page.file.src_uri, link["href"])
            continue
        link["href"] = target.url_relative_to(page.file) + (f"#{parts.fragment}" if parts.fragment else "")


def _scroll_wide_tables(soup):
    """Tables written in notebook Markdown get the box generated tables have: on a narrow
    screen the table scrolls inside it instead of pushing the page sideways."""
    for table in soup.find_all("table"):
        if table.find_parent(class_=["table-scroll", "md-typeset__table"]) is None:
            table.wrap(soup.new_tag("div", attrs={"class": "table-scroll"}))


def _space_table_cells(soup):
    """The search index is the page's text with the tags taken out; cells written without
    whitespace between them (nbconvert's and blog/tables.py's) would run together there
    ("N1024D64" instead of "N 1024 D 64"). Whitespace between cells changes nothing on the page."""
    from bs4 import NavigableString

    for cell in soup.find_all(["td", "th"]):
        following = cell.next_sibling
        if not (isinstance(following, NavigableString) and following.isspace()):
            cell.insert_after(NavigableString(" "))


def _name_charts(soup):
    """Each chart gets an id of its own (chart-1, chart-2, … in page order), so a link can point at it."""
    for number, chart in enumerate(soup.select(".plotly-chart"), start=1):
        if not chart.get("id"):
            chart["id"] = f"chart-{number}"


def _captions_outside_scroll_boxes(soup):
    """A caption inside a box that scrolls sideways is as wide as the table and is cut on a
    phone. It moves just above the box, still the table's accessible name (aria-labelledby)."""
    for number, caption in enumerate(soup.select(".table-scroll table > caption, .md-typeset__table table > caption")):
        table = caption.find_parent("table")
        box = table.find_parent(class_=["table-scroll", "md-typeset__scrollwrap", "md-typeset__table"])
        while box.parent is not None and "md-typeset__scrollwrap" in (box.parent.get("class") or []):
            box = box.parent
        ident = table.get("id", f"table-{number}") + "-caption"
        label = soup.new_tag("div", attrs={"class": "table-caption", "id": ident})
        for child in list(caption.contents):
            label.append(child.extract())
        caption.decompose()
        table["aria-labelledby"] = ident
        box.insert_before(label)


def _exclude_from_search(soup):
    """Material's search skips elements marked `data-search-exclude` (and strips the mark
    from the page): code, printed output and charts stay out of the index, prose stays in."""
    targets = soup.select("div.highlight, .jp-OutputArea-output[data-mime-type='text/plain'], "
                          f".{CHART_MARKER}, .jp-InputPrompt, .jp-OutputPrompt")
    for el in targets:
        el["data-search-exclude"] = ""


# ---------------------------------------------------------------------------------------
# Search index


SEARCH_NOISE = ("In [", "In\u00a0[", "Copied!", "¶")  # prompts (nbconvert writes a no-break space), copy text, permalinks


# Math in the index reads as text: a search snippet shows "softmax(QKᵀ)·V", not
# "$\\mathrm{softmax}(QK^\\top) V$". Commands with a plain-text twin become it; others lose the
# backslash; braces and the dollar signs go.
TEX_SYMBOLS = {
    "cdot": "·", "times": "×", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠",
    "approx": "≈", "infty": "∞", "top": "ᵀ", "to": "→", "rightarrow": "→", "leftarrow": "←", "in": "∈",
    "sum": "Σ", "prod": "Π", "sqrt": "√", "ldots": "…", "dots": "…", "cdots": "…", "log": "log", "exp": "exp",
    "max": "max", "min": "min", "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε",
    "lambda": "λ", "mu": "μ", "pi": "π", "sigma": "σ", "tau": "τ", "Delta": "Δ", "odot": "⊙", "circ": "∘",
    "lceil": "⌈", "rceil": "⌉", "lfloor": "⌊", "rfloor": "⌋", "quad": " ", "qquad": " ", ",": " ", ";": " ",
    "!": "", "left": "", "right": "", "big": "", "Big": "", "bigl": "", "bigr": "", "displaystyle": "",
}
TEX_SPANS = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$([^$\n]+?)\$", re.S)


def detex(tex: str) -> str:
    """A readable plain-text rendering of a TeX formula, for search snippets."""
    tex = re.sub(r"\\(?:mathrm|text|textrm|mathit|mathbf|operatorname|texttt)\s*\{([^{}]*)\}", r"\1", tex)
    tex = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", tex)
    tex = re.sub(r"\\([A-Za-z]+|[,;!])", lambda m: TEX_SYMBOLS.get(m.group(1), m.group(1)), tex)
    tex = tex.replace("{", "").replace("}", "").replace("\\", "").replace("^ᵀ", "ᵀ")
    return re.sub(r"\s+", " ", tex).strip()


def detex_text(text: str) -> str:
    return TEX_SPANS.sub(lambda m: detex(next(g for g in m.groups() if g is not None)), text)


@event_priority(-100)  # after the search plugin has written its index
def on_post_build(config):
    """Math in the index becomes plain text (`detex`). Whatever the HTML filters missed, the
    index must not hold: prompts, copy-button text or "¶" (checked here so that a regression
    fails the strict build)."""
    index = Path(config["site_dir"]) / "search" / "search_index.json"
    if not index.exists():
        return
    data = json.loads(index.read_text(encoding="utf-8"))
    for doc in data["docs"]:
        doc["title"] = detex_text(doc["title"])
        doc["text"] = detex_text(doc["text"])
        for noise in SEARCH_NOISE:
            if noise in doc["title"] or noise in doc["text"]:
                log.warning("search index entry %s holds %r", doc["location"], noise)
    index.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
