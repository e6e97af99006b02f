"""Post 4's ablation rungs: every rung is a correct kernel, and the last one is flash_attention."""

from __future__ import annotations

import pytest
import torch

import kernels
from helpers import INTERPRET, max_err, rand, tolerance, torch_lowp_attention
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


def test_unknown_rung_and_bad_input():
    q = rand(5, 16)
    with pytest.raises(ValueError, match="unknown rung"):
        ablation.ablation_attention(q, q, q, step="warp-specialised")
    with pytest.raises(ValueError, match="ablation_attention"):
        ablation.ablation_attention(q, rand(5, 8), rand(5, 8))


def test_compiler_report_without_a_gpu_kernel():
    assert ablation.compiler_report(None) is None  # what the interpreter hands back


def test_compiler_report_reads_a_compiled_kernel():
    """The report's fields come from the compiled kernel's attributes and its PTX, counted."""
    from types import SimpleNamespace

    ptx = "\n".join(["wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 ..."] * 3
                     + ["ex2.approx.ftz.f32 %f1, %f2;"] * 5 + ["fma.rn.f32 %f3, %f4, %f5, %f6;"] * 7
                     + ["mul.f32 %f7, %f8, %f9;", "mul.rn.f32 %f7, %f8, %f9;", "cp.async.cg.shared.global [a], [b], 16;",
                        "setmaxnreg.inc.sync.aligned.u32 240;"])
    calls = []
    fake = SimpleNamespace(asm={"ptx": ptx}, n_regs=168, n_spills=4,
                           metadata=SimpleNamespace(shared=98304, num_warps=8, num_stages=3),
                           _init_handles=lambda: calls.append(1))
    rep = ablation.compiler_report(fake)
    assert calls == [1]  # registers and spills are only known once the handles are loaded
    assert rep == {"registers": 168, "spills": 4, "shared_bytes": 98304, "num_warps": 8, "num_stages": 3,
                   "ptx_wgmma": 3, "ptx_mma_sync": 0, "ptx_ex2": 5, "ptx_fma_f32": 7, "ptx_mul_f32": 2,
                   "ptx_cp_async": 1, "ptx_setmaxnreg": 1, "ptx_lines": ptx.count("\n")}


def test_ablation_launch_returns_its_config():
    q = rand(1, 2, 40, 32)
    out, compiled, config = ablation.ablation_launch(q, q, q, step="naive")
    assert (config["BLOCK_M"], config["BLOCK_N"]) == ablation.rung("naive").tile[:2]
    assert (compiled is None) == INTERPRET
    assert max_err(out, kernels.reference_attention(q, q, q)) <= tolerance(torch.float32, out.double(), None)
