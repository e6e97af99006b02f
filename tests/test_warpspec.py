"""kernels.experiments.warpspec: the tensor-descriptor forward kernel (post 4's warp-specialisation
experiment) against the float64 reference, on Hopper; clear errors everywhere else."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels.experiments.warpspec import warpspec_attention

from helpers import INTERPRET, max_err, rand, tolerance, torch_lowp_attention

HOPPER = not INTERPRET and torch.cuda.get_device_capability()[0] >= 9
needs_hopper = pytest.mark.skipif(not HOPPER, reason="tensor descriptors need a Hopper GPU")


@needs_hopper
@pytest.mark.parametrize("ws", [False, True], ids=["plain", "warp-specialized"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("hq,hkv,nq,nk,d", [(2, 2, 100, 100, 64), (4, 2, 257, 63, 40), (2, 1, 7, 300, 128),
                                            (2, 2, 1, 1, 16)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_matches_reference(dtype, hq, hkv, nq, nk, d, causal, ws):
    q = rand(2, hq, nq, d, dtype=dtype)
    k, v = rand(2, hkv, nk, d, dtype=dtype), rand(2, hkv, nk, d, dtype=dtype)
    out = warpspec_attention(q, k, v, causal=causal, tile=(128, 64, 8, 3), warp_specialize=ws)
    ref = kernels.reference_attention(q.double(), k.double(), v.double(), causal=causal)
    torch_err = max_err(torch_lowp_attention(q, k, v, causal, None), ref)
    assert max_err(out, ref) <= tolerance(dtype, ref, torch_err)


def test_refuses_what_it_cannot_run():
    q = rand(1, 2, 16, 64, dtype=torch.float16 if not INTERPRET else torch.float32)
    if not HOPPER:
        with pytest.raises(RuntimeError, match="warpspec_attention: tensor descriptors need"):
            warpspec_attention(q, q, q)
        return
    with pytest.raises(TypeError, match="fp16 or bf16"):
        warpspec_attention(q.float(), q.float(), q.float())
    odd = rand(1, 2, 16, 12, dtype=torch.float16)  # rows of 24 bytes: not a multiple of 16
    with pytest.raises(ValueError, match="multiples of 16 bytes"):
        warpspec_attention(odd, odd, odd)
    with pytest.raises(ValueError, match="scale must be > 0"):
        warpspec_attention(q, q, q, scale=-1.0)
    with pytest.raises(ValueError, match="BLOCK_M % BLOCK_N"):
        warpspec_attention(q, q, q, tile=(64, 128, 4, 3))


def test_not_in_the_kernel_table():
    # An experiment, not a production kernel: the shared test matrix does not iterate it.
    assert warpspec_attention not in kernels.KERNELS.values()
