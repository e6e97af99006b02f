"""Every explorable control readable in both colour schemes, at 1400×900 and 390×844.

Colours are read from what Plotly drew (the computed fill, stroke and opacities of its SVG
elements), composited over the page background behind the transparent charts, and held
to WCAG 2.1: text 4.5:1 against its own fill (1.4.3), slider handles and ticks 3:1
against the page (1.4.11), a picked button 3:1 against the others. Heat-map cell labels
4.5:1 against their cell. Opened dropdowns must be opaque; each explorable must fit one
phone screen with its controls inside it; a masked cell's mark must fall on masked cells
only. Every chart with a control counts for contrast, explorable or not. Every measured
ratio is written to test-artifacts/contrast/<page>-<viewport>-<scheme>.json.
"""

from __future__ import annotations

import json

import pytest

from site_helpers import ARTIFACTS, PAGES, VIEWPORTS, new_page

TEXT, MARK = 4.5, 3.0
HEADER = 56  # Material's header: what a phone screen has left for a figure is its height minus this
SCHEMES = ("light", "dark")
# The explorables (blog/explore, meta.explorable) each page holds; a page without one is
# still checked, for the controls of its benchmark charts.
EXPLORABLES = {"vectorized": 1, "flash": 4, "optimizing": 2, "variants": 1}

# Shared by the checks below: colour parsing, alpha compositing, WCAG contrast, and the
# page background behind a chart.
COLOUR_JS = r"""
window.__contrast = (() => {
    function parse(c) {
        const m = String(c).match(/rgba?\(([^)]+)\)/);
        if (!m) return null;  // "none"
        const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
        return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    function opacity(el) {  // the element's own opacity times its ancestors' (up to the svg)
        let o = 1;
        for (let e = el; e && e.nodeType === 1; e = e.parentNode) {
            o *= Number(getComputedStyle(e).opacity || 1);
            if (e.tagName.toLowerCase() === 'svg') break;
        }
        return o;
    }
    function over(top, alpha, bottom) {  // top (rgb) at alpha over an opaque bottom
        return [0, 1, 2].map(i => top[i] * alpha + bottom[i] * (1 - alpha));
    }
    function luminance(rgb) {
        const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    }
    function ratio(a, b) {
        const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
        return (hi + 0.05) / (lo + 0.05);
    }
    function background(el) {  // the first opaque background behind el
        for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
            const c = parse(getComputedStyle(e).backgroundColor);
            if (c && c[3] > 0.99) return c.slice(0, 3);
        }
        return [255, 255, 255];
    }
    // The colour a painted element shows over `bottom`: its paint (fill or stroke), its paint
    // opacity and its opacity. Returns [rgb, alpha].
    function paint(el, which, bottom) {
        const s = getComputedStyle(el);
        const c = parse(s[which]);
        if (!c) return [bottom, 0];
        const alpha = c[3] * Number(s[which + 'Opacity'] || 1) * opacity(el);
        return [over(c, alpha, bottom), alpha];
    }
    function hex(rgb) { return '#' + rgb.map(v => Math.round(v).toString(16).padStart(2, '0')).join(''); }
    function visible(el) {
        const r = el.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden' && opacity(el) > 0.01;
    }
    return {parse, over, ratio, background, paint, hex, visible, opacity};
})();
"""

# Every control of every chart with one: [{chart, explorable, kind, what, ratio, need, colours}].
CONTROLS = r"""() => {
    const C = window.__contrast, out = [];
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
        const layout = gd._fullLayout;
        if (!(layout.updatemenus || []).length && !(layout.sliders || []).length) continue;
        const chart = gd.closest('.plotly-chart').getAttribute('aria-label').slice(0, 50);
        const page = C.background(gd);
        const add = (kind, what, fg, bg, need) => out.push(
            {chart, kind, what, ratio: +C.ratio(fg, bg).toFixed(2), need, colours: C.hex(fg) + ' on ' + C.hex(bg)});
        // Buttons and closed dropdown headers: their text (and the header's arrow) on their own rect.
        for (const item of gd.querySelectorAll('.updatemenu-button, .updatemenu-header, .updatemenu-header-group')) {
            const rect = item.querySelector(':scope > rect.updatemenu-item-rect')
                || item.querySelector(':scope > .updatemenu-header > rect.updatemenu-item-rect');
            if (!rect || !C.visible(rect)) continue;
            const [fill] = C.paint(rect, 'fill', page);
            for (const text of item.querySelectorAll(':scope > text')) {
                if (!C.visible(text) || !text.textContent.trim()) continue;
                const [fg] = C.paint(text, 'fill', fill);
                add('menu text', text.textContent.trim().slice(0, 30), fg, fill, 4.5);
            }
        }
        // A row of buttons shows which one is picked: plotly.js paints it a face of its own,
        // which must stand 3:1 off the others' (the state of a control, WCAG 1.4.11).
        for (const row of gd.querySelectorAll('.updatemenu-header-group, .updatemenu-dropdown-button-group')) {
            const faces = Array.from(row.querySelectorAll(':scope > .updatemenu-button > rect.updatemenu-item-rect'))
                .filter(C.visible).map(r => C.paint(r, 'fill', page)[0]);
            const distinct = [...new Map(faces.map(f => [C.hex(f), f])).values()];
            if (faces.length < 2) continue;
            const [a, b] = distinct.length > 1 ? distinct : [faces[0], faces[0]];
            add('picked button', `${faces.length} buttons`, a, b, 3);
        }
        for (const group of gd.querySelectorAll('.slider-group')) {
            for (const text of group.querySelectorAll('text.slider-label')) {
                if (!C.visible(text)) continue;
                const [fg] = C.paint(text, 'fill', page);
                const current = text.parentNode === group;  // the current value sits above the rail
                add(current ? 'slider value' : 'slider label', text.textContent.trim().slice(0, 30), fg, page, 4.5);
            }
            for (const grip of group.querySelectorAll('rect.slider-grip-rect')) {
                // A handle reads against the page by its face or by its outline, whichever stands out more.
                const [face] = C.paint(grip, 'fill', page);
                const width = parseFloat(getComputedStyle(grip).strokeWidth) || 0;
                const [edge, edgeAlpha] = C.paint(grip, 'stroke', page);
                const byEdge = width >= 1 && edgeAlpha > 0 ? C.ratio(edge, page) : 0;
                add('slider handle', byEdge > C.ratio(face, page) ? 'outline' : 'face',
                    byEdge > C.ratio(face, page) ? edge : face, page, 3);
            }
            const ticks = Array.from(group.querySelectorAll('rect.slider-tick-rect')).filter(C.visible);
            if (ticks.length) {
                const [fg] = C.paint(ticks[0], 'fill', page);
                add('slider ticks', `${ticks.length} ticks`, fg, page, 3);
            }
        }
    }
    return out;
}"""

# Explorables: size, where their controls lie, and the dropdowns to open.
EXPLORABLE_BOXES = r"""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(gd => (gd._fullLayout.meta || {}).explorable === true)
    .map(gd => {
        const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        if (!gd.id) gd.id = 'contrast-' + Math.random().toString(36).slice(2);
        return {
            id: gd.id,
            chart: gd.closest('.plotly-chart').getAttribute('aria-label').slice(0, 50),
            box: box(gd.querySelector('.main-svg')),
            controls: Array.from(gd.querySelectorAll('.updatemenu-header-group, .updatemenu-button, .slider-group'))
                .filter(e => window.__contrast.visible(e)).map(box),
            dropdowns: (gd._fullLayout.updatemenus || []).filter(m => m.visible !== false && m.type === 'dropdown').length,
        };
    })"""

# The items of the dropdown just opened: opacity of each item's rect, and its text's contrast on it.
OPENED = r"""(id) => {
    const C = window.__contrast, gd = document.getElementById(id), page = C.background(gd);
    return Array.from(gd.querySelectorAll('.updatemenu-dropdown-button')).filter(C.visible).map(button => {
        const rect = button.querySelector('rect.updatemenu-item-rect'), text = button.querySelector('text');
        const [fill, alpha] = C.paint(rect, 'fill', page);
        const [fg] = C.paint(text, 'fill', fill);
        return {what: text.textContent.trim().slice(0, 30), alpha: +alpha.toFixed(3), fill: fill.map(Math.round),
                ratio: +C.ratio(fg, fill).toFixed(2), colours: C.hex(fg) + ' on ' + C.hex(fill)};
    });
}"""

# Heat-map cell labels of the explorables, each against its own cell: the cell's colour is
# the trace's colour scale at the cell's z, composited over the page.
CELL_TEXT = r"""() => {
    const C = window.__contrast, out = [];
    function scale(trace, z) {
        const cs = trace.colorscale, lo = trace.zmin, hi = trace.zmax;
        const t = hi > lo ? Math.min(1, Math.max(0, (z - lo) / (hi - lo))) : 0;
        for (let i = 1; i < cs.length; i++) {
            if (t <= cs[i][0] || i === cs.length - 1) {
                const a = C.parse(tinyRgb(cs[i - 1][1])), b = C.parse(tinyRgb(cs[i][1]));
                const f = cs[i][0] > cs[i - 1][0] ? (t - cs[i - 1][0]) / (cs[i][0] - cs[i - 1][0]) : 0;
                return [0, 1, 2, 3].map(k => a[k] + (b[k] - a[k]) * f);
            }
        }
    }
    function tinyRgb(c) {  // any CSS colour as rgb()/rgba(), through the browser
        const probe = document.createElement('span');
        probe.style.color = c;
        document.body.appendChild(probe);
        const v = getComputedStyle(probe).color;
        probe.remove();
        return v;
    }
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
        if ((gd._fullLayout.meta || {}).explorable !== true) continue;
        const chart = gd.closest('.plotly-chart').getAttribute('aria-label').slice(0, 50);
        const page = C.background(gd);
        for (const hm of gd.querySelectorAll('g.hm')) {
            const cd = hm.__data__, trace = cd && cd[0] && cd[0].trace;
            if (!trace || trace.visible !== true) continue;
            const xa = gd._fullLayout[trace.xaxis.replace('x', 'xaxis')], ya = gd._fullLayout[trace.yaxis.replace('y', 'yaxis')];
            for (const text of hm.querySelectorAll('text')) {
                if (!text.textContent.trim() || !C.visible(text)) continue;
                const col = Math.round(xa.p2c(+text.getAttribute('x')));
                const size = parseFloat(getComputedStyle(text).fontSize) || 10;
                const row = Math.round(ya.p2c(+text.getAttribute('y') - size / 3));  // baseline to centre
                const z = trace.z[row] && trace.z[row][col];
                if (z === null || z === undefined || Number.isNaN(z)) continue;  // no cell of this trace under it
                const cell = scale(trace, z);
                const fill = C.over(cell, cell[3], page);
                const [fg] = C.paint(text, 'fill', fill);
                out.push({chart, what: `${text.textContent.trim()} at (${row}, ${col}) of ${trace.hovertemplate.slice(0, 20)}`,
                          ratio: +C.ratio(fg, fill).toFixed(2), need: 4.5, colours: C.hex(fg) + ' on ' + C.hex(fill)});
            }
        }
    }
    return out;
}"""

# Post 3's online softmax, causal: where "−∞" is printed, and where the visible S tile's
# key and query labels say a score is masked (key index > query index).
MASK_MARKS = r"""(id) => {
    const gd = document.getElementById(id), marks = [], masked = [];
    for (const hm of gd.querySelectorAll('g.hm')) {
        const trace = hm.__data__ && hm.__data__[0] && hm.__data__[0].trace;
        if (!trace || trace.visible !== true) continue;
        const xa = gd._fullLayout[trace.xaxis.replace('x', 'xaxis')], ya = gd._fullLayout[trace.yaxis.replace('y', 'yaxis')];
        for (const text of hm.querySelectorAll('text')) {
            if (text.textContent.trim() !== '−∞') continue;
            const size = parseFloat(getComputedStyle(text).fontSize) || 9;
            marks.push([Math.round(ya.p2c(+text.getAttribute('y') - size / 3)), Math.round(xa.p2c(+text.getAttribute('x')))]);
        }
    }
    const s = gd._fullData.find(t => t.visible === true && t.type === 'heatmap' && /s = /.test(t.hovertemplate || ''));
    s.y.forEach((q, r) => s.x.forEach((k, c) => {
        if (+String(k).slice(1) > +String(q).slice(1)) masked.push([r, c]);
    }));
    const nulls = [];
    s.z.forEach((row, r) => row.forEach((v, c) => { if (v === null) nulls.push([r, c]); }));
    return {marks: marks.map(String).sort(), masked: masked.map(String).sort(), nulls: nulls.map(String).sort(),
            tile: `${s.x[0]}..${s.x[s.x.length - 1]}`};
}"""


def to_dark(page):
    page.locator("label.md-header__button.md-icon[for^='__palette']:visible").first.click()
    page.wait_for_function("document.body.getAttribute('data-md-color-scheme') === 'slate'")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                           ".every(e => e.getAttribute('data-theme') === 'dark')")
    page.wait_for_timeout(300)


def open_in(browser, base_url, name, viewport, scheme):
    ctx, page = new_page(browser, viewport)
    page.goto(base_url + PAGES[name], wait_until="load")
    if page.locator(".plotly-chart").count():
        page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=60_000)
    if scheme == "dark":
        to_dark(page)
    page.add_script_tag(content=COLOUR_JS)
    return ctx, page


# Plotly fades an opened dropdown in: its items count once they are drawn at full opacity
# (the element's own opacity, not its fill's, which is what the checks measure).
SETTLED = """([id, opened]) => {
    const items = Array.from(document.getElementById(id).querySelectorAll('.updatemenu-dropdown-button'));
    if (!opened) return items.length === 0;
    return items.length > 0 && items.every(e => window.__contrast.opacity(e) > 0.999);
}"""


def click_header(page, gd, opened=True):
    """Open (or close) a figure's dropdown as a reader does, a click on its header, and wait
    for Plotly to finish drawing it."""
    for _ in range(3):  # a click can land while the page still scrolls; then click again
        x, y = page.evaluate("""(id) => {
            const h = document.getElementById(id).querySelector('.updatemenu-header-group');
            h.scrollIntoView({block: 'center'});
            const r = h.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        }""", gd)
        page.wait_for_timeout(100)
        page.mouse.click(x, y)
        try:
            page.wait_for_function(SETTLED, arg=[gd, opened], timeout=3_000)
            page.wait_for_timeout(100)
            return
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: try the click again
            continue
    raise AssertionError(f"the dropdown of {gd} did not {'open' if opened else 'close'}")


@pytest.fixture(scope="module")
def measured(browser, base_url):
    """Per (page, viewport, scheme), opened once: every control's contrast, every opened
    dropdown's items, the explorables' boxes and their cell labels."""
    cache = {}

    def measure(name, viewport, scheme):
        key = name, viewport, scheme
        if key not in cache:
            ctx, page = open_in(browser, base_url, name, viewport, scheme)
            found = {"controls": page.evaluate(CONTROLS), "cells": page.evaluate(CELL_TEXT),
                     "explorables": page.evaluate(EXPLORABLE_BOXES), "opened": []}
            for ex in found["explorables"]:
                for _ in range(ex["dropdowns"]):
                    click_header(page, ex["id"])
                    found["opened"].append((ex["chart"], page.evaluate(OPENED, ex["id"])))
                    click_header(page, ex["id"], opened=False)
            found["errors"] = list(page.errors)
            ctx.close()
            cache[key] = found
            # Every measured ratio, failing or not, for a reader comparing two builds.
            out = ARTIFACTS.parent / "contrast"
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{name}-{viewport}-{scheme}.json").write_text(json.dumps(found, indent=1, ensure_ascii=False))
        return cache[key]

    return measure


CASES = pytest.mark.parametrize("name,viewport,scheme", [
    (name, viewport, scheme) for name in PAGES for viewport in VIEWPORTS for scheme in SCHEMES])


def _ratio(a, b):
    """WCAG contrast of two sRGB colours given as 0-255 triples."""
    def lum(rgb):
        c = [v / 255 / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in rgb]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _failures(items):
    return [f"{i['chart']}: {i.get('kind', 'cell label')} {i['what']!r}: {i['ratio']}:1 < {i['need']}:1 "
            f"({i['colours']})" for i in items if i["ratio"] < i["need"]]


@CASES
def test_control_contrast(measured, name, viewport, scheme):
    found = measured(name, viewport, scheme)
    assert found["errors"] == [], found["errors"]
    bad = _failures(found["controls"])
    assert bad == [], "\n".join(bad)


@CASES
def test_cell_labels_read_on_their_cells(measured, name, viewport, scheme):
    bad = _failures(measured(name, viewport, scheme)["cells"])
    assert bad == [], "\n".join(bad[:20]) + f"\n({len(bad)} in all)"


@CASES
def test_opened_dropdowns_are_opaque_and_readable(measured, name, viewport, scheme):
    bad = []
    for chart, items in measured(name, viewport, scheme)["opened"]:
        assert items, f"{chart}: the dropdown did not open"
        bad += [f"{chart}: item {i['what']!r} is see-through (alpha {i['alpha']})" for i in items if i["alpha"] < 0.999]
        bad += [f"{chart}: item {i['what']!r} {i['ratio']}:1 ({i['colours']})" for i in items if i["ratio"] < TEXT]
        faces = sorted({tuple(i["fill"]) for i in items})
        if len(faces) != 2 or _ratio(*faces) < MARK:
            bad.append(f"{chart}: the picked item does not stand 3:1 off the others (faces {faces})")
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("name", list(PAGES))
def test_each_explorable_fits_a_phone_screen(measured, name):
    explorables = measured(name, "phone", "light")["explorables"]
    assert len(explorables) == EXPLORABLES.get(name, 0), [e["chart"] for e in explorables]
    screen = VIEWPORTS["phone"]["height"] - HEADER
    bad = []
    for ex in explorables:
        left, top, right, bottom = ex["box"]
        if bottom - top > screen:
            bad.append(f"{ex['chart']}: {bottom - top:.0f} px tall, a phone shows {screen}")
        assert ex["controls"], f"{ex['chart']}: no control drawn"
        for c in ex["controls"]:
            if not (c[0] >= left - 1 and c[2] <= right + 1 and c[1] >= top - 1 and c[3] <= bottom + 1):
                bad.append(f"{ex['chart']}: a control at {[round(v) for v in c]} lies outside the figure")
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("scheme", SCHEMES)
def test_online_softmax_marks_only_masked_cells(browser, base_url, viewport, scheme):
    ctx, page = open_in(browser, base_url, "flash", viewport, scheme)
    gd = page.evaluate("""() => {
        const box = Array.from(document.querySelectorAll('.plotly-chart[aria-label]'))
            .find(c => c.getAttribute('aria-label').includes('online softmax of one program'));
        const gd = box.querySelector('.js-plotly-plot');
        gd.id = gd.id || 'online-softmax';
        return gd.id;
    }""")
    # The causal button, as a reader reaches it: a row of buttons on a desktop, a dropdown on a phone.
    if page.evaluate("(id) => document.getElementById(id)._fullLayout.updatemenus[0].type === 'dropdown'", gd):
        click_header(page, gd)
        page.locator(f'[id="{gd}"] .updatemenu-dropdown-button', has_text="causal").first.click()
    else:
        page.evaluate("(id) => document.getElementById(id).querySelector('.updatemenu-container')"
                      ".scrollIntoView({block: 'center'})", gd)
        page.locator(f'[id="{gd}"] .updatemenu-button', has_text="causal").first.click()
    page.wait_for_timeout(300)
    last = page.evaluate(MASK_MARKS, gd)  # opens on the last key tile, the diagonal one
    assert last["masked"], f"the causal S tile {last['tile']} has no masked score: the example changed"
    assert last["nulls"] == last["masked"], "the S tile's −∞ scores are not the causal mask"
    wrong = sorted(set(last["marks"]) - set(last["masked"]))
    missing = sorted(set(last["masked"]) - set(last["marks"]))
    assert not wrong and not missing, (f"tile {last['tile']}: {len(last['marks'])} −∞ marks, {len(wrong)} on unmasked "
                                       f"cells, {len(missing)} masked cells unmarked")
    # The first key tile is wholly below the diagonal: nothing is masked, nothing is marked.
    page.evaluate("""async (id) => { const gd = document.getElementById(id), s = gd._fullLayout.sliders[0].steps[0];
                     await Plotly[s.method](gd, ...s.args); }""", gd)
    first = page.evaluate(MASK_MARKS, gd)
    assert first["masked"] == [] and first["marks"] == [], first
    assert page.errors == [], page.errors
    ctx.close()
