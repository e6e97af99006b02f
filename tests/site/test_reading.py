"""The reading surface, on every page at 1400×900 and 390×844: links, code, tables, math,
charts, copy buttons, weight, and screenshots of both colour schemes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

from site_helpers import ARTIFACTS, PAGES, SITE, VIEWPORTS, new_page

POSTS = [name for name in PAGES if PAGES[name].startswith("posts/")]
MAX_POST_BYTES = 3_000_000


def open_page(page, base_url, path):
    page.goto(base_url + path, wait_until="load")
    page.wait_for_load_state("networkidle")
    if page.locator(".plotly-chart").count():  # charts.js draws far charts when idle; it marks the page when done
        page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=30_000)
    page.wait_for_selector("html[data-math]", state="attached", timeout=30_000)  # KaTeX comes after the first chart
    return page


def assert_clean(page):
    assert page.errors == [], page.errors
    foreign = [u for u in page.requests if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname != "127.0.0.1"]
    assert foreign == [], f"requests to other hosts: {foreign}"


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for key, value in attrs if key in ("id", "name") and value)


def _ids_of(url: str) -> set[str]:
    with urllib.request.urlopen(url) as response:
        parser = _Ids()
        parser.feed(response.read().decode("utf-8"))
        return parser.ids


BOTH = pytest.mark.parametrize("viewport", list(VIEWPORTS))
EVERY_PAGE = pytest.mark.parametrize("name", list(PAGES))


@BOTH
@EVERY_PAGE
def test_page_is_clean(visited, name, viewport):
    """Zero console errors, zero page errors, zero requests to other hosts."""
    assert_clean(visited(name, viewport))


@BOTH
@EVERY_PAGE
def test_same_site_links_answer_and_anchors_exist(visited, name, viewport):
    page = visited(name, viewport)
    here = page.url
    hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]'), a => a.href)")
    broken, missing_anchors, ids = [], [], {}
    for href in sorted(set(hrefs)):
        if urlparse(href).hostname != "127.0.0.1":
            continue
        target, fragment = urldefrag(href)
        if target not in ids:
            try:
                ids[target] = _ids_of(target)
            except urllib.error.HTTPError as e:
                broken.append(f"{href} -> {e.code}")
                ids[target] = None
        if fragment and ids[target] is not None and fragment not in ids[target]:
            missing_anchors.append(href)
    assert broken == [], f"{here}: broken same-site links: {broken}"
    assert missing_anchors == [], f"{here}: links to anchors that do not exist: {missing_anchors}"


# A block wraps when its text, laid out, takes more lines than it has. Counted from the
# line boxes of its text: distinct tops of the non-empty rectangles of a Range over it.
WRAPPED_BLOCKS = """() => Array.from(document.querySelectorAll('.md-content pre')).flatMap((pre, i) => {
    const text = pre.querySelector(':scope > code') || pre;  // not the copy button Material puts in the pre
    const lines = text.textContent.split('\\n').filter(line => line.trim() !== '').length;
    const range = document.createRange();
    range.selectNodeContents(text);
    const tops = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0 && r.height > 0)
                         .map(r => Math.round(r.top)));
    return tops.size > lines ? [`block ${i} ("${pre.textContent.slice(0, 40)}…"): ${lines} lines drawn as ${tops.size}`] : [];
})"""


@BOTH
@EVERY_PAGE
def test_code_and_output_blocks_never_wrap(visited, name, viewport):
    page = visited(name, viewport)
    assert page.locator(".md-content pre").count() > 0
    assert page.evaluate(WRAPPED_BLOCKS) == []


@EVERY_PAGE
def test_one_code_style_and_no_notebook_chrome(visited, name):
    page = visited(name, "desktop")
    assert page.locator(".highlight-ipynb, clipboard-copy").count() == 0, "notebook-styled code blocks left"
    prompts = page.locator(".jp-InputPrompt:visible, .jp-OutputPrompt:visible")
    assert prompts.count() == 0, "prompt columns still shown"


# The prose column, and each block in it that must not be wider than it. A table counts
# with its content (scrollWidth): a table that fits only by scrolling does not fit.
OVERFLOW = """(selector) => {
    const column = document.querySelector('.md-content__inner').getBoundingClientRect();
    return Array.from(document.querySelectorAll(selector)).flatMap((el, i) => {
        const box = el.getBoundingClientRect();
        const width = el.tagName === 'TABLE' ? Math.max(box.width, el.scrollWidth) : box.width;
        return width > column.width + 1 || box.left < column.left - 1 || box.left + width > column.right + 1
            ? [`${selector} ${i}: ${Math.round(width)} px wide, column ${Math.round(column.width)} px`] : [];
    });
}"""


@EVERY_PAGE
def test_tables_fit_their_column_at_desktop_width(visited, name):
    page = visited(name, "desktop")
    assert page.evaluate(OVERFLOW, ".md-content table") == []
    assert page.evaluate(OVERFLOW, ".md-content .md-typeset__scrollwrap") == []


# Every scroll box in the content: (what scrolls, its width, how far it scrolls, whether it
# shows the scroll hint of javascripts/overflow.js, and a label for messages).
SCROLL_BOXES = """() => {
    const sel = '.md-content pre > code, .md-content .table-scroll, .md-content .md-typeset__scrollwrap,'
              + ' .md-content table.bench-table, .md-content .katex-display';
    return Array.from(document.querySelectorAll(sel)).map((el, i) => {
        const host = el.closest('[data-scrolls]');
        return {i, kind: el.matches('code') ? 'code' : el.matches('.katex-display') ? 'math' : 'table',
                width: el.getBoundingClientRect().width, extra: el.scrollWidth - el.clientWidth,
                hint: !!host && host.getAttribute('data-scrolls') === 'more'
                      && getComputedStyle(host, '::after').content.includes('scroll'),
                text: el.textContent.trim().slice(0, 50)};
    });
}"""


@EVERY_PAGE
def test_prose_keeps_a_measure_and_wide_blocks_use_the_desktop(visited, name):
    """At 1400×900 the column is wide (the contents sit in the left navigation); paragraphs keep a
    readable measure while code, tables and charts may take the whole column, and a block of code
    scrolls only if its longest line is wider than the whole column."""
    page = visited(name, "desktop")
    column = page.evaluate("() => document.querySelector('.md-content__inner').getBoundingClientRect().width")
    assert column >= 1000, f"the content column is {column:.0f} px wide at 1400 px"
    paragraphs = page.evaluate("""() => Array.from(document.querySelectorAll('.md-typeset p'))
        .filter(p => !p.closest('li, td, th, .admonition, details, blockquote') && !p.querySelector('.katex-display'))
        .map(p => p.getBoundingClientRect().width)""")
    assert paragraphs and max(paragraphs) <= 760, f"a paragraph is {max(paragraphs):.0f} px wide"
    for selector in (".jp-OutputArea-output", ".katex-display", ".table-scroll", ".jp-Notebook pre", ".plotly-chart"):
        assert page.evaluate(OVERFLOW, f".md-content {selector}") == []
    cramped = [b for b in page.evaluate(SCROLL_BOXES) if b["kind"] == "code" and b["extra"] > 1
               and b["width"] < column - 2]
    assert cramped == [], f"code scrolls although the column has room: {cramped[:3]}"


@EVERY_PAGE
def test_no_scrollbar_on_a_desktop_unless_a_line_needs_the_room(visited, name):
    """No table or equation box scrolls at 1400×900 (Material's Markdown tables measured 16 px
    wider than their box); code may, only where a line is wider than the column (above)."""
    page = visited(name, "desktop")
    scrolling = [b for b in page.evaluate(SCROLL_BOXES) if b["kind"] != "code" and b["extra"] > 1]
    assert scrolling == [], scrolling


@BOTH
@EVERY_PAGE
def test_every_box_that_scrolls_says_so(visited, name, viewport):
    """A code block, table or equation wider than the screen scrolls inside its box and shows
    the "scroll →" hint: nothing is silently cut."""
    page = visited(name, viewport)
    page.evaluate("() => document.querySelectorAll('[data-scroll-tracked]').forEach(el => el.scrollLeft = 0)")
    page.wait_for_timeout(500)  # overflow.js looks again 150 ms after the math is typeset
    silent = [b for b in page.evaluate(SCROLL_BOXES) if b["extra"] > 1 and not b["hint"]]
    assert silent == [], f"{len(silent)} boxes scroll without a hint: {silent[:3]}"


CAPTIONS = """() => {
    const column = document.querySelector('.md-content__inner').getBoundingClientRect();
    return Array.from(document.querySelectorAll('.md-content caption, .md-content .table-caption, .md-content .chart-provenance'),
        el => { const r = el.getBoundingClientRect();
                return {text: el.textContent.trim().slice(0, 40), left: r.left - column.left, right: r.right - column.right,
                        extra: el.scrollWidth - el.clientWidth, inside: !!el.closest('.table-scroll, .md-typeset__scrollwrap')}; });
}"""


@BOTH
@EVERY_PAGE
def test_captions_are_never_cut(visited, name, viewport):
    page = visited(name, viewport)
    captions = page.evaluate(CAPTIONS)
    cut = [c for c in captions if c["left"] < -1 or c["right"] > 1 or c["extra"] > 1 or c["inside"]]
    assert cut == [], cut


@EVERY_PAGE
def test_phone_page_does_not_scroll_sideways(visited, name):
    page = visited(name, "phone")
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page is {width[0]} px wide in a {width[1]} px viewport"


@BOTH
@pytest.mark.parametrize("name", POSTS)
def test_math_fits_and_inline_math_stays_on_one_line(visited, name, viewport):
    page = visited(name, viewport)
    assert page.evaluate(OVERFLOW, ".katex-display") == []
    split = page.evaluate("""() => Array.from(document.querySelectorAll('.katex'))
        .filter(el => !el.closest('.katex-display') && el.getClientRects().length > 1)
        .map(el => el.textContent.slice(0, 40))""")
    assert split == [], f"inline math broken across lines: {split}"


CHART_BOXES = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map((el, i) => {
    const rect = e => e ? e.getBoundingClientRect() : null;
    const plot = rect(el), title = rect(el.querySelector('.gtitle')), legend = rect(el.querySelector('.legend'));
    // The modebar counts wherever it is displayed, faded or not: hovering or tapping shows it.
    const modebar = el.querySelector('.modebar');
    const bar = modebar && getComputedStyle(modebar).display !== 'none' ? rect(modebar) : null;
    return {i, plot: [plot.left, plot.top, plot.right, plot.bottom], height: plot.height,
            title: title && [title.left, title.top, title.right, title.bottom],
            legend: legend && legend.height, bar: bar && [bar.left, bar.top, bar.right, bar.bottom]};
})"""


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@BOTH
@EVERY_PAGE
def test_chart_titles_and_legends_fit(visited, name, viewport):
    page = visited(name, viewport)
    problems = []
    for c in page.evaluate(CHART_BOXES):
        if c["title"]:
            left, top, right, bottom = c["plot"]
            t = c["title"]
            if t[0] < left - 1 or t[2] > right + 1 or t[1] < top - 1:
                problems.append(f"chart {c['i']}: title clipped ({t} outside {c['plot']})")
            if c["bar"] and _overlap(t, c["bar"]):
                problems.append(f"chart {c['i']}: title under the modebar")
        if c["legend"] and c["legend"] > c["height"] / 3:
            problems.append(f"chart {c['i']}: legend {c['legend']:.0f} px tall in a {c['height']:.0f} px chart")
    assert problems == [], problems


@EVERY_PAGE
def test_every_copy_button_copies_its_block(browser, base_url, name):
    ctx, page = new_page(browser, "desktop")
    try:
        ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url.rstrip("/"))
        open_page(page, base_url, PAGES[name])
        buttons = page.locator(".md-content button[data-clipboard-target]")
        blocks = page.locator(".md-content pre > code")
        assert buttons.count() == blocks.count() > 0, f"{buttons.count()} copy buttons for {blocks.count()} code blocks"
        for i in range(buttons.count()):
            button = buttons.nth(i)
            expected = page.evaluate("b => document.querySelector(b.dataset.clipboardTarget).innerText", button.element_handle())
            page.evaluate("() => navigator.clipboard.writeText('')")
            button.scroll_into_view_if_needed()
            button.click()
            copied = page.evaluate("() => navigator.clipboard.readText()")
            assert copied.strip() == expected.strip() != "", f"button {i} copied {copied[:60]!r}"
        assert_clean(page)
    finally:
        ctx.close()


@pytest.mark.parametrize("name", POSTS)
def test_post_transfer_is_at_most_3_mb(visited, name):
    page = visited(name, "desktop")  # a fresh context: nothing came from a cache
    sizes = page.evaluate("""() => [performance.getEntriesByType('navigation')[0],
                                     ...performance.getEntriesByType('resource')]
                                    .map(e => [e.name, e.encodedBodySize])""")
    total = sum(size for _, size in sizes)
    largest = sorted(sizes, key=lambda s: -s[1])[:3]
    assert total <= MAX_POST_BYTES, f"{total / 1e6:.2f} MB transferred; largest: {largest}"


@EVERY_PAGE
def test_plotly_loads_deferred_and_only_with_charts(visited, name):
    page = visited(name, "desktop")
    scripts = page.evaluate("""() => Array.from(document.scripts).filter(s => /plotly/.test(s.src))
                                      .map(s => ({defer: s.defer, head: !!s.closest('head')}))""")
    has_charts = page.locator(".plotly-graph-div").count() > 0
    assert len(scripts) == (1 if has_charts else 0), scripts
    assert all(s["defer"] for s in scripts), "Plotly blocks first paint"


def test_nav_shows_the_series_in_order(visited):
    page = visited("home", "desktop")
    titles = page.evaluate("""() => Array.from(document.querySelectorAll('.md-nav--primary .md-nav__link'),
                                               a => a.textContent.trim()).filter(t => /^\\d/.test(t))""")
    assert titles and [t.split(".")[0] for t in titles] == [str(i) for i in range(1, len(titles) + 1)], titles
    assert len(titles) == len(POSTS)


def test_search_index_holds_prose_only():
    index = json.loads((SITE / "search" / "search_index.json").read_text(encoding="utf-8"))
    texts = [doc["title"] + " " + doc["text"] for doc in index["docs"]]
    for noise in ("In [", "In\u00a0[", "Copied!", "¶", "@triton.jit", "import torch", "tl.load("):
        hits = [t[:80] for t in texts if noise in t]
        assert hits == [], f"search index holds {noise!r}: {hits[:3]}"


@BOTH
@EVERY_PAGE
def test_screenshots_in_both_schemes(browser, base_url, name, viewport):
    """Full-page screenshots for a person to look at: test-artifacts/screenshots/NAME-VIEWPORT-SCHEME.png."""
    ctx, page = new_page(browser, viewport)
    try:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        open_page(page, base_url, PAGES[name])
        page.screenshot(path=str(ARTIFACTS / f"{name}-{viewport}-light.png"), full_page=True)
        page.locator("form[data-md-component=palette] label:visible").first.click()
        page.wait_for_function("document.body.getAttribute('data-md-color-scheme') === 'slate'")
        page.wait_for_timeout(300)  # charts re-theme on the palette change
        page.screenshot(path=str(ARTIFACTS / f"{name}-{viewport}-dark.png"), full_page=True)
        assert_clean(page)
    finally:
        ctx.close()
