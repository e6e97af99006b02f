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
