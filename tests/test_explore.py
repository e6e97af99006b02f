"""The explorable figures compute what the kernels compute: online softmax, tile schedule,
addressing, tile budget and the ablation's source diffs (CPU; no browser)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("plotly", reason="the site's packages need plotly (the GPU box has none)")

from blog.explore import ablation_steps, addressing, online_softmax, schedule, tile_budget
import kernels
from kernels import flash, launch


# ----------------------------------------------------------------------------- online softmax

@pytest.mark.parametrize("causal", [False, True])
def test_online_softmax_last_step_is_softmax_times_v(causal):
    q, k, v = online_softmax.example()
    steps = online_softmax.run(q, k, v, causal=causal)
    out, lse = online_softmax.reference(q, k, v, causal=causal)
    last = steps[-1]
    assert np.abs(last.acc / last.l[:, None] - out).max() <= 1e-12
    assert np.abs(last.lse - lse).max() <= 1e-12
    # Before the last tile the partial result is not the answer yet: the figure shows a real change.
    assert np.abs(steps[-2].acc / steps[-2].l[:, None] - out).max() > 1e-3


def test_online_softmax_masks_only_the_diagonal_tile_when_causal():
    q, k, v = online_softmax.example()
    full = online_softmax.run(q, k, v, causal=False)
    causal = online_softmax.run(q, k, v, causal=True)
    assert [s.masked for s in full] == [False] * 4
    assert [s.masked for s in causal] == [False, False, False, True]
    assert np.isneginf(causal[-1].s).sum() == online_softmax.BLOCK_M * (online_softmax.BLOCK_M - 1) // 2
    assert any((s.alpha < 1).any() for s in full[1:]), "the example never rescales: alpha stays 1"


@pytest.mark.parametrize("causal", [False, True])
def test_online_softmax_matches_the_triton_kernel(causal):
    out_err, lse_err = online_softmax.kernel_check(causal)
    assert out_err < 1e-5 and lse_err < 1e-5


def test_online_softmax_reads_the_kernel_lines():
    lines = online_softmax.kernel_lines()
    assert lines["alpha"] == "alpha = tl.exp2(m_i - m_new)"
    assert lines["lse"] == "lse = m_i + tl.log2(l_i)"


def test_online_softmax_rejects_bad_input():
    q, k, v = online_softmax.example()
    with pytest.raises(TypeError):
        online_softmax.run(q.tolist(), k, v, causal=False)
    with pytest.raises(ValueError):
        online_softmax.run(q, k[:, :2], v, causal=False)
    with pytest.raises(ValueError):
        online_softmax.run(q, k, v, causal=False, pid_m=99)


# ----------------------------------------------------------------------------- schedule

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [100, 256, 1000])
@pytest.mark.parametrize("tile", flash.FWD_TILES[128])
def test_schedule_shares_add_up_to_the_flop_count(tile, n, causal):
    bm, bn = tile[:2]
    g = schedule.forward_grid(n, bm, bn, causal)
    assert g.flops(128) == schedule.exact_flops(n, 128, causal)
    pairs = g.computed_pairs
    assert sum(pairs.values()) == g.kind.size * bm * bn
    # Every useful entry lies in a computed tile; skipped tiles hold none.
    assert g.useful[g.kind == schedule.SKIPPED].sum() == 0
    assert pairs[schedule.MASKED] + pairs[schedule.UNMASKED] >= g.useful.sum()


def test_schedule_matches_the_kernel_on_ragged_and_causal_sizes():
    # The kernel's output is right only if its loop bounds cover every key each row may see:
    # the same bounds, on the interpreter's tile, cover exactly the causal triangle.
    bm, bn = launch.INTERPRETER_TILE
    for n, causal in ((70, False), (70, True), (64, True)):
        g = schedule.forward_grid(n, bm, bn, causal)
        assert g.useful.sum() == (n * (n + 1) // 2 if causal else n * n)
        q, k, v = (torch.randn(1, 1, n, 16, dtype=torch.float32) for _ in range(3))
        out = kernels.flash_attention(q, k, v, causal=causal, backend="pointer")
        ref = torch.softmax((q.double() @ k.double().transpose(-1, -2)) / 4 + (
            torch.full((n, n), -math.inf).triu(1) if causal else 0), -1) @ v.double()
        assert (out.double() - ref).abs().max() < 1e-5


def test_schedule_causal_skips_tiles_past_the_diagonal():
    g = schedule.forward_grid(512, 128, 64, True)
    assert (g.kind == schedule.SKIPPED).sum() == 4 * 8 - 4 * 2 - (0 + 2 + 4 + 6)
    assert (g.kind[np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1] * 2] == schedule.SKIPPED).all()


def test_waves_balance_work_and_show_the_tail():
    w = schedule.waves(1024, 128, 64, False, heads=64, sms=132, slots=1)
    assert w.programs == 8 * 64
    assert w.sm_busy.sum() == pytest.approx(w.programs * 16)
    assert w.makespan == 4 * 16  # 512 programs over 132 SMs: 3.9 waves, so four
    assert w.ideal == pytest.approx(512 * 16 / 132)
    causal = schedule.waves(1024, 128, 64, True, heads=64, sms=132, slots=1)
    assert causal.sm_busy.sum() == pytest.approx(64 * sum(2 * (i + 1) for i in range(8)))


def test_backward_loop_orders_cover_the_triangle_once():
    n, bm, bn = 512, 32, 128
    seen = np.zeros((n, n), int)
    for pid_n in range(n // bn):
        for start_m, _ in schedule.dkdv_query_tiles(pid_n, n, bm, bn, True):
            seen[start_m:start_m + bm, pid_n * bn:(pid_n + 1) * bn] += 1
    assert (seen <= 1).all()
    assert (seen[np.tril_indices(n)] == 1).all()  # every (query, key) a causal row sees


def test_schedule_rejects_bad_sizes():
    with pytest.raises(ValueError):
        schedule.forward_grid(0, 128, 64, False)
    with pytest.raises(TypeError):
        schedule.forward_grid(512, 128.0, 64, False)
    with pytest.raises(ValueError):
        schedule.forward_key_tiles(0, 512, 64, 128, True)


# ----------------------------------------------------------------------------- addressing

@pytest.mark.parametrize("n,d", [(6, 5), (1, 1), (12, 8), (7, 3)])
def test_addressing_offsets_are_the_kernels_formula(n, d):
    offs, mask = addressing.offsets(n, d)
    k = torch.arange(n * d).reshape(n, d)  # each element holds its own flat index
    stride_kn, stride_kd = k.stride()
    assert offs.shape == (addressing.next_pow2(n), addressing.next_pow2(d))
    for i in range(offs.shape[0]):
        for j in range(offs.shape[1]):
            assert offs[i, j] == i * stride_kn + j * stride_kd
            assert mask[i, j] == (i < n and j < d)
            if mask[i, j]:
                assert k.flatten()[offs[i, j]] == k[i, j]


def test_addressing_rejects_bad_sizes():
    with pytest.raises(ValueError):
        addressing.offsets(0, 3)
    with pytest.raises(TypeError):
        addressing.offsets(3, "4")


# ----------------------------------------------------------------------------- tile budget

def test_tile_budget_arithmetic():
    b = tile_budget.budget(128, 64, 8, 3, 128)  # fp16, 256 threads
    assert (b.regs_acc, b.regs_sp, b.regs_q) == (64, 32, 32)
    assert b.smem_q == 32 * 1024 and b.smem_k == b.smem_v == 48 * 1024
    assert b.shared_bytes == 128 * 1024
    assert (b.programs_per_sm, b.limiter) == (1, "shared memory")
    small = tile_budget.budget(32, 32, 4, 2, 64)
    assert small.registers == 16 + 8 + 8
    assert tile_budget.occupancy(small.registers, small.shared_bytes, 4) == (10, "shared memory")
    assert tile_budget.occupancy(255, 0, 8) == (1, "registers")
    assert tile_budget.occupancy(10, 228 * 1024, 4) == (0, "shared memory")


def test_tile_budget_fp32_d256_exceeds_shared_memory():
    # The kernel's comment: configs that do not fit (fp32, D = 256) are dropped by the autotuner.
    big = tile_budget.budget(64, 64, 8, 2, 256, elem_bytes=4)
    assert big.shared_bytes > tile_budget.SHARED_PER_PROGRAM and big.programs_per_sm == 0


def test_tile_budget_disagreements_are_computed_from_the_data():
    doc = {"records": [{"step": 1, "status": "ok", "dtype": "float16", "causal": False, "provider": "pipelined",
                        "shape": {"D": 128}, "config": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
                        "compiler": {"registers": 100, "spills": 8, "shared_bytes": 112 * 1024}}]}
    notes = tile_budget.disagreements(doc, {128: [(64, 64, 4, 3)]})
    assert len(notes) == 2  # registers under the model (128), and spills the model rules out
    assert "100 registers" in notes[0] and "8 spilled bytes" in notes[1]


def test_tile_budget_rejects_bad_input():
    with pytest.raises(ValueError):
        tile_budget.budget(128, 64, 8, 3, 128, elem_bytes=3)
    with pytest.raises(TypeError):
        tile_budget.budget(128, 64, 8, "3", 128)
    with pytest.raises(TypeError):
        tile_budget.measured([])


# ----------------------------------------------------------------------------- ablation

def test_ablation_diffs_come_from_the_kernel_source():
    from kernels import ablation

    diffs = ablation_steps.step_diffs()
    assert len(diffs) == len(ablation.RUNGS) - 1
    by_name = dict(zip(ablation.RUNG_NAMES[1:], diffs))
    added = lambda name: [c.strip() for m, c in by_name[name] if m == "+"]  # noqa: E731
    removed = lambda name: [c.strip() for m, c in by_name[name] if m == "-"]  # noqa: E731
    assert "hi = tl.minimum(N_K, (pid_m + 1) * BLOCK_M)" in added("skip-future")
    assert "full_n = (N_K // BLOCK_N) * BLOCK_N" in added("split-loops")
    assert "full_n = N_K * 0" in removed("split-loops")
    assert "alpha = tl.exp2(m_i - m_new)" in added("exp2") and "alpha = tl.exp(m_i - m_new)" in removed("exp2")
    assert "p = tl.exp2(qk * qk_scale - m_new[:, None])" in added("exp2-fma")
    assert all(c.startswith("[launch]") for m, c in by_name["pipelined"])


def test_resolve_keeps_undecided_branches():
    src = "if A:\n    x = 1\nelif B:\n    x = 2\nelse:\n    x = 3\nif C and D:\n    y = 1\n"
    assert ablation_steps.resolve(src, {"A": False}) == "if B:\n    x = 2\nelse:\n    x = 3\nif C and D:\n    y = 1"
    assert ablation_steps.resolve(src, {"A": True, "C": False}) == "x = 1"
    with pytest.raises(TypeError):
        ablation_steps.resolve(src, None)


# ----------------------------------------------------------------------------- readable in both schemes

def _luminance(colour: str) -> float:
    colour = colour.lstrip("#")
    channels = [int(colour[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def tile_map_figure():
    from blog.explore import tile_map

    return tile_map.figure()


@pytest.fixture(scope="module")
def explorables():
    """Every explorable the posts show, built as the posts build them (CPU, from docs/data)."""
    from blog import query
    from blog.explore import provenance

    abl = query.load("ablation")[0]
    sms = query.load("production")[0]["provenance"]["sm_count"]
    return {"addressing": addressing.figure(), "online softmax": online_softmax.figure(),
            "schedule": schedule.figure(sms), "backward": schedule.backward_figure(), "gqa": schedule.gqa_figure(),
            "tile budget": tile_budget.figure(abl, provenance(abl, "Compiler numbers from")),
            "ablation": ablation_steps.figure(abl, provenance(abl)), "tile map": tile_map_figure()}


def test_explorables_fit_one_phone_screen(explorables):
    from blog.explore import PHONE_SCREEN

    for name, fig in explorables.items():
        assert fig.layout.meta["explorable"] is True, name
        assert fig.layout.height <= PHONE_SCREEN, f"{name}: {fig.layout.height} px, a phone shows {PHONE_SCREEN}"


def test_finish_refuses_a_figure_taller_than_a_phone():
    import plotly.graph_objects as go

    from blog.explore import PHONE_SCREEN, finish

    with pytest.raises(ValueError, match="phone"):
        finish(go.Figure(), "A title", PHONE_SCREEN + 1)


def test_explorable_controls_read_in_both_schemes(explorables):
    from blog import theme

    dark = theme.dark_recolor()
    for name, fig in explorables.items():
        for menu in fig.layout.updatemenus:
            # Opaque (an opened dropdown hides the plot), and the same face in both schemes, so
            # its text reads on it, on plotly.js's fixed active/hover face too.
            assert menu.bgcolor == theme.BUTTON_BG and menu.bgcolor not in dark, name
            assert menu.font.color == theme.BUTTON_TEXT, name
            for face in (theme.BUTTON_BG, theme.BUTTON_ACTIVE):
                assert _contrast(menu.font.color, face) >= 4.5, (name, face)
            assert _contrast(theme.BUTTON_BG, theme.BUTTON_ACTIVE) >= 3, "the picked button must stand out"
        for slider in fig.layout.sliders:
            assert slider.bgcolor == theme.BUTTON_BG and slider.borderwidth >= 1, name
            for scheme in ("light", "dark"):
                page = theme.BACKGROUNDS[scheme]
                edge = slider.bordercolor if scheme == "light" else dark[slider.bordercolor]
                ticks = slider.tickcolor if scheme == "light" else dark[slider.tickcolor]
                assert _contrast(edge, page) >= 3, f"{name}: handle outline {edge} on {page}"
                assert _contrast(ticks, page) >= 3, f"{name}: ticks {ticks} on {page}"


@pytest.mark.parametrize("name", sorted(__import__("blog.theme", fromlist=["x"]).CELL_SCALES))
def test_cell_scales_leave_black_labels_readable(name):
    from blog import theme

    stops = theme.cell_scale(name)
    dark = theme.dark_recolor()
    for (_, a), (_, b) in zip(stops, stops[1:]):
        assert a not in dark and b not in dark, "charts.js would swap a cell colour for its dark twin"
        for t in np.linspace(0, 1, 11):  # Plotly interpolates between stops in RGB
            mix = "#" + "".join(f"{round(int(a[i:i + 2], 16) * (1 - t) + int(b[i:i + 2], 16) * t):02x}"
                                for i in (1, 3, 5))
            assert _contrast(theme.CELL_TEXT, mix) >= 4.5, (name, mix)


def test_labelled_heatmaps_use_black_text_on_opaque_cells(explorables):
    from blog import theme

    for name, fig in explorables.items():
        for trace in fig.data:
            if trace.type != "heatmap" or not trace.texttemplate:
                continue
            assert trace.textfont.color == theme.CELL_TEXT, f"{name}: {trace.hovertemplate}"
            stops = [(float(p), c) for p, c in trace.colorscale]
            labels = trace.text if trace.text is not None else trace.z
            for zrow, trow in zip(trace.z, labels):
                for z, label in zip(zrow, trow):
                    if z is None or label in (None, ""):
                        continue
                    if trace.zmin is None or trace.zmax is None:
                        under = stops  # a scale centred by zmid: any stop may lie under a label
                    else:
                        t = (z - trace.zmin) / (trace.zmax - trace.zmin)
                        under = [s for s in stops if abs(s[0] - t) < 1e-9] or \
                            [max((s for s in stops if s[0] <= t), default=stops[0]),
                             min((s for s in stops if s[0] >= t), default=stops[-1])]
                    # A labelled cell is opaque: a see-through one takes the page's colour, and
                    # Plotly's automatic label colour went dark on the dark page.
                    assert all(c.startswith("#") for _, c in under), (name, trace.hovertemplate, z, label)


def test_online_softmax_marks_only_masked_scores(explorables):
    fig = explorables["online softmax"]
    per_variant = 7
    for causal in (False, True):
        s, mask = fig.data[per_variant * causal], fig.data[per_variant * causal + 1]
        marks = {(r, c) for r, row in enumerate(mask.text) for c, t in enumerate(row) if t == "−∞"}
        nulls = {(r, c) for r, row in enumerate(s.z) for c, v in enumerate(row) if v is None}
        assert marks == nulls, causal
        # The figure opens on the last, diagonal tile: under the mask, keys past each query.
        rows = [int(y[1:]) for y in s.y]
        cols = [int(x[1:]) for x in s.x]
        expected = {(r, c) for r, q in enumerate(rows) for c, k in enumerate(cols) if causal and k > q}
        assert marks == expected
        assert mask.texttemplate == "%{text}"  # a fixed texttemplate would print on every cell
    assert online_softmax.mask_text(np.array([[0.5, -np.inf]])) == [["", "−∞"]]


def test_addressing_hover_names_each_cell_once(explorables):
    from blog import figures

    for fig in (explorables["addressing"], figures.address_grid()):
        for trace in fig.data:
            assert "n=%{y}" not in trace.hovertemplate and "d=%{x}" not in trace.hovertemplate


def test_log_ticks_label_values_in_full():
    from blog import figures

    few = figures.log_ticks([0.43, 17.0])
    assert few["ticktext"][:5] == ["0.1", "0.2", "0.5", "1", "2"]  # 1-2-5 over less than 2.5 decades
    assert all(float(t) == v for t, v in zip(few["ticktext"], few["tickvals"]))
    many = figures.log_ticks([1.2e5, 3e10], figures.byte_label)
    assert many["ticktext"] == ["100 kB", "1 MB", "10 MB", "100 MB", "1 GB", "10 GB", "100 GB"]
    assert figures.byte_label(512) == "512 B" and figures.byte_label(2.5e9) == "2.5 GB"
    with pytest.raises(ValueError):
        figures.log_ticks([0, None])


def test_tile_axes_tick_whole_tiles():
    from blog import figures

    fig = figures.causal_tiles(n=512, block_m=128, block_n=64)
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        assert axis.tickmode == "linear" and axis.dtick == 1 and axis.tick0 == 0


# ----------------------------------------------------------------------------- tile map (post 6)

from blog.explore import tile_map  # noqa: E402
from kernels import variants  # noqa: E402
from kernels.reference import window_keep  # noqa: E402


def _tile_pairs(m, keep):
    """Per tile of ``m``: (kept pairs, pairs) of the dense (N, N) bool ``keep``."""
    out = []
    for i in range(len(m.kinds)):
        row = []
        for j in range(len(m.kinds[0])):
            t = keep[i * m.block_m:(i + 1) * m.block_m, j * m.block_n:(j + 1) * m.block_n]
            row.append((int(t.sum()), t.numel()))
        out.append(row)
    return out


def _check_kinds_against(m, keep):
    for kinds, pairs in zip(m.kinds, _tile_pairs(m, keep)):
        for kind, (kept, n) in zip(kinds, pairs):
            if kind == tile_map.SKIPPED:
                assert kept == 0, "a skipped tile holds a pair the mask keeps"
            elif kind == tile_map.FULL:
                assert kept == n, "a full tile holds a masked pair"


@pytest.mark.parametrize("left", [-1, 0, 5, 64, 200, 2000])
@pytest.mark.parametrize("n", [256, 300])
def test_tile_map_window_is_the_kernels_schedule(left, n):
    m = tile_map.window_map(left, n)
    raw = variants.window_tile_kinds(n, n, (left, 0), block_m=m.block_m, block_n=m.block_n)
    names = {variants.SKIPPED: tile_map.SKIPPED, variants.MASKED: tile_map.PARTIAL, variants.UNMASKED: tile_map.FULL}
    assert [list(r) for r in m.kinds] == [[names[k] for k in r] for r in raw]
    _check_kinds_against(m, window_keep(n, n, (left, 0)) if left >= 0 else window_keep(n, n, causal=True))


def test_tile_map_causal_is_post_3s_schedule():
    m = tile_map.window_map(-1, 512, variant="causal")
    for i, row in enumerate(m.kinds):
        visited = {start // m.block_n: masked for start, masked in
                   schedule.forward_key_tiles(i, 512, m.block_m, m.block_n, True)}
        want = [tile_map.SKIPPED if j not in visited else tile_map.PARTIAL if visited[j] else tile_map.FULL
                for j in range(len(row))]
        assert list(row) == want


def test_tile_map_block_masks_match_the_dense_mask():
    n = 256
    lengths = tile_map.document_lengths(70, n)
    m = tile_map.documents_map(lengths, n)
    ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    keep = (ids[:, None] == ids[None, :]) & torch.ones(n, n, dtype=torch.bool).tril()
    _check_kinds_against(m, keep)
    partial = [(i, j) for i, r in enumerate(m.kinds) for j, k in enumerate(r) if k == tile_map.PARTIAL]
    for i, j in partial:  # partial means some kept and some not
        kept, total = _tile_pairs(m, keep)[i][j]
        assert 0 < kept < total
    p = tile_map.prefix_map(100, n)
    keep = torch.ones(n, n, dtype=torch.bool).tril() | (torch.arange(n)[None, :] < 100)
    _check_kinds_against(p, keep)
    assert p.tile_counts()["full"] > 0 and p.tile_counts()["skipped"] > 0


def test_tile_map_shares_count_pairs_of_ragged_tiles():
    m = tile_map.window_map(50, 300)
    s, p = m.shares(), m.pairs()
    assert abs(sum(s.values()) - 1) < 1e-12 and sum(p.values()) == 300 * 300
    visited = sum(min(m.block_m, 300 - i * m.block_m) * min(m.block_n, 300 - j * m.block_n)
                  for i, r in enumerate(m.kinds) for j, k in enumerate(r) if k != tile_map.SKIPPED)
    assert s["skipped"] == pytest.approx(1 - visited / 300 ** 2)
    wide = tile_map.window_map(5000, 300)  # wider than the sequence: causal
    assert wide.kinds == tile_map.window_map(-1, 300).kinds


def test_tile_map_document_lengths_fill_the_row():
    for mean in (1, 64, 300, 5000):
        lengths = tile_map.document_lengths(mean, 1024)
        assert sum(lengths) == 1024 and min(lengths) >= 1
    assert len(set(tile_map.document_lengths(128, 1024))) > 1  # mixed lengths


def test_tile_map_rejects_bad_input():
    with pytest.raises(ValueError):
        tile_map.tile_map("dense", 64)
    with pytest.raises(ValueError):
        tile_map.window_map(-2)
    with pytest.raises(TypeError):
        tile_map.document_lengths(1.5)
    with pytest.raises(ValueError):
        tile_map.documents_map([10, 20], 64)


def test_tile_map_figure_steps_are_the_schedule():
    fig = tile_map.figure()
    per = len(tile_map.VARIANTS)
    assert len(fig.data) == 2 * per and {t.type for t in fig.data} == {"heatmap", "scatter"}
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == list(tile_map.VARIANTS)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == [str(x) for x in tile_map.LENGTHS]
    step = steps[-1]
    attrs, indices = step.args
    for v, name in enumerate(tile_map.VARIANTS):
        want = tile_map.tile_map(name, tile_map.LENGTHS[-1])
        assert attrs["z"][indices.index(v)] == [list(r) for r in want.kinds], name
        assert attrs["text"][indices.index(per + v)] == [tile_map.describe(want)], name
    # Different lengths give different maps (the slider changes what is drawn).
    first = steps[0].args[0]["z"][indices.index(1)]
    assert first != attrs["z"][indices.index(1)]
