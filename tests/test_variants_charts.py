"""Post 6's measured comparison (blog.figures.variants_comparison, blog.tables.variants_table) on a
small synthetic document in scripts/bench_variants.py's schema, built here: the chart and the table
read what the records say, and a missing or foreign file is handled."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("plotly", reason="the site's packages need plotly (the GPU box has none)")

from blog import figures, tables  # noqa: E402

PROV = dict(gpu="NVIDIA H100 80GB HBM3", gpu_uuid="GPU-x", sm_count=132, driver="550.0", cuda="12.4",
            torch="2.5.0", triton="3.1.0", date="2026-12-01T00:00:00Z", git_commit="0123456789abcdef")


def record(variant, provider, direction, p50, *, dtype="float16", d=64, status="ok", reason=None):
    case = f"{variant}/{dtype}/B2H16/N16384/D{d}/{direction}"
    flops = 1e12
    return dict(case=case, provider=provider, direction=direction, variant=variant, dtype=dtype,
                shape=dict(B=2, H=16, N=16384, D=d), params={}, kept_pairs=1, flops=flops, status=status,
                reason=reason, p20=p50, p50=p50 if status == "ok" else None, p80=p50,
                tflops=flops / (p50 * 1e-3) / 1e12 if status == "ok" else None, max_err=None, tol=None)


def synthetic() -> dict:
    recs = []
    for direction in ("fwd", "bwd"):
        for dtype in ("float16", "bfloat16"):
            recs += [record("window", "ours", direction, 2.0, dtype=dtype),
                     record("window", "flex", direction, 3.0, dtype=dtype),
                     record("window", "fa4", direction, 1.0, dtype=dtype),
                     record("softcap", "ours", direction, 4.0, dtype=dtype),
                     record("softcap", "flex", direction, 6.0, dtype=dtype),
                     record("softcap", "fa4", direction, None, dtype=dtype, status="unsupported",
                            reason="no softcap in this build")]
    return dict(schema="variants/1", provenance=PROV, records=recs)


def test_ratios_are_the_peers_time_over_ours():
    r = figures.variant_ratios(synthetic(), "fwd")
    assert set(r) == {("float16", 64), ("bfloat16", 64)}
    assert r[("float16", 64)]["window"] == {"flex": 1.5, "fa4": 0.5}
    assert r[("float16", 64)]["softcap"] == {"flex": 1.5}  # fa4 did not run: no ratio


def test_chart_draws_each_view_and_names_what_did_not_run():
    fig = figures.variants_comparison(synthetic(), "bwd")
    assert {t.type for t in fig.data} == {"scatter"}
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["float16 · D=64", "bfloat16 · D=64"]
    shown = [t for t in fig.data if t.visible]
    flex = next(t for t in shown if t.name == "FlexAttention")
    assert list(flex.y) == ["window", "softcap"] and list(flex.x) == [1.5, 1.5]
    fa4 = next(t for t in shown if t.name == "FlashAttention-4")
    assert list(fa4.x) == [0.5, None]
    assert any("no softcap in this build" in n for n in fig.layout.meta["notes"])
    assert fig.layout.meta["provenance"][0].startswith("NVIDIA H100")


def test_table_lists_every_case_with_ratio_or_status():
    html = tables.variants_table(synthetic(), "fwd")
    assert html.count("<tr><th scope=\"row\">") == 4
    assert "1.50×" in html and "0.50×" in html and "<em>unsupported</em><sup>1</sup>" in html
    assert "no softcap in this build" in html


def test_bad_direction_and_empty_document_raise():
    with pytest.raises(ValueError):
        figures.variants_comparison(synthetic(), "both")
    with pytest.raises(ValueError):
        figures.variants_comparison(dict(synthetic(), records=[]), "fwd")
    with pytest.raises(ValueError):
        tables.variants_table(dict(synthetic(), records=[]), "fwd")


def test_load_variants_reads_the_files_and_refuses_another_schema(tmp_path):
    assert figures.load_variants(tmp_path) == []
    (tmp_path / "variants.json").write_text(json.dumps(synthetic()))
    assert len(figures.load_variants(tmp_path)) == 1
    (tmp_path / "variants.h200.json").write_text(json.dumps(dict(schema="bench/1", records=[])))
    with pytest.raises(ValueError, match="variants/1"):
        figures.load_variants(tmp_path)


def test_our_other_routes_are_named_and_drawn_as_diamonds():
    doc = synthetic()
    doc["records"].append(record("window", "ours-block-mask", "fwd", 2.5))
    fig = figures.variants_comparison(doc, "fwd")
    route = next(t for t in fig.data if t.name == "ours, as a block mask")
    assert route.marker.symbol == "diamond" and list(route.x) == [1.25, None]  # its time over ours


def test_log_axis_ticks_are_labelled_in_full():
    fig = figures.variants_comparison(synthetic(), "fwd")
    assert fig.layout.xaxis.type == "log"
    assert 1.0 in fig.layout.xaxis.tickvals and list(fig.layout.xaxis.ticktext) == [
        f"{v:g}" for v in fig.layout.xaxis.tickvals]
