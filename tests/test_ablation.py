"""Post 4's ablation rungs: every rung is a correct kernel, and the last one is flash_attention."""

from __future__ import annotations

import pytest
import torch

import kernels
from conftest import INTERPRET, max_err, rand, tolerance, torch_lowp_attention
from kernels import ablation

SHAPES = [(7, 7, 16), (63, 100, 40)] if INTERPRET else [(7, 7, 16), (63, 100, 40), (257, 257, 64), (300, 1000, 128)]
DTYPES = [torch.float32] if INTERPRET else [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nq,nk,d", SHAPES)
@pytest.mark.parametrize("step", ablation.RUNG_NAMES)
def test_every_rung_is_correct(step, nq, nk, d, causal, dtype):
    q, k, v = rand(2, nq, d, dtype=dtype), rand(2, nk, d, dtype=dtype), rand(2, nk, d, dtype=dtype)
    out = ablation.ablation_attention(q, k, v, causal=causal, step=step)
    ref = kernels.reference_attention(q, k, v, causal=causal)
    torch_err = None if dtype == torch.float32 or INTERPRET else max_err(torch_lowp_attention(q, k, v, causal, None), ref)
    assert max_err(out, ref) <= tolerance(dtype, ref, torch_err)


@pytest.mark.parametrize("step", ["naive", "exp2-fma"])
def test_rungs_handle_gqa_and_nonpositive_scale(step):
    q, k, v = rand(1, 4, 33, 32), rand(1, 2, 40, 32), rand(1, 2, 40, 32)
    for scale in (-0.3, 0.0, 0.2):
        out = ablation.ablation_attention(q, k, v, causal=True, scale=scale, step=step)
        ref = kernels.reference_attention(q, k, v, causal=True, scale=scale)
        assert max_err(out, ref) <= tolerance(torch.float32, ref, None)


def test_last_rung_is_flash_attention():
    q, k, v = rand(2, 3, 130, 64), rand(2, 3, 130, 64), rand(2, 3, 130, 64)
    for causal in (False, True):
        got = ablation.ablation_attention(q, k, v, causal=causal, step="autotuned")
        assert torch.equal(got, kernels.flash_attention(q, k, v, causal=causal))


def test_rungs_are_documented():
    assert ablation.RUNGS[-1].tile is None  # the last rung is the production launcher
    for r in ablation.RUNGS:
        assert r.why and r.label and r.predict_full > 0 and r.predict_causal > 0
    assert len(set(ablation.RUNG_NAMES)) == len(ablation.RUNGS)


def test_unknown_rung_and_bad_input():
    q = rand(5, 16)
    with pytest.raises(ValueError, match="unknown rung"):
        ablation.ablation_attention(q, q, q, step="warp-specialised")
    with pytest.raises(ValueError, match="ablation_attention"):
        ablation.ablation_attention(q, rand(5, 8), rand(5, 8))


def test_compiler_report_without_a_gpu_kernel():
    assert ablation.compiler_report(None) is None
