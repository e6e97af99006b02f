"""The built site in a real headless Chromium: loads cleanly, offline, charts, palette, search."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from site_helpers import PAGES, SITE

CHART_STATE = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
    svg: !!el.querySelector('svg.main-svg'),
    traces: el.querySelectorAll('g.trace, g.hm image, g.heatmaplayer image').length,
    data: (el.data || []).length,
    theme: el.getAttribute('data-theme'),
    font: el._fullLayout && el._fullLayout.font ? el._fullLayout.font.color : null,  // template included
}))"""


def open_page(page, base_url, path):
    page.goto(base_url + path, wait_until="load")
    page.wait_for_function("() => document.readyState === 'complete'")
    if page.locator(".plotly-chart").count():
        # charts.js draws charts near the viewport first and the rest when the browser is idle;
        # it marks the page once every chart is drawn.
        page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=30_000)
    page.wait_for_selector("html[data-math]", state="attached", timeout=30_000)  # KaTeX comes after the first chart
    return page


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_offline_without_errors(page, base_url, name):
    open_page(page, base_url, PAGES[name])
    page.wait_for_load_state("networkidle")  # late requests (search worker, index) count too
    assert page.errors == [], page.errors
    foreign = [u for u in page.requests if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname != "127.0.0.1"]
    assert foreign == [], f"requests to other hosts: {foreign}"
    assert page.title()


@pytest.mark.parametrize("name", list(PAGES))
def test_every_chart_renders(page, base_url, name):
    open_page(page, base_url, PAGES[name])
    charts = page.evaluate(CHART_STATE)
    expected = (SITE / PAGES[name] / "index.html").read_text(encoding="utf-8").count('class="plotly-graph-div"')
    assert expected > 0, "no Plotly chart in the page's HTML"
    assert len(charts) == expected, f"{len(charts)} of {expected} charts were drawn"
    for i, c in enumerate(charts):
        assert c["svg"] and c["data"] > 0 and c["traces"] > 0, f"chart {i} did not render: {c}"


@pytest.mark.parametrize("name", ["basic", "vectorized", "flash", "optimizing"])
def test_math_is_typeset(page, base_url, name):
    open_page(page, base_url, PAGES[name])
    assert page.locator(".katex").count() > 0, "no KaTeX output: math left as raw TeX"
    assert page.locator(".katex-error").count() == 0


@pytest.mark.parametrize("name", list(PAGES))
def test_palette_toggle_switches_page_and_charts(page, base_url, name):
    open_page(page, base_url, PAGES[name])
    scheme = lambda: page.evaluate("document.body.getAttribute('data-md-color-scheme')")  # noqa: E731
    assert scheme() == "default"
    light_fonts = {c["font"] for c in page.evaluate(CHART_STATE)}

    page.locator("form[data-md-component=palette] label:visible").first.click()
    page.wait_for_function("document.body.getAttribute('data-md-color-scheme') === 'slate'")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot')).every(e => e.getAttribute('data-theme') === 'dark')")
    dark = page.evaluate(CHART_STATE)
    assert {c["font"] for c in dark}.isdisjoint(light_fonts), "charts kept their light-palette text colour"
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), bg

    page.locator("form[data-md-component=palette] label:visible").first.click()
    page.wait_for_function("document.body.getAttribute('data-md-color-scheme') === 'default'")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot')).every(e => e.getAttribute('data-theme') === 'light')")
    assert page.errors == [], page.errors


SEARCH_WORDS = {"basic": "recomputing", "vectorized": "coalesce", "flash": "rescaled", "optimizing": "ablation"}


@pytest.mark.parametrize("name", list(SEARCH_WORDS))
def test_search_finds_each_post(page, base_url, name):
    open_page(page, base_url, PAGES["home"])
    box = page.locator("input.md-search__input")
    box.click()
    box.press_sequentially(SEARCH_WORDS[name], delay=30)
    hits = page.locator(f".md-search-result__item a[href*='{PAGES[name].rstrip('/')}']")
    hits.first.wait_for(timeout=15000)
    assert hits.count() >= 1
