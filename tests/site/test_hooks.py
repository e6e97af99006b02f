"""blog/hooks.py on small pieces of nbconvert HTML, without a build or a browser."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from bs4 import BeautifulSoup
from mkdocs.structure.files import File, Files
from mkdocs_jupyter.plugin import NotebookFile

from blog import hooks

NOTEBOOK = """
<style>.jp-Cell { padding: 5px }</style>
<div class="jp-Cell jp-CodeCell" id="cell-id=ab12">
  <div class="jp-InputArea"><div class="jp-InputPrompt">In [2]:</div>
    <div class="clipboard-copy-txt" id="cell-1"><clipboard-copy for="cell-1"><span class="notice" hidden>Copied!</span></clipboard-copy></div>
    <div class="highlight-ipynb hl-python"><pre><span></span><span class="kn">import</span> torch
</pre></div>
  </div>
  <div class="jp-OutputArea-output" data-mime-type="text/html"><div class="highlight"><pre><span></span><code>@triton.jit
</code></pre></div></div>
  <div class="jp-RenderedText jp-OutputArea-output" data-mime-type="text/plain"><pre>ok</pre></div>
</div>
<h2 id="next">What is next<a class="anchor-link" href="#next">¶</a></h2>
<p><a href="02_two.py#the-kernel">Post 2</a> and <a href="https://example.org/x.py">elsewhere</a></p>
<table><tr><td>1</td></tr></table>
<div id="c1" class="plotly-graph-div"></div>
<script type="text/javascript">if (document.getElementById("c1")) { Plotly.newPlot("c1", []) }</script>
"""


@pytest.fixture
def site():
    config = SimpleNamespace(docs_dir="docs", site_dir="site", use_directory_urls=True)
    files = Files([NotebookFile(File(f"posts/{name}", "docs", "site", True), use_directory_urls=True, site_dir="site")
                   for name in ("01_one.py", "02_two.py")])
    page = SimpleNamespace(file=files.get_file_from_path("posts/01_one.py"), meta={})
    return page, config, files


def render(site, html=NOTEBOOK):
    page, config, files = site
    return BeautifulSoup(hooks.on_page_content(html, page, config, files), "html.parser"), page


def test_notebook_chrome_and_styles_go(site):
    soup, _ = render(site)
    assert soup.find("style") is None
    assert soup.select(".highlight-ipynb, clipboard-copy, .clipboard-copy-txt") == []
    assert "Copied!" not in soup.get_text()


def test_every_code_block_is_a_material_block_with_a_valid_id_of_its_own(site):
    soup, _ = render(site)
    blocks = soup.select("div.highlight")
    assert len(blocks) == 2 and all(b.select_one("pre > code") for b in blocks)
    ids = [b["id"] for b in blocks]
    assert len(set(ids)) == 2 and all("=" not in i for i in ids)
    assert soup.select_one(".jp-CodeCell")["id"] == "cell-ab12"


def test_source_links_become_page_urls_and_others_stay(site):
    soup, _ = render(site)
    hrefs = [a["href"] for a in soup.select("p a")]
    assert hrefs == ["../02_two/#the-kernel", "https://example.org/x.py"]


def test_a_link_to_no_page_is_reported(site, caplog):
    render(site, '<a href="03_missing.py">x</a>')
    assert "matches no page" in caplog.text


def test_permalinks_tables_charts_and_search_marks(site):
    soup, page = render(site)
    assert soup.select_one("h2 a")["class"] == ["headerlink"]
    assert soup.find("table").parent["class"] == ["table-scroll"]
    excluded = soup.select("[data-search-exclude]")
    assert {"highlight" in (el.get("class") or []) for el in excluded} == {True, False}
    assert soup.select_one(".jp-RenderedText")["data-search-exclude"] == ""
    assert page.meta["has_charts"] is True


def test_unknown_placeholder_is_an_error(site):
    page, config, files = site
    with pytest.raises(ValueError, match="unknown chart placeholder 'nope'"):
        hooks.on_page_markdown("<!-- chart: nope -->", page, config, files)
