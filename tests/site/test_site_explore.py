"""The explorable figures in a real browser: drive each control through Plotly's own DOM
(slider rail, buttons, dropdowns) and check that what is drawn changes and stays right,
at 1400 and 390 px wide. Screenshots: test-artifacts/explore-*.png."""

from __future__ import annotations

import pytest

from blog import theme
from site_helpers import PAGES, ROOT

SHOTS = ROOT / "test-artifacts"

# By the container's accessible name, which holds the full title: on a phone charts.js draws
# a figure's short title instead.
FIND = """(phrase) => {
    const all = Array.from(document.querySelectorAll('.plotly-chart[aria-label]'));
    const box = all.find(c => c.getAttribute('aria-label').includes(phrase));
    const gd = box && box.querySelector('.js-plotly-plot');
    if (!gd) return null;
    gd.id = gd.id || ('explore-' + Math.random().toString(36).slice(2));
    gd.scrollIntoView({block: 'start'});
    return gd.id;
}"""

# Viewport coordinates of slider step i on the rail, where a click moves the handle (Plotly
# spaces the steps evenly along the rail, 8 px in from each end; narrow screens hide labels).
SLIDER_XY = """([id, i]) => {
    const gd = document.getElementById(id);
    gd.querySelector('.slider-container').scrollIntoView({block: 'center'});
    const rail = gd.querySelector('.slider-rail-rect').getBoundingClientRect();
    const n = gd._fullLayout.sliders[0].steps.length;
    return [rail.left + 8 + (rail.width - 16) * i / (n - 1), rail.top + rail.height / 2];
}"""


def open_figure(page, base_url, post, phrase):
    page.goto(base_url + PAGES[post], wait_until="load")
    # charts.js draws the charts near the viewport first and the rest when the browser is idle;
    # it marks the page once every chart is drawn.
    page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=30_000)
    gd = page.evaluate(FIND, phrase)
    assert gd, f"no figure titled {phrase!r} on {post}"
    page.wait_for_timeout(200)
    return gd


# Plotly moves a slider's handle at once but runs the step's command (restyle, update) on the
# next animation frame: wait for the event the command emits, not only for the handle.
ARM = """(id) => {
    const gd = document.getElementById(id);
    gd.dataset.stepDone = '';
    for (const e of ['plotly_restyle', 'plotly_update', 'plotly_relayout']) gd.once(e, () => { gd.dataset.stepDone = '1'; });
}"""


def slide(page, gd, i):
    page.evaluate(ARM, gd)
    x, y = page.evaluate(SLIDER_XY, [gd, i])
    page.mouse.click(x, y)
    page.wait_for_function("([id, i]) => { const gd = document.getElementById(id);"
                           " return gd._fullLayout.sliders[0].active === i && gd.dataset.stepDone === '1'; }",
                           arg=[gd, i])


def press(page, gd, label):
    """Click a button of the figure's first menu; a dropdown is opened first."""
    dropdown = page.evaluate("""(id) => {
        const gd = document.getElementById(id);
        gd.querySelector('.updatemenu-container').scrollIntoView({block: 'center'});  // clear of the sticky header
        return gd._fullLayout.updatemenus[0].type === 'dropdown';
    }""", gd)
    kind = ".updatemenu-button"
    if dropdown:
        page.locator(f'[id="{gd}"] .updatemenu-header-group').first.click()
        kind = ".updatemenu-dropdown-button"
    page.locator(f'[id="{gd}"] {kind}', has_text=label).first.click()
    page.wait_for_timeout(150)


def data(page, gd, expr):
    return page.evaluate(f"(id) => {{ const gd = document.getElementById(id); return {expr}; }}", gd)


def fits(page, gd, width):
    """Every control and the plot itself lie within the viewport's width."""
    boxes = page.evaluate("""(id) => Array.from(document.getElementById(id).querySelectorAll(
        '.main-svg, .updatemenu-container, .slider-container')).map(e => {
            const r = e.getBoundingClientRect(); return [r.left, r.right]; })""", gd)
    assert boxes and all(left >= -1 and right <= width + 1 for left, right in boxes), boxes


@pytest.fixture(params=[(1400, 900), (390, 844)], ids=["wide", "phone"])
def sized(request, browser):
    w, h = request.param
    ctx = browser.new_context(viewport={"width": w, "height": h})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg, w
    assert pg.errors == [], pg.errors
    ctx.close()


def shot(page, gd, name, width):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(f'[id="{gd}"]').screenshot(path=str(SHOTS / f"explore-{name}-{width}.png"))


def test_online_softmax(sized, base_url):
    page, width = sized
    gd = open_figure(page, base_url, "flash", "online softmax of one program")
    fits(page, gd, width)
    diff_max = "Math.max(...gd.data[4].z.flat().map(Math.abs))"
    assert data(page, gd, diff_max) <= 1e-12  # opens on the last tile: acc / l equals softmax(S) @ V
    slide(page, gd, 0)
    assert data(page, gd, diff_max) > 1e-3  # one tile in, the partial result is not the answer yet
    assert data(page, gd, "gd.data[0].x[0]") == "k0"
    slide(page, gd, 3)
    assert data(page, gd, diff_max) <= 1e-12
    press(page, gd, "causal")
    assert data(page, gd, "gd.data[7].visible === true && gd.data[0].visible === false")
    masked = data(page, gd, "gd.data[8].z.flat().filter(v => v === 1).length")
    assert masked == 8 * 7 // 2  # the diagonal tile: the strict upper triangle is masked
    assert data(page, gd, "Math.max(...gd.data[11].z.flat().map(Math.abs))") <= 1e-12
    assert "exp2" in data(page, gd, "gd.data[13].text[0]")
    shot(page, gd, "online-softmax", width)


def test_tile_schedule(sized, base_url):
    page, width = sized
    gd = open_figure(page, base_url, "flash", "Forward tiles and waves")
    fits(page, gd, width)
    slide(page, gd, 3)  # N = 2048
    assert data(page, gd, "[gd.data[0].z.length, gd.data[0].z[0].length]") == [16, 32]  # 128 x 64 tiles
    press(page, gd, "64×64")
    vis = data(page, gd, "gd.data.map((t, i) => t.visible ? i : -1).filter(i => i >= 0)")
    assert len(vis) == 8 and all(i // 8 == vis[0] // 8 for i in vis)
    z = data(page, gd, f"gd.data[{vis[4]}].z")  # causal grid of the chosen tile
    assert (len(z), len(z[0])) == (32, 32)
    assert sum(row.count(0) for row in z) == 32 * 31 // 2  # tiles past the diagonal are skipped
    text = data(page, gd, f"gd.data[{vis[7]}].text[0]")
    shares = [float(p.split("%")[0].split()[-1]) for p in text.replace("<br>", " ").split(",")[:3]]
    assert abs(sum(shares) - 100) <= 1.5, text  # rounded shares of the grid add up
    shot(page, gd, "schedule", width)


def test_backward_order_and_gqa(sized, base_url):
    page, width = sized
    gd = open_figure(page, base_url, "flash", "backward kernels' loop orders")
    fits(page, gd, width)
    slide(page, gd, 2)
    col = data(page, gd, "gd.data[0].text.map(r => r[2])")
    assert col == [str(i + 1) for i in range(len(col))]  # dK/dV program 2 visits every query tile in order
    press(page, gd, "causal")
    col = data(page, gd, "gd.data[2].text.map(r => r[2])")
    assert col[:8] == [""] * 8 and col[8] == "1"  # starts at the diagonal
    shot(page, gd, "backward", width)
    gd = open_figure(page, base_url, "flash", "Grouped-query attention")
    fits(page, gd, width)
    press(page, gd, "4")
    assert data(page, gd, "gd.data[5].text") == ["k/v 0", "k/v 1"]
    shot(page, gd, "gqa", width)


def test_addressing(sized, base_url):
    page, width = sized
    gd = open_figure(page, base_url, "vectorized", "K offsets")
    fits(page, gd, width)
    slide(page, gd, 8)  # N = 9: the block grows to 16 rows
    press(page, gd, "D = 3")
    i = data(page, gd, "gd.data.findIndex(t => t.visible === true)")
    text, z = data(page, gd, f"gd.data[{i}].text"), data(page, gd, f"gd.data[{i}].z")
    assert (len(text), len(text[0])) == (16, 4)
    assert all(text[r][c] == r * 3 + c for r in range(16) for c in range(4))
    assert all(z[r][c] == (r < 9 and c < 3) for r in range(16) for c in range(4))
    shot(page, gd, "addressing", width)


def test_tile_budget(sized, base_url):
    page, width = sized
    gd = open_figure(page, base_url, "optimizing", "forward candidates' budget")
    fits(page, gd, width)
    measured = data(page, gd, "gd.data[23].y.filter(v => v !== null).length")
    assert measured >= 1  # D=128 fp16 opens with the compiler's registers beside the model
    press(page, gd, "D=256, fp32")
    vis = data(page, gd, "gd.data.map((t, i) => t.visible ? i : -1).filter(i => i >= 0)")
    assert vis == list(range(50, 60))
    occupancy = data(page, gd, "gd.data[58].text")
    assert occupancy[0].startswith("0 ")  # 64x64 fp32 at D=256 needs more than 227 KB
    shot(page, gd, "tile-budget", width)


def test_ablation_steps(sized, base_url):
    page, width = sized
    gd = open_figure(page, base_url, "optimizing", "one switch at a time (")
    fits(page, gd, width)
    slide(page, gd, 2)  # step 3: skip tiles past the diagonal
    colours = data(page, gd, "gd.data[0].marker.color")
    assert colours.index(max(set(colours), key=colours.count)) != 3 and colours[3] != colours[0]
    assert "hi\u00a0=\u00a0tl.minimum" in data(page, gd, "gd.layout.annotations[0].text")
    press(page, gd, "D=128 causal")
    assert data(page, gd, "gd.data[3].visible === true && gd.data[0].visible === false")
    assert "predicted 1.90×" in data(page, gd, "gd.data[5].text[0]")
    shot(page, gd, "ablation", width)


def test_tile_map(sized, base_url):
    page, width = sized
    gd = open_figure(page, base_url, "variants", "Tile map of one head")
    fits(page, gd, width)
    visible = "gd.data.map((t, i) => t.visible === true ? i : -1).filter(i => i >= 0)"
    assert data(page, gd, visible) == [1, 5]  # opens on the sliding window and its text
    skipped = "gd.data[1].z.flat().filter(v => v === 0).length"
    wide = data(page, gd, skipped)
    slide(page, gd, 0)  # the narrowest window skips more tiles
    assert data(page, gd, skipped) > wide
    assert "sees 64 keys back" in data(page, gd, "gd.data[5].text[0]")
    press(page, gd, "documents")
    assert data(page, gd, visible) == [2, 6]
    assert "documents, " in data(page, gd, "gd.data[6].text[0]")
    slide(page, gd, 2)  # mean length 256: documents longer than a block, so some blocks are full
    kinds = data(page, gd, "Array.from(new Set(gd.data[2].z.flat())).sort()")
    assert kinds == [0, 1, 2]  # skipped, partial and full blocks all drawn
    press(page, gd, "causal")
    z = data(page, gd, "gd.data[0].z")
    assert all(row[-1] == 0 for row in z[:-1])  # every query tile but the last skips the last key tile
    shot(page, gd, "tile-map", width)


# Every text element of every chart with controls, in every state the controls reach (each
# menu button, and under it each slider step), must lie inside the chart's own SVG: text past
# its right edge is cut off, which is what a long code or diff line did on a phone.
TEXT_OUTSIDE = """async () => {
    const out = [];
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
        const layout = gd._fullLayout;
        const menu = (layout.updatemenus || [])[0], slider = (layout.sliders || [])[0];
        if (!menu && !slider) continue;
        const name = gd.closest('.plotly-chart').getAttribute('aria-label').slice(0, 40);
        const svg = gd.querySelector('.main-svg').getBoundingClientRect();
        for (const [m, button] of (menu ? menu.buttons : [null]).entries()) {
            if (button) await Plotly[button.method](gd, ...button.args);
            for (const [s, step] of (slider ? slider.steps : [null]).entries()) {
                if (step) await Plotly[step.method](gd, ...step.args);
                for (const text of gd.querySelectorAll('text')) {
                    const box = text.getBoundingClientRect();
                    if (box.width && (box.left < svg.left - 1 || box.right > svg.right + 1)) {
                        out.push(`${name}: menu ${m}, step ${s}: "${text.textContent.slice(0, 40)}" spans `
                                 + `${Math.round(box.left - svg.left)}..${Math.round(box.right - svg.left)} px `
                                 + `of ${Math.round(svg.width)}`);
                    }
                }
            }
        }
    }
    return out;
}"""


@pytest.mark.parametrize("post", ["vectorized", "flash", "optimizing", "variants"])
def test_explorable_text_stays_inside_the_chart(sized, base_url, post):
    page, width = sized
    page.goto(base_url + PAGES[post], wait_until="load")
    page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=30_000)
    outside = page.evaluate(TEXT_OUTSIDE)
    assert outside == [], outside[:10]


def test_explorables_follow_the_dark_palette(browser, base_url):
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    gd = open_figure(page, base_url, "flash", "online softmax of one program")
    light = data(page, gd, "gd._fullLayout.font.color")
    page.locator("form[data-md-component=palette] label:visible").first.click()
    page.wait_for_function("document.body.getAttribute('data-md-color-scheme') === 'slate'")
    page.wait_for_timeout(300)
    for phrase, name in (("online softmax of one program", "online-softmax"), ("Forward tiles and waves", "schedule")):
        gd = page.evaluate(FIND, phrase)
        assert data(page, gd, "gd._fullLayout.paper_bgcolor").replace(" ", "") == "rgba(0,0,0,0)"
        assert data(page, gd, "gd._fullLayout.font.color") != light, "the figure kept its light-palette text"
        shot(page, gd, f"{name}-dark", 390)
    ctx.close()


def test_inline_text_colours_follow_the_dark_palette(browser, base_url):
    """The ablation's diff colours its lines with inline styles inside the annotation text;
    in the dark scheme they take the dark twins too (the light ones fall below 4.5:1 there)."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    gd = open_figure(page, base_url, "optimizing", "one switch at a time (")
    page.locator("form[data-md-component=palette] label:visible").first.click()
    page.wait_for_function("document.body.getAttribute('data-md-color-scheme') === 'slate'")
    page.wait_for_function("(id) => document.getElementById(id).getAttribute('data-theme') === 'dark'", arg=gd)
    slide(page, gd, 4)  # a step that both removes and adds lines
    text = data(page, gd, "gd.layout.annotations[0].text")
    for role in ("flash", "sdpa-flash"):  # the diff's pink and green
        assert f"color:{theme.mark_color(role, 'dark')}" in text
        assert f"color:{theme.mark_color(role, 'light')}" not in text
    ctx.close()


# Tick labels as drawn, per axis of every chart: a log axis must read as values in order
# (Plotly's own minor labels read "5 2 10 5 2 1 5"), bytes in units ("1 GB", never Plotly's
# "1B" for a billion) and tile indices whole.
AXIS_LABELS = """() => {
    const out = [];
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
        const layout = gd._fullLayout;
        for (const key of Object.keys(layout).filter(k => /^[xy]axis\\d*$/.test(k))) {
            const ax = layout[key];
            if (!ax.visible || !ax.showticklabels) continue;
            const ticks = Array.from(gd.querySelectorAll(`.${ax._id}tick text`))
                .filter(t => t.getBoundingClientRect().width > 0)  // Plotly hides a label that would overflow
                .map(t => { const r = t.getBoundingClientRect();
                    return [t.textContent, ax._id[0] === 'x' ? r.left + r.width / 2 : -(r.top + r.height / 2)]; });
            ticks.sort((a, b) => a[1] - b[1]);  // in reading order: left to right, bottom to top
            out.push({chart: gd.closest('.plotly-chart').getAttribute('aria-label').slice(0, 40), axis: key,
                      type: ax.type, reversed: ax.range[0] > ax.range[1], title: (ax.title || {}).text || '',
                      ticks: ticks.map(t => t[0])});
        }
    }
    return out;
}"""
SCALE = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def _value(text):
    """A tick label's value: "0.5", "16k", "100 kB", "1 GB" ("−" is Plotly's minus)."""
    import re

    m = re.fullmatch(r"([−-]?[\d.]+)\s*([kMGT]?)(B?)", text.strip())
    assert m, f"tick label {text!r} does not read as a value"
    return float(m.group(1).replace("−", "-")) * SCALE[m.group(2)]


@pytest.mark.parametrize("viewport", [(1400, 900), (390, 844)], ids=["wide", "phone"])
@pytest.mark.parametrize("post", ["basic", "vectorized", "flash", "optimizing", "gluon", "variants"])
def test_axis_labels_read_as_values(browser, base_url, post, viewport):
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = ctx.new_page()
    page.goto(base_url + PAGES[post], wait_until="load")
    page.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=30_000)
    bad = []
    for ax in page.evaluate(AXIS_LABELS):
        where = f"{ax['chart']} {ax['axis']}: {' | '.join(ax['ticks'])}"
        if ax["type"] == "log" and ax["ticks"]:
            values = [_value(t) for t in ax["ticks"]]
            if values != sorted(values, reverse=ax["reversed"]) or len(set(values)) != len(values):
                bad.append(f"log ticks out of order: {where}")
        if any(t.strip()[-1:] == "B" and not t.strip()[-2:-1].isspace() and t.strip()[-2:-1] not in "kMGT"
               for t in ax["ticks"]):
            bad.append(f"'B' for a billion: {where}")
        if "tile" in ax["title"] and any(not t.replace("−", "-").lstrip("-").isdigit() for t in ax["ticks"]):
            bad.append(f"fractional tile index: {where}")
    ctx.close()
    assert bad == [], "\n".join(bad)
