"""Charts on a touch screen and the settings a reader's device brings: a swipe over a chart
scrolls the page, tall multi-panel charts show one panel at a time, the scheme follows the OS, and Plotly and KaTeX load only where a page uses them. (The throttled
first-chart time is test_weight.py's, which runs last, on a quieter machine.)"""

from __future__ import annotations

import json

import pytest

from site_helpers import PAGES, SITE, VIEWPORTS

CHART_PAGES = [name for name in PAGES if 'class="plotly-graph-div"' in
               (SITE / PAGES[name] / "index.html").read_text(encoding="utf-8")] if (SITE / "index.html").exists() else list(PAGES)

AXIS_RANGES = """i => { const el = document.querySelectorAll('.js-plotly-plot')[i]; const l = el._fullLayout;
    return JSON.stringify(Object.keys(l).filter(k => /^[xy]axis\\d*$/.test(k)).sort().map(k => [k, l[k].range])); }"""

PLOT_AREA = """i => { const el = document.querySelectorAll('.js-plotly-plot')[i];
    el.scrollIntoView({block: 'center'});
    const drag = el.querySelector('.nsewdrag') || el.querySelector('.main-svg');
    const r = drag.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }"""


def touch_page(browser, base_url, name, viewport, scheme):
    ctx = browser.new_context(viewport=VIEWPORTS[viewport], has_touch=True, color_scheme=scheme)
    page = ctx.new_page()
    page.goto(base_url + PAGES[name], wait_until="load")
    page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=60_000)
    return ctx, page


def swipe_up(cdp, x, y_from, y_to, steps=10):
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y_from}]})
    for k in range(1, steps + 1):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y_from + (y_to - y_from) * k / steps}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("name", CHART_PAGES)
def test_a_swipe_over_any_chart_scrolls_the_page(browser, base_url, name, viewport, scheme):
    """A one-finger swipe that starts on a chart's plot area moves the page and leaves every axis
    range as it was (no zoom box, no pan), on a phone and on a wide touch screen."""
    ctx, page = touch_page(browser, base_url, name, viewport, scheme)
    try:
        cdp = ctx.new_cdp_session(page)
        count = page.evaluate("() => document.querySelectorAll('.js-plotly-plot').length")
        assert count > 0
        stuck = []
        for i in range(count):
            x, y, w, h = page.evaluate(PLOT_AREA, i)
            page.wait_for_timeout(100)
            before = (page.evaluate("() => window.scrollY"), page.evaluate(AXIS_RANGES, i))
            swipe_up(cdp, x + w / 2, y + h * 0.75, y + h * 0.25)
            page.wait_for_timeout(300)
            after = (page.evaluate("() => window.scrollY"), page.evaluate(AXIS_RANGES, i))
            if after[0] - before[0] < h * 0.25 or after[1] != before[1]:
                stuck.append(f"chart {i}: page moved {after[0] - before[0]:.0f} px of a {h * 0.5:.0f} px swipe, "
                             f"axes {'changed' if after[1] != before[1] else 'unchanged'}")
        assert stuck == [], stuck
    finally:
        ctx.close()


def test_mouse_drag_zoom_stays_on_a_desktop(browser, base_url):
    """Without touch, on a wide column, a drag still zooms a chart (and the modebar is there)."""
    ctx = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = ctx.new_page()
    try:
        page.goto(base_url + PAGES["flash"], wait_until="load")
        page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=60_000)
        modes = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot'), el => el._fullLayout.dragmode)")
        assert "zoom" in modes, modes
    finally:
        ctx.close()


@pytest.mark.parametrize("name", ["flash", "gluon"])
def test_tall_multi_panel_charts_show_one_panel_at_a_time_on_a_phone(browser, base_url, name):
    """The production charts' four panels would stack into ~1,500 px on a phone; there they show
    one at a time, with a picker whose buttons switch the panel, and the chart fits one screen."""
    ctx = browser.new_context(viewport=VIEWPORTS["phone"])
    page = ctx.new_page()
    try:
        page.goto(base_url + PAGES[name], wait_until="load")
        page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=60_000)
        pickers = page.locator(".panel-picker:not([hidden])")
        assert pickers.count() > 0, "no panel picker on the page"
        for p in range(pickers.count()):
            picker = pickers.nth(p)
            chart = picker.locator("xpath=..").locator(".js-plotly-plot")
            height = chart.evaluate("el => el.getBoundingClientRect().height")
            assert height <= VIEWPORTS["phone"]["height"] - 56, f"picker chart {p} is {height:.0f} px tall"
            buttons = picker.locator("button")
            assert buttons.count() > 2
            for k in range(buttons.count()):
                buttons.nth(k).click()
                page.wait_for_timeout(150)
                shown = chart.evaluate("""el => Object.keys(el._fullLayout).filter(a => /^xaxis\\d*$/.test(a))
                                          .filter(a => el._fullLayout[a].visible !== false).map(a => a)""")
                assert len(shown) == 1, f"picker {p} button {k}: axes shown {shown}"
                assert buttons.nth(k).get_attribute("aria-pressed") == "true"
                title = chart.evaluate("el => el.querySelector('.gtitle') && el.querySelector('.gtitle').getBoundingClientRect().right")
                assert title is None or title <= VIEWPORTS["phone"]["width"], "title runs off the screen"
    finally:
        ctx.close()


def test_a_view_pick_keeps_the_phone_title(browser, base_url):
    """Picking a GPU/dtype view on a phone does not swap in a long title that runs off the screen."""
    ctx = browser.new_context(viewport=VIEWPORTS["phone"])
    page = ctx.new_page()
    try:
        page.goto(base_url + PAGES["flash"], wait_until="load")
        page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=60_000)
        titles = page.evaluate("""() => Promise.all(Array.from(document.querySelectorAll('.js-plotly-plot'))
            .filter(el => (el.layout.updatemenus || []).some(m => m.buttons.length > 1))
            .map(el => { const menu = el.layout.updatemenus[0];
                         const before = el._fullLayout.title.text;
                         return Plotly.restyle(el, menu.buttons[1].args[0]).then(() =>
                             Plotly.relayout(el, menu.buttons[1].args[1] || {})).then(() => [before, el._fullLayout.title.text]); }))""")
        assert titles, "no chart with view buttons on the page"
        for before, after in titles:
            assert before == after
    finally:
        ctx.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_scheme_follows_the_os_until_the_reader_picks_one(browser, base_url, scheme):
    ctx = browser.new_context(viewport=VIEWPORTS["desktop"], color_scheme=scheme)
    page = ctx.new_page()
    try:
        page.goto(base_url + PAGES["home"], wait_until="load")
        expected = "slate" if scheme == "dark" else "default"
        assert page.evaluate("() => document.body.getAttribute('data-md-color-scheme')") == expected
        page.locator("form[data-md-component=palette] label:visible").first.click()
        page.wait_for_function(f"document.body.getAttribute('data-md-color-scheme') !== '{expected}'")
        page.reload(wait_until="load")
        assert page.evaluate("() => document.body.getAttribute('data-md-color-scheme')") != expected, \
            "the reader's pick did not stick"
    finally:
        ctx.close()


@pytest.mark.parametrize("name", list(PAGES))
def test_plotly_and_katex_load_only_where_used(browser, base_url, name):
    ctx = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = ctx.new_page()
    try:
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(base_url + PAGES[name], wait_until="load")
        page.wait_for_load_state("networkidle")
        charts = page.locator(".plotly-graph-div").count()
        math = page.locator(".katex").count()
        assert any("plotly" in u for u in requests) == (charts > 0), f"{charts} charts, requests {requests}"
        assert any("katex" in u for u in requests) == (math > 0), f"{math} formulas, requests {requests}"
    finally:
        ctx.close()


def test_site_url_is_not_the_dev_server():
    """Canonical links and the sitemap come from site_url (SITE_URL at build time), never 127.0.0.1."""
    for path in [SITE / "sitemap.xml", *(SITE / p / "index.html" for p in PAGES.values())]:
        assert "127.0.0.1" not in path.read_text(encoding="utf-8"), path


def test_search_snippets_read_as_text():
    """Math in the search index is plain text (no TeX), and table cells do not run together."""
    docs = json.loads((SITE / "search" / "search_index.json").read_text(encoding="utf-8"))["docs"]
    tex = [d["location"] for d in docs if "\\\\" in d["text"] or "$" in d["text"] or "\\(" in d["text"]]
    assert tex == [], f"raw TeX in the search index: {tex[:5]}"
    flash = " ".join(d["text"] for d in docs if d["location"].startswith(PAGES["flash"]))
    assert "D=128 H=16 N=4096 128×64" in flash or "128×64 4.43" in flash, "table cells run together"


BUNDLED_TRACES = {"scatter", "bar", "heatmap"}  # scripts/plotly_bundle.js


def test_every_figure_uses_only_the_bundled_trace_types():
    """The site's Plotly bundle registers scatter, bar and heatmap only; a trace of another type
    would silently not draw."""
    from bs4 import BeautifulSoup

    found = {}
    for name, path in PAGES.items():
        soup = BeautifulSoup((SITE / path / "index.html").read_text(encoding="utf-8"), "html.parser")
        for payload in soup.select('.plotly-chart script[type="application/json"]'):
            for trace in json.loads(payload.string)["figure"]["data"]:
                found.setdefault(trace.get("type", "scatter"), set()).add(name)
    assert found and set(found) <= BUNDLED_TRACES, {t: sorted(p) for t, p in found.items() if t not in BUNDLED_TRACES}
