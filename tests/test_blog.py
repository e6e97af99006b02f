"""The site's presentation package: imports without torch, follows the data's grid, meets contrast rules."""

from __future__ import annotations

import colorsys
import importlib.util
import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pio = pytest.importorskip("plotly.io", reason="the site's packages need plotly (the GPU box has none)")

from blog import figures, fmt, query, render, tables, theme
from perfdata import schema

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- a synthetic benchmark run

def _provenance(gpu="NVIDIA A100-SXM4-40GB", commit="abc1234def"):
    return {"gpu": gpu, "sm_count": 108, "driver": "1.0", "cuda": "12.0", "torch": "9.9", "triton": "9.9",
            "git_commit": commit, "date": "2030-01-02T03:04:05Z", "mode": "test",
            "timing": "a synthetic timing note, 5 rounds",
            "ceilings": {"copy_gbps": 1500.0, "matmul_fp16_tflops": 300.0, "matmul_fp32_tflops": 19.0}}


def _record(suite, provider, *, B=1, H=1, Hkv=None, N=256, D=64, dtype="float32", causal=False, direction="fwd",
            tflops=10.0, status="ok", **extra):
    shape = {"B": B, "H": H, "Hkv": H if Hkv is None else Hkv, "Nq": N, "Nk": N, "D": D}
    case = f"{suite}/{dtype}/B{B}H{H}/N{N}x{N}/D{D}/{'causal' if causal else 'full'}/{direction}"
    ms = 1000.0 / tflops
    rec = {"suite": suite, "case": case, "provider": provider, "direction": direction, "shape": shape, "dtype": dtype,
           "causal": causal, "status": status, "unit": "ms", "graph_p50": None, "round_p50": [ms, ms * 1.01]}
    if status == "ok":
        rec.update(p20=ms * 0.99, p50=ms, p80=ms * 1.02, tflops=tflops, reason=None)
    else:
        rec.update(p20=None, p50=None, p80=None, tflops=None, reason=f"{provider} refused this size (test)")
    rec.update(extra)
    return rec


def _doc(suite, records, **prov):
    return schema.validate({"schema": schema.SCHEMA_VERSION, "suite": suite, "provenance": _provenance(**prov),
                            "records": records})


PROVIDERS = ("flash", "sdpa-cudnn", "sdpa-flash", "eager")


def production(gpu="NVIDIA A100-SXM4-40GB", dtypes=("float16",), ns=(256, 512, 2048), ds=((96, 4), (32, 8)), B=2):
    recs = []
    for dtype, (d, h), causal, n, direction, (i, p) in itertools.product(
            dtypes, ds, (False, True), ns, ("fwd", "bwd"), enumerate(PROVIDERS)):
        failed = p == "eager" and n == ns[-1]
        recs.append(_record("production", p, B=B, H=h, N=n, D=d, dtype=dtype, causal=causal, direction=direction,
                            tflops=50.0 + 10 * i + n / 100, status="oom" if failed else "ok"))
    return _doc("production", recs, gpu=gpu)


def seed(sizes=((64, 32), (384, 48), (3000, 80))):
    recs = []
    for (n, d), (i, p) in itertools.product(sizes, enumerate(("basic", "vectorized", "flash", "eager"))):
        bad = p == "vectorized" and n == sizes[-1][0]
        recs.append(_record("seed", p, N=n, D=d, tflops=1.0 + i, status="unsupported" if bad else "ok"))
    return _doc("seed", recs)


def ablation(cases=((96, False),), n=1024, B=3):
    recs = []
    for d, causal in cases:
        for step, name in enumerate(("first", "second", "third")):
            recs.append(_record("ablation", name, B=B, H=2, N=n, D=d, dtype="float16", causal=causal,
                                tflops=100.0 + 20 * step, step=step, label=f"rung {name}", predicted_speedup=1.1,
                                config={"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2},
                                compiler={"registers": 100 + step, "spills": 0, "shared_bytes": 2048}))
        recs.append(_record("ablation", "sdpa-cudnn", B=B, H=2, N=n, D=d, dtype="float16", causal=causal, tflops=150.0))
    return _doc("ablation", recs)


def warpspec():
    """Variant names carry no '-plain'/'-ws' suffix: pairs must come from the record fields."""
    recs = [_record("warpspec", "flash", B=2, H=2, N=512, D=48, dtype="float16", tflops=200.0)]
    tiles = [{"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2},
             {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": 8, "num_stages": 3}]
    compiled = {"registers": 128, "shared_bytes": 1024, "ptx_lines": 10, "ptx_setmaxnreg": 0}
    for i, tile in enumerate(tiles):
        recs.append(_record("warpspec", f"alpha{i}", B=2, H=2, N=512, D=48, dtype="float16", tflops=150.0 + i,
                            config=tile, warp_specialize=False, compiler=compiled))
    recs.append(_record("warpspec", "beta0", B=2, H=2, N=512, D=48, dtype="float16", tflops=151.0,
                        config=tiles[0], warp_specialize=True, compiler=compiled))
    # The benchmark writes no config for a variant that failed to compile.
    recs.append(_record("warpspec", "beta1", B=2, H=2, N=512, D=48, dtype="float16", status="compile-error"))
    return _doc("warpspec", recs)


def _panel_titles(fig):
    return [re.sub("<[^>]+>", "", a.text) for a in fig.layout.annotations if (a.xref or "").endswith("domain")
            and a.yref.endswith("domain")]


# ----------------------------------------------------------------------------- no torch, no triton

def test_blog_imports_without_torch_or_triton():
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'triton'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import blog, blog.figures, blog.tables, blog.query, blog.fmt, blog.theme, blog.render, blog.notebook, blog.home
import perfdata.schema, perfdata.traffic
blog.render.figure_html(blog.figures.causal_tiles(256, 64, 64))
blog.render.figure_html(blog.figures.address_grid(3, 3))
assert not any(m.split('.')[0] in ('torch', 'triton') for m in sys.modules)
print('clean')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr


# ----------------------------------------------------------------------------- another grid, other charts

def test_production_figure_follows_the_grid():
    doc = production()
    fig = figures.production_tflops([doc], "fwd")
    assert _panel_titles(fig) == ["D=96 · H=4", "D=96, causal · H=4", "D=32 · H=8", "D=32, causal · H=8"]
    assert list(fig.layout.xaxis.tickvals) == [256, 512, 2048]
    assert "B=2" in fig.layout.title.text and "B=4" not in fig.layout.title.text
    assert "A100" in fig.layout.title.text
    assert not fig.layout.updatemenus, "one GPU and one dtype need no control"
    flash = [t for t in fig.data if t.name == theme.label("flash")]
    assert len(flash) == 4 and all(list(t.x) == [256, 512, 2048] for t in flash)
    eager = [t for t in fig.data if t.name == theme.label("eager")]
    assert all(list(t.x) == [256, 512] for t in eager), "a failed record must not be drawn"
    assert fig.layout.meta["provenance"] == [query.provenance_line(doc)]
    assert fig.layout.meta["notes"] == [
        "eager PyTorch: oom (eager refused this size (test)), A100 · float16 at N = 2048"]


def test_production_figure_gets_one_button_per_gpu_and_dtype():
    docs = [production(dtypes=("float16", "bfloat16")), production(gpu="NVIDIA B200", ns=(1024, 4096), ds=((64, 2),))]
    fig = figures.production_tflops(docs, "bwd")
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert labels == ["A100 · float16", "A100 · bfloat16", "B200 · float16"]
    assert sum(t.visible for t in fig.data) == len(PROVIDERS) * 4, "only the first view is shown at first"
    b200 = fig.layout.updatemenus[0].buttons[2]
    assert b200.args[1]["title.text"].startswith("Backward") and "B200" in b200.args[1]["title.text"]
    assert sum(b200.args[0]["visible"]) == len(PROVIDERS) * 2  # its one head dim, full and causal
    assert len(fig.layout.meta["provenance"]) == 2


def test_one_panel_grid_and_unknown_direction():
    fig = figures.production_tflops([production(ds=((128, 1),), ns=(8192,))], "fwd")
    assert len(_panel_titles(fig)) == 2 and fig.layout.meta["facets"]["cols"] == 2
    with pytest.raises(ValueError, match="direction"):
        figures.production_tflops([production()], "sideways")
    with pytest.raises(ValueError, match="no production documents"):
        figures.production_tflops([], "fwd")


def test_production_table_follows_the_grid():
    doc = production(ns=(512, 4096))
    html = tables.production_ratio_table(doc, "float16", "fwd")
    rows = re.findall(r'<th scope="row">([^<]*)</th>', html)
    assert rows == ["D=96, N=512", "D=96, N=4k", "D=96 causal, N=512", "D=96 causal, N=4k",
                    "D=32, N=512", "D=32, N=4k", "D=32 causal, N=512", "D=32 causal, N=4k"]
    assert "B=2" in html and "B=4" not in html and "synthetic timing note" in html
    assert 'id="production-fwd-float16-a100"' in html
    assert tables.production_table_id(doc, "float16", "fwd") == "production-fwd-float16-a100"
    with pytest.raises(ValueError, match="dtypes present"):
        tables.production_ratio_table(doc, "float64")


def test_seed_charts_and_table_follow_the_sizes():
    doc = seed()
    fig = figures.seed_comparison(doc)
    assert list(fig.layout.xaxis.categoryarray) == ["64×32", "384×48", "3000×80"]
    assert "B=1, H=1" in fig.layout.xaxis.title.text
    html = tables.seed_table(doc)
    assert re.findall(r'<th scope="row">([^<]*)</th>', html) == ["64×32", "384×48", "3000×80"]
    # The reason for "unsupported" is on the page, in a numbered note, not only in a tooltip.
    assert "<em>unsupported</em><sup>1</sup>" in html
    assert '<ol class="bench-notes"><li>unsupported: vectorized refused this size (test)</li></ol>' in html
    traffic_fig = figures.memory_traffic(doc, providers=("basic", "vectorized"))
    assert list(traffic_fig.data[0].x) == ["64×32", "384×48", "3000×80"]


def test_ablation_follows_its_cases():
    doc = ablation(cases=((96, False), (48, True), (48, False)))
    assert query.ablation_cases(doc) == [(96, False), (48, False), (48, True)]
    fig = figures.ablation_ladder(doc)
    assert _panel_titles(fig) == ["D=96, full", "D=48, full", "D=48, causal"]
    assert "B=3" in fig.layout.title.text and "N=1024" in fig.layout.title.text
    html = tables.ablation_table(doc)
    assert html.count('<th scope="col">D=') == 3
    assert 'predicted 1.10×' in html
    compiled = tables.compiler_table(doc)
    assert "D=96, full" in compiled and ">101<" in compiled and "64×32<br><small>4w, 2s" in compiled
    one = ablation(cases=((64, True),))
    assert _panel_titles(figures.ablation_ladder(one)) == ["D=64, causal"]


def test_warpspec_pairs_come_from_record_fields():
    doc = warpspec()
    pairs = query.warpspec_pairs(doc)
    assert [(p["tile"]["BLOCK_M"], p["plain"]["provider"], p["ws"]["provider"]) for p in pairs] == [
        (64, "alpha0", "beta0"), (128, "alpha1", "beta1")]
    assert pairs[0]["same_code"] is True and pairs[1]["ws"]["status"] == "compile-error"
    assert pairs[0]["flash"] == 200.0 and pairs[0]["cudnn"] is None
    html = tables.warpspec_table(doc)
    assert "compile-error: beta1 refused this size (test)" in html and "synthetic timing note" in html


def test_scaling_marks_where_a_provider_stopped():
    recs = [_record("ladder", "flash", N=n, D=32, tflops=n / 100) for n in (128, 256, 512)]
    recs += [_record("ladder", "vectorized", N=128, D=32),
             _record("ladder", "vectorized", N=256, D=32, status="unsupported")]
    fig = figures.scaling(_doc("ladder", recs))
    (note,) = fig.layout.annotations
    assert note.x == pytest.approx(math.log10(256)) and "unsupported from N=256" in note.text
    assert "D=32" in fig.layout.xaxis.title.text
    # The reason is on the page, under the chart, not only in the annotation's tooltip.
    assert fig.layout.meta["notes"] == [
        "vectorized (post 2): unsupported (vectorized refused this size (test)), at N = 256"]
    assert '<ul class="chart-notes"><li>vectorized (post 2): unsupported (' in render.figure_html(fig)


# ----------------------------------------------------------------------------- what every figure must have

def _timeline_fixture():
    from timeline_synthetic import timeline_doc

    return timeline_doc(schedules=("serial", "pingpong", "pipelined"), ctas=(0, 1))


def _all_figures():
    prod = production(dtypes=("float16", "bfloat16"))
    ladder = _doc("ladder", [_record("ladder", p, N=n, D=32, tflops=n / 100 + i)
                             for n in (128, 256) for i, p in enumerate(("basic", "vectorized", "flash", "eager"))])
    return [figures.production_tflops([prod], "fwd"), figures.seed_comparison(seed()), figures.seed_speedup(seed()),
            figures.memory_traffic(seed()), figures.scaling(ladder), figures.roofline(ladder),
            figures.ablation_ladder(ablation(cases=((96, False), (96, True)))), figures.address_grid(),
            figures.causal_tiles(), figures.timeline(_timeline_fixture())]


@pytest.mark.parametrize("fig", _all_figures(), ids=lambda f: f.layout.meta["short_title"])
def test_every_axis_has_a_title_and_every_figure_a_name(fig):
    layout = fig.to_plotly_json()["layout"]
    axes = [k for k in layout if re.fullmatch(r"[xy]axis\d*", k)]
    for key in axes:
        shared = layout[key].get("matches") or layout[key].get("showticklabels") is False
        titled = (layout[key].get("title") or {}).get("text")
        assert titled or shared or key.startswith("xaxis") and any(
            (layout[k].get("title") or {}).get("text") for k in axes if k.startswith("xaxis")), f"{key} has no title"
    assert fig.layout.template.layout.hovermode == "x unified"
    html = render.figure_html(fig)
    assert f'role="img" aria-label="{render.figure_title(fig)}"' in html.replace("&#x27;", "'").replace("&quot;", '"')
    payload = json.loads(re.search(r'<script type="application/json">(.*)</script>', html).group(1))
    assert payload["figure"]["layout"]["title"]["text"] == fig.layout.title.text
    assert "</" not in re.search(r'<script type="application/json">(.*)</script>', html).group(1)


def test_reference_labels_sit_on_their_lines_on_log_axes():
    speedup = figures.seed_speedup(seed())
    (line,) = speedup.layout.shapes
    (note,) = speedup.layout.annotations
    assert line.y0 == 1 and note.y == 0, "annotation y on a log axis is log10 of the value"
    traffic_fig = figures.memory_traffic(seed())
    copy = [a for a in traffic_fig.layout.annotations if "copy bandwidth" in a.text][0]
    assert copy.y == pytest.approx(math.log10(1500.0)) and copy.yref == "y2"


def test_a_figure_without_a_title_is_refused():
    fig = figures.causal_tiles()
    fig.update_layout(title_text="")
    with pytest.raises(ValueError, match="title"):
        render.figure_html(fig)


# ----------------------------------------------------------------------------- contrast (WCAG 2.1)

def _luminance(value: str) -> float:
    channels = [int(value.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_dark_background_matches_materials_slate_scheme():
    """Material's CSS sets slate's background as an hsla of the root hue; recompute it."""
    css_dir = Path(importlib.util.find_spec("material").origin).parent / "templates" / "assets" / "stylesheets"
    css = "".join(p.read_text() for p in sorted(css_dir.glob("*.min.css")))
    hue = re.search(r":root,\[data-md-color-scheme=default\]\{--md-hue:(\d+)deg", css)
    bg = re.search(r"--md-default-bg-color:hsla\(var\(--md-hue\), ?(\d+)%, ?(\d+)%, ?1\)", css)
    assert hue and bg, "Material's palette CSS changed shape: re-derive theme.BACKGROUNDS['dark']"
    r, g, b = colorsys.hls_to_rgb(int(hue.group(1)) / 360, int(bg.group(2)) / 100, int(bg.group(1)) / 100)
    assert theme.BACKGROUNDS["dark"] == "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (r, g, b)))


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_colour_meets_its_contrast_rule(scheme):
    bg = theme.BACKGROUNDS[scheme]
    for role in theme.MARKS:
        assert _contrast(theme.color(role, scheme), bg) >= 3, f"{role} trace below 3:1 on {scheme}"
    for role in theme.TEXT:
        assert _contrast(theme.color(role, scheme), bg) >= 4.5, f"{role} text below 4.5:1 on {scheme}"
    for role, cell in theme.CELLS.items():
        assert _contrast(cell, bg) >= 3, f"{role} cell below 3:1 on {scheme}"
        assert _contrast(theme.CELL_TEXT, cell) >= 4.5, f"text on {role} below 4.5:1"


def test_chart_buttons_read_in_both_schemes():
    # The same colours in both schemes; plotly.js paints the active button #F4FAFF itself.
    for bg in (theme.BUTTON_BG, "#F4FAFF"):
        assert _contrast(theme.BUTTON_TEXT, bg) >= 4.5, bg
    assert _contrast(theme.BUTTON_BG, "#F4FAFF") > 1.2, "the active button must stand out from the others"


def test_text_drawn_in_a_trace_colour_still_reads_as_text():
    """Annotations use text roles or provider colours: each must reach 4.5:1 in both schemes."""
    dark = theme.dark_recolor()
    for fig in _all_figures():
        for note in fig.layout.annotations:
            light = note.font.color
            assert light, f"annotation {note.text!r} has no colour of its own"
            assert _contrast(light, theme.BACKGROUNDS["light"]) >= 4.5, note.text
            assert _contrast(dark.get(light, light), theme.BACKGROUNDS["dark"]) >= 4.5, note.text


def test_every_colour_in_a_figure_has_a_dark_twin_or_is_scheme_free():
    allowed = (set(theme.dark_recolor()) | set(theme.CELLS.values())
               | {theme.CELL_TEXT, theme.BUTTON_BG, theme.BUTTON_TEXT, "rgba(0,0,0,0)"})
    for fig in _all_figures():
        text = pio.to_json(fig, validate=False)
        colours = set(re.findall(r'"(#[0-9a-fA-F]{6}|rgba?\([^)]*\))"', text))
        assert colours <= allowed, f"{fig.layout.meta['short_title']}: {sorted(colours - allowed)}"
    assert len(set(theme.dark_recolor().values())) == len(theme.dark_recolor()), "dark values must be unique"


# ----------------------------------------------------------------------------- small pieces

def test_tables_have_a_caption_and_a_header_row():
    for html in (tables.seed_table(seed()), tables.production_ratio_table(production()),
                 tables.ablation_table(ablation()), tables.warpspec_table(warpspec()), tables.compiler_table(ablation())):
        assert html.startswith('<div class="table-scroll"><table class="bench-table"')
        assert re.search(r"<caption>[^<]+</caption><thead><tr><th scope=\"col\"", html)
    folded = tables.production_ratio_table(production(), details=True)
    assert folded.startswith('<details class="bench-details"><summary>')


def test_formatting_and_input_checks():
    assert fmt.ms(0.0123) == "12.3 µs" and fmt.ms(0.5) == "0.500 ms" and fmt.ms(18.44) == "18.4 ms"
    assert fmt.size(16384) == "16k" and fmt.size(3000) == "3000"
    with pytest.raises(TypeError):
        fmt.ms("1")
    with pytest.raises(ValueError):
        fmt.ms(-1)
    with pytest.raises(ValueError, match="cannot match"):
        query.ok([], colour="red")
    with pytest.raises(ValueError, match="suite must be one of"):
        query.load("nonsense")
    with pytest.raises(ValueError, match="scheme"):
        theme.color("flash", "sepia")
    with pytest.raises(ValueError, match="no colour"):
        theme.color("nonsense")


def test_ratio_summary_pairs_by_case():
    doc = production(ns=(1024, 8192))
    lo, hi = query.ratio_summary(doc, "fwd", "sdpa-cudnn", min_n=4096)
    assert lo == pytest.approx((50 + 81.92) / (60 + 81.92)) and hi == lo
    with pytest.raises(KeyError, match="no comparable"):
        query.ratio_summary(doc, "fwd", "sdpa-cudnn", min_n=10**6)


def test_the_site_data_still_draws():
    """The committed data: every figure and table builds, and the headline names its GPU."""
    from blog import home

    assert 'class="plotly-chart"' in home.headline_figure_html()
    assert home.headline_sentence().startswith("On an NVIDIA")
    abl = query.load("ablation")[0]
    tables.ablation_table(abl)
    assert len(query.warpspec_pairs(query.load("warpspec")[0])) >= 1


def test_notebook_helpers_outside_a_notebook(capsys):
    from blog import notebook

    notebook.show(figures.causal_tiles())
    notebook.show(tables.seed_table(seed()))
    out = capsys.readouterr().out
    assert out.startswith("[chart] Causal tiles, N=512") and "[table] Median forward time" in out
    with pytest.raises(TypeError, match="plotly Figure or an HTML string"):
        notebook.show(42)
    with pytest.raises(ValueError, match="is not in the source"):
        notebook.show_source(figures.causal_tiles, start="no such line")


# ----------------------------------------------------------------------------- FlashAttention-4, decoding, mixed commits

def _with_fa4(doc, status="ok"):
    """``doc`` with a FlashAttention-4 record beside each cuDNN one, 1.2x its throughput (or failed)."""
    recs = []
    for r in doc["records"]:
        recs.append(r)
        if r["provider"] == "sdpa-cudnn":
            s = r["shape"]
            recs.append(_record("production", "fa4", B=s["B"], H=s["H"], N=s["Nq"], D=s["D"], dtype=r["dtype"],
                                causal=r["causal"], direction=r["direction"], tflops=r["tflops"] * 1.2, status=status))
    return schema.validate({**doc, "records": recs})


def _with_decode(doc):
    """``doc`` plus decoding records (one query against 4096 keys), as the production suite now writes."""
    recs = list(doc["records"])
    for p in ("flash", "sdpa-cudnn", "fa4"):
        r = _record("production", p, B=2, H=4, N=1, D=96, dtype="float16", tflops=0.5)
        r["shape"]["Nk"] = 4096
        r["case"] = r["case"].replace("N1x1", "N1x4096")
        recs.append(r)
    return schema.validate({**doc, "records": recs})


def test_fa4_is_drawn_after_cudnn_in_its_own_colour_when_present():
    plain = figures.production_tflops([production()], "fwd")
    fig = figures.production_tflops([_with_fa4(production())], "fwd")
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend.index("FlashAttention-4") == legend.index(theme.label("sdpa-cudnn")) + 1
    fa4 = [t for t in fig.data if t.name == "FlashAttention-4"]
    assert len(fa4) == 4 and {t.line.color for t in fa4} == {theme.mark_color("fa4")}
    assert theme.mark_color("fa4") not in {theme.mark_color(p) for p in theme.LABELS if p != "fa4"}
    assert len(fig.data) == len(plain.data) + 4
    # A run where FA4 never ran draws exactly what a run without it draws.
    failed = figures.production_tflops([_with_fa4(production(), status="unsupported")], "fwd")
    assert [t.name for t in failed.data] == [t.name for t in plain.data]
    assert failed.layout.meta["notes"] == plain.layout.meta["notes"]


def test_ratio_table_gains_an_fa4_column_only_where_fa4_ran():
    plain = tables.production_ratio_table(production(), "float16", "fwd")
    assert "FA4" not in plain and "FlashAttention-4" not in plain
    assert "ours against cuDNN and FlashAttention-2" in plain
    html = tables.production_ratio_table(_with_fa4(production()), "float16", "fwd")
    assert re.findall(r'<th scope="col">([^<]*)</th>', html)[-1] == "÷ FA4"
    assert "ours against cuDNN, FlashAttention-2 and FlashAttention-4" in html
    first = re.search(r'<th scope="row">D=96, N=256</th>(.*?)</tr>', html).group(1)
    assert re.findall(r"<td>([^<]*)</td>", first)[-1] == f"{(50 + 2.56) / ((60 + 2.56) * 1.2):.2f}"
    unsupported = tables.production_ratio_table(_with_fa4(production(), status="unsupported"), "float16", "fwd")
    assert "÷ FA4" not in unsupported and "FlashAttention-4 did not run: fa4 refused this size" in unsupported


def test_decoding_records_stay_out_of_the_square_grid():
    doc = _with_decode(production())
    fig = figures.production_tflops([doc], "fwd")
    assert list(fig.layout.xaxis.tickvals) == [256, 512, 2048], "N=1 must not join the sequence-length axis"
    assert all(1 not in t.x for t in fig.data)
    html = tables.production_ratio_table(doc, "float16", "fwd")
    assert "N=1<" not in html and "N=1," not in html
    assert query.ratios_by_case(doc, "fwd", "sdpa-cudnn") == query.ratios_by_case(production(), "fwd", "sdpa-cudnn")


def test_data_from_different_commits_drawn_together_says_so():
    h100 = production(gpu="NVIDIA H100 80GB HBM3")
    h200 = production(gpu="NVIDIA H200")
    h200["provenance"].update(git_commit="def5678aaa", date="2029-12-30T00:00:00Z")
    fig = figures.production_tflops([h100, h200], "fwd")
    assert fig.layout.meta["notes"][0] == ("H100 data: commit abc1234, 2030-01-02; H200 data: commit def5678, "
                                           "2029-12-30 — different commits, so the kernel code may differ between them.")
    assert "different commits" in render.figure_html(fig)
    same = figures.production_tflops([h100, production(gpu="NVIDIA H200")], "fwd")
    assert not any("commit" in note for note in same.layout.meta["notes"])
    assert query.commit_note([h100]) is None
    # Two files from the same GPU (a profile beside timings) are told apart by their suite.
    abl = ablation()
    abl["provenance"]["git_commit"] = "fedcba9"
    assert query.commit_note([production(), abl]).startswith("A100 production data: commit abc1234")


# ----------------------------------------------------------------------------- post 5: the Gluon switches

def _hopper_doc():
    rep = {"registers": 168, "spills": 0, "shared_bytes": 100 * 1024}
    recs = []
    for d, causal in ((96, False), (96, True)):
        common = dict(B=2, H=3, N=512, D=d, dtype="float16", causal=causal)
        recs += [
            # the default, rounds 10.0-10.5 ms
            _record("hopper", "gluon-serial", tflops=100.0, round_p50=[10.0, 10.5], compiler=rep, **common),
            # faster with no overlap of rounds: a measured difference
            _record("hopper", "gluon-pingpong", tflops=120.0, round_p50=[8.0, 8.4], compiler=rep, **common),
            # "faster" but its rounds overlap the default's: noise
            _record("hopper", "gluon-pipelined", tflops=102.0, round_p50=[9.9, 10.2],
                    compiler={**rep, "shared_bytes": 150 * 1024}, **common),
            _record("hopper", "sdpa-cudnn", tflops=110.0, **common),
        ]
    return _doc("hopper", recs)


def test_separated_needs_rounds_that_do_not_overlap():
    a = _record("hopper", "x", tflops=100.0, round_p50=[10.0, 10.5])
    assert query.separated(a, _record("hopper", "y", tflops=120.0, round_p50=[8.0, 8.4]))
    assert not query.separated(a, _record("hopper", "y", tflops=102.0, round_p50=[9.9, 10.2]))
    lo, hi = query.tflops_range(a)
    assert lo < a["tflops"] <= hi


def test_hopper_rows_and_table_mark_only_differences_beyond_the_noise():
    doc = _hopper_doc()
    rows = {r["provider"]: r for r in query.hopper_rows(doc, 96, False)}
    assert rows["gluon-serial"]["vs_serial"] == 1.0 and not rows["gluon-serial"]["beyond_noise"]
    assert rows["gluon-pingpong"]["beyond_noise"] and rows["gluon-pingpong"]["vs_serial"] == pytest.approx(1.2)
    assert not rows["gluon-pipelined"]["beyond_noise"]
    html_ = tables.hopper_table(doc)
    assert html_.count('class="hit"') == 2  # ping-pong, in both cases
    assert 'class="miss"' not in html_
    assert "150 KB smem at D=96" in html_  # only where a variant's shared memory differs
    fig = figures.hopper_variants(doc)
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 and list(bars[0].x) == ["serial", "ping-pong", "overlap"]
    assert bars[0].error_y.array is not None  # whiskers from the rounds
    with pytest.raises(KeyError):
        query.hopper_rows(doc, 64, False)


# ----------------------------------------------------------------------------- post 5: the timeline

from timeline_synthetic import timeline_doc  # noqa: E402


def _event(case="timeline/x/pingpong", schedule="pingpong", cta=0, warp=0, role="consumer 0", scope="softmax",
           start=0.0, end=1.0):
    return {"suite": "timeline", "case": case, "provider": f"gluon-{schedule}", "direction": "fwd",
            "shape": {"B": 1, "H": 1, "Hkv": 1, "Nq": 256, "Nk": 256, "D": 64}, "dtype": "float16", "causal": False,
            "status": "ok", "unit": "ns", "schedule": schedule, "cta": cta, "warp": warp, "role": role,
            "scope": scope, "start": start, "end": end}


def _timeline(events):
    doc = timeline_doc()
    doc["records"] = events
    return schema.validate(doc)


def test_scope_kinds_follow_the_names():
    kinds = {s: query.scope_kind(s) for s in ("wait K", "wait turn", "QK^T", "PV", "softmax", "load K/V",
                                              "epilogue", "wgmma issue", "tma_loads_issue", "Wait empty",
                                              "PV + QK^T", "wait K/V")}
    assert kinds == {"wait K": "wait", "wait turn": "wait", "QK^T": "matmul", "PV": "matmul", "softmax": "softmax",
                     "load K/V": "load", "epilogue": "other", "wgmma issue": "matmul", "tma_loads_issue": "load",
                     "Wait empty": "wait", "PV + QK^T": "matmul", "wait K/V": "wait"}
    with pytest.raises(TypeError, match="scope must be a str"):
        query.scope_kind(3)


def test_timeline_summary_counts_overlap_by_hand():
    # Consumer 0: softmax over [0, 10]. Consumer 1: QK^T over [2, 4] on one warp and [3, 6] on another
    # (the union [2, 6] counts once), PV over [8, 20]. Overlap with the softmax: 4 + 2 = 6 of 10 ns.
    doc = _timeline([
        _event(scope="softmax", start=0, end=10),
        _event(scope="wait turn", start=10, end=20),
        _event(warp=4, role="consumer 1", scope="QK^T", start=2, end=4),
        _event(warp=5, role="consumer 1", scope="QK^T", start=3, end=6),
        _event(warp=4, role="consumer 1", scope="PV", start=8, end=20),
        _event(warp=8, role="producer", scope="load K/V", start=0, end=5),
    ])
    s = query.timeline_summary(doc, "timeline/x/pingpong")
    assert list(s) == ["producer", "consumer 0", "consumer 1"]
    assert s["consumer 0"]["softmax_under_matmul"] == pytest.approx(0.6)
    assert s["consumer 0"]["share"] == {"softmax": pytest.approx(0.5), "wait": pytest.approx(0.5)}
    assert s["consumer 1"]["softmax_under_matmul"] is None  # no softmax to hide
    # Warp 4 spans [2, 20] with 14 ns of matmul; warp 5 spans [3, 6], all matmul.
    assert s["consumer 1"]["share"] == {"matmul": pytest.approx((14 + 3) / (18 + 3))}
    assert s["producer"] == {"share": {"load": 1.0}, "softmax_under_matmul": None, "warps": 1}
    assert query.program_times(doc, "timeline/x/pingpong") == {0: 20}


def test_timeline_queries_follow_the_data():
    doc = timeline_doc(schedules=("serial", "pingpong", "pipelined"), ctas=(0, 3))
    cases = query.timeline_cases(doc)
    assert [c["schedule"] for c in cases] == ["serial", "pingpong", "pipelined"]
    assert all(c["ctas"] == [0, 3] for c in cases)
    events = query.timeline_events(doc, cases[1]["case"], 3)
    assert {r["cta"] for r in events} == {3}
    assert query.timeline_warps(events)[0] == ("producer", 8)
    assert [w for _, w in query.timeline_warps(events)] == [8, 0, 1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(KeyError, match="no events for program 1"):
        query.timeline_events(doc, cases[0]["case"], 1)
    with pytest.raises(ValueError, match="expected a timeline document"):
        query.timeline_cases(_hopper_doc())


def test_timeline_figure_one_panel_per_case_one_row_per_warp_and_a_button_per_program():
    doc = timeline_doc(schedules=("serial", "pingpong"), ctas=(0, 2))
    fig = figures.timeline(doc)
    assert [a.text for a in fig.layout.annotations] == ["<b>Gluon, serial consumers</b>", "<b>Gluon, ping-pong</b>"]
    assert list(fig.layout.yaxis.categoryarray) == ["producer · warp 8"] + [f"consumer 0 · warp {w}" for w in range(4)] \
        + [f"consumer 1 · warp {w}" for w in range(4, 8)]
    assert fig.layout.xaxis2.title.text.startswith("µs") and fig.layout.xaxis.matches == "x2"
    bars = fig.data
    assert all(b.type == "bar" and b.orientation == "h" for b in bars)
    # Durations in µs, based at the start: the first event's bar matches its record.
    first = query.timeline_events(doc, query.timeline_cases(doc)[0]["case"], 0)[0]
    bar = next(b for b in bars if b.name == first["scope"] and b.visible)
    assert bar.base[0] == pytest.approx(first["start"] / 1e3, abs=1e-4)
    assert bar.x[0] == pytest.approx((first["end"] - first["start"]) / 1e3, abs=1e-4)
    # One colour per scope name across panels and programs; kinds take their family.
    colours = {}
    for b in bars:
        assert colours.setdefault(b.name, b.marker.color) == b.marker.color, b.name
    assert len(set(colours.values())) == len(colours)
    assert colours["QK^T"] in [theme.color(r) for r in theme.SCOPE_FAMILIES["matmul"]]
    assert colours["wait K"] in [theme.color(r) for r in theme.SCOPE_FAMILIES["wait"]]
    # The dropdown switches programs: each entry shows exactly its own traces, and each scope once in the legend.
    (menu,) = fig.layout.updatemenus
    assert [b.label for b in menu.buttons] == ["program 0", "program 2"]
    for button in menu.buttons:
        shown = [t for t, v in zip(bars, button.args[0]["visible"]) if v]
        legend = [t.name for t in shown if t.showlegend]
        assert shown and len(legend) == len(set(legend)) == len({t.name for t in shown})
    notes = " ".join(fig.layout.meta["notes"])
    assert doc["provenance"]["proton"]["note"] in notes
    assert fig.layout.meta["provenance"] == [query.provenance_line(doc)]


def test_timeline_figure_with_one_program_has_no_buttons_and_notes_untraced_programs():
    assert not figures.timeline(timeline_doc(ctas=(1,))).layout.updatemenus
    doc = timeline_doc(schedules=("serial",), ctas=(0,))
    doc["records"] += timeline_doc(schedules=("pingpong",), ctas=(0, 1))["records"]
    fig = figures.timeline(schema.validate(doc))
    assert any("Gluon, serial consumers: programs 0 only" in n for n in fig.layout.meta["notes"])
    failed = timeline_doc(ctas=(0,))
    for r in failed["records"]:
        r.update(status="error", reason="no trace (test)")
    with pytest.raises(ValueError, match="no event that ran"):
        figures.timeline(schema.validate(failed))
    with pytest.raises(ValueError, match="no event that ran"):
        tables.timeline_table(failed)


def test_timeline_table_is_computed_from_the_events():
    doc = timeline_doc()
    html_ = tables.timeline_table(doc)
    assert re.search(r"<caption>[^<]+</caption><thead><tr><th scope=\"col\"", html_)
    s = query.timeline_summary(doc, query.timeline_cases(doc)[1]["case"])
    assert f"{s['consumer 0']['softmax_under_matmul']:.0%}" in html_
    assert "wait: wait empty, wait K, wait V, wait K/V, wait turn" in html_  # the kinds, named from the data
    assert html_.count("<tr>") == 1 + 3 * 2  # header, and three roles in each of two cases


def test_scope_colours_are_checked():
    assert theme.scope_color("wait", 5) == theme.scope_color("wait", 5 % len(theme.SCOPE_FAMILIES["wait"]))
    with pytest.raises(ValueError, match="no colours for scope kind"):
        theme.scope_color("nap", 0)
    with pytest.raises(ValueError, match="index"):
        theme.scope_color("wait", -1)


def test_an_absent_suite_is_optional_only_when_asked(tmp_path):
    assert query.load("timeline", tmp_path, required=False) == []
    with pytest.raises(schema.BenchDataError, match="no timeline"):
        query.load("timeline", tmp_path)
    (tmp_path / "timeline.h100.json").write_text("{")
    with pytest.raises(schema.BenchDataError, match="not valid JSON"):
        query.load("timeline", tmp_path, required=False)  # corrupt is never "absent"


def test_a_timeline_in_cycles_keeps_its_unit_on_the_axis_in_the_hover_and_in_words():
    doc = timeline_doc(unit="cycles", warps=(0, 4, 8), ctas=(0, 64))
    doc["provenance"]["proton"]["warps"] = "warps 0,4,8 of each program"
    assert query.timeline_unit(doc) == "cycles"
    fig = figures.timeline(doc)
    assert fig.layout.xaxis2.title.text == "SM cycles since the program's first record"
    assert "cycles long" in fig.data[0].hovertemplate and "µs" not in fig.data[0].hovertemplate
    first = query.timeline_events(doc, query.timeline_cases(doc)[0]["case"], 0)[0]
    bar = next(b for b in fig.data if b.name == first["scope"] and b.visible)
    assert bar.base[0] == pytest.approx(first["start"]) and bar.x[0] == pytest.approx(first["end"] - first["start"])
    assert list(fig.layout.yaxis.categoryarray) == ["producer · warp 8", "consumer 0 · warp 0", "consumer 1 · warp 4"]
    assert "warps 0,4,8 of each program" in fig.layout.meta["notes"][0]
    assert fmt.duration(12345.6, "cycles") == "12,346 cycles" and fmt.duration(12345.6, "ns") == "12.3 µs"
    with pytest.raises(ValueError, match="unit must be"):
        fmt.duration(1.0, "ms")


# ----------------------------------------------------------------------------- post sources


@pytest.mark.parametrize("post", sorted((ROOT / "docs" / "posts").glob("*.py")), ids=lambda p: p.name)
def test_post_source_has_no_control_characters(post):
    """A "\\text" typed inside a Python string becomes a TAB and "ext": KaTeX then prints "ext{...}"."""
    for number, line in enumerate(post.read_text().splitlines(), 1):
        bad = [hex(ord(c)) for c in line if ord(c) < 32]
        assert not bad, f"{post.name}:{number}: control characters {bad}"
