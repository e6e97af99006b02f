"""Every autotune candidate tile is a correct kernel, forward and backward.

The autotuner may pick any candidate for some shape on some GPU, and KERNELS_AUTOTUNE=0
runs only the first of each table, so this file forces each candidate in turn. On the GPU:
every candidate of every table, fp16, awkward shapes, causal or not. Under the CPU
interpreter: a sample that includes BLOCK_M != BLOCK_N in each kernel, so the causal
diagonal logic (a masked band that starts on a tile boundary) is exercised in CI too.
"""

from __future__ import annotations

import pytest
import torch

import kernels
from helpers import INTERPRET, max_err, rand, tolerance, torch_lowp_attention
from kernels import flash

# (Nq, Nk, D): awkward lengths, Nq != Nk both ways; D pads to the table's head dim.
SHAPES = {64: [(100, 257, 40), (257, 63, 64)], 128: [(100, 257, 80), (63, 130, 128)], 256: [(100, 140, 200)]}
CPU_TILES = {  # (BLOCK_M, BLOCK_N, warps, stages); the interpreter uses the block sizes only
    "fwd": [(64, 32, 4, 2), (32, 16, 4, 2)],
    "dkdv": [(16, 32, 4, 2), (32, 64, 4, 2)],
    "dq": [(64, 16, 4, 2), (32, 16, 4, 2)],
}
DTYPE = torch.float32 if INTERPRET else torch.float16


def tile_cases(kernel_name: str):
    if INTERPRET:
        for tile in CPU_TILES[kernel_name]:
            yield pytest.param(tile, 64, SHAPES[64][0], id=f"{kernel_name}-{'x'.join(map(str, tile))}")
        return
    for head_dim, shapes in SHAPES.items():
        for tile in flash.candidate_tiles(kernel_name, head_dim):
            for shape in shapes:
                yield pytest.param(tile, head_dim, shape, id=f"D{head_dim}-{'x'.join(map(str, tile))}-{shape}")


def _inputs(nq, nk, d, requires_grad=False):
    lead = (2, 2) if INTERPRET else (2, 3)
    return (rand(*lead, nq, d, dtype=DTYPE, requires_grad=requires_grad),
            rand(*lead, nk, d, dtype=DTYPE, requires_grad=requires_grad),
            rand(*lead, nk, d, dtype=DTYPE, requires_grad=requires_grad))


def _tol(ref, theirs):
    torch_err = None if theirs is None else max_err(theirs, ref)
    if DTYPE == torch.float32:
        return 5e-5 * max(1.0, ref.abs().max().item())  # gradients sum twice as many fp32 terms
    return tolerance(DTYPE, ref, torch_err)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("tile,head_dim,shape", list(tile_cases("fwd")))
def test_forward_candidate(tile, head_dim, shape, causal):
    q, k, v = _inputs(*shape)
    scale = shape[2] ** -0.5
    out, _, (_, cfg) = flash.flash_forward(q, k, v, causal, scale, "ieee", tile=tile)
    assert (cfg["BLOCK_M"], cfg["BLOCK_N"]) == tile[:2], "the forced tile was not the one launched"
    ref = kernels.reference_attention(q, k, v, causal=causal)
    theirs = None if INTERPRET else torch_lowp_attention(q, k, v, causal, None)
    assert not out.isnan().any(), "unwritten (NaN) output elements"
    err, tol = max_err(out, ref), _tol(ref, theirs)
    assert err <= tol, f"tile {tile}: max abs error {err:.3e} > {tol:.3e}"


def pointer_backward(do, q, k, v, o, lse, causal, scale, tiles):
    """The pointer backward's three launches, a forced tile for "dkdv" and/or "dq"."""
    delta = flash.flash_preprocess(o, do)
    dk, dv = flash.flash_dkdv(q, k, v, do, lse, delta, causal, scale, "ieee", tile=tiles.get("dkdv"))
    dq = flash.flash_dq(q, k, v, do, lse, delta, causal, scale, "ieee", tile=tiles.get("dq"))
    return dq, dk, dv


def backward_cases():
    for kernel_name in ("dkdv", "dq"):
        for p in tile_cases(kernel_name):
            yield pytest.param(kernel_name, *p.values, id=f"{kernel_name}-{p.id}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("kernel_name,tile,head_dim,shape", list(backward_cases()))
def test_backward_candidate(kernel_name, tile, head_dim, shape, causal):
    """One dK/dV or dQ candidate, with the other backward kernel on its first tile."""
    q, k, v = _inputs(*shape)
    do = rand(*q.shape, dtype=DTYPE)
    scale = shape[2] ** -0.5
    with torch.no_grad():
        o, lse, _ = flash.flash_forward(q, k, v, causal, scale, "ieee")
        dq, dk, dv = pointer_backward(do, q, k, v, o, lse, causal, scale, {kernel_name: tile})
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    kernels.reference_attention(q64, k64, v64, causal=causal).backward(do.double())
    theirs = [None] * 3
    if not INTERPRET:
        ql, kl, vl = (t.detach().clone().requires_grad_() for t in (q, k, v))
        torch_lowp_attention(ql, kl, vl, causal, None).backward(do)
        theirs = [ql.grad, kl.grad, vl.grad]
    for name, g, r, t in zip("qkv", (dq, dk, dv), (q64.grad, k64.grad, v64.grad), theirs):
        assert not g.isnan().any(), f"{kernel_name} tile {tile}: unwritten d{name}"
        err, tol = max_err(g, r), _tol(r, t)
        assert err <= tol, f"{kernel_name} tile {tile}: d{name} error {err:.3e} > {tol:.3e}"


@pytest.mark.parametrize("kernel_name,tile", [("fwd", (32, 64, 4, 2)), ("dq", (16, 32, 4, 2)), ("dkdv", (64, 32, 4, 2))])
def test_tile_rules_are_enforced(kernel_name, tile):
    """A tile that breaks the diagonal rule fails to compile, naming the rule, instead of
    computing a wrong causal result."""
    q, k, v = _inputs(40, 40, 32)
    with pytest.raises(Exception, match=r"BLOCK_M % BLOCK_N|BLOCK_N % BLOCK_M"):
        with torch.no_grad():
            if kernel_name == "fwd":
                flash.flash_forward(q, k, v, True, 0.2, "ieee", tile=tile)
            else:
                o, lse, _ = flash.flash_forward(q, k, v, True, 0.2, "ieee")
                pointer_backward(torch.ones_like(q), q, k, v, o, lse, True, 0.2, {kernel_name: tile})


@pytest.mark.parametrize("kernel_name", ["fwd", "dkdv", "dq"])
def test_candidate_tables_follow_the_rules(kernel_name):
    for head_dim in (64, 128, 256):
        for bm, bn, warps, stages in flash.candidate_tiles(kernel_name, head_dim):
            small, big = (bn, bm) if kernel_name != "dkdv" else (bm, bn)
            assert big % small == 0 and min(bm, bn) >= 16 and warps in (4, 8) and stages >= 1
