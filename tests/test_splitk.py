"""The split-K forward (``kernels/splitk.py``) against the float64 reference, its backward through
flash's kernels, and the heuristic that decides when the router (``kernels/attention.py``) splits.

Under the CPU interpreter every program costs ~10 ms, so the CPU grid is a sample (fp32, one
fp16 case); on the GPU every combination runs, fp16 and bf16 against 2x PyTorch's own error.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import kernels
from helpers import DTYPES, INTERPRET, max_err, rand, tolerance, torch_lowp_attention
from kernels import flash, splitk
from kernels.attention import FlashAttentionFunction, attention_forward

gpu_only = pytest.mark.gpu
# The interpreter runs kernels in NumPy, which warns about the -inf arithmetic the kernels mean:
# log2(0) = -inf for an empty slice, -inf - -inf in padded rows that are never stored.
pytestmark = [pytest.mark.filterwarnings("ignore:divide by zero encountered in log2:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")]

NQ_ALL = [1, 7, 63, 100]
NK_ALL = [1, 7, 100, 257]
D_ALL = [16, 40, 64, 80]
SPLITS_ALL = [1, 2, 3, 4, 8]
# The CPU sample: each Nq, Nk, D and split count at least once; Nq != Nk both ways; more
# splits than key tiles (Nk = 7 with 8 splits; Nk = 1); a split count that is not a power of 2.
CPU_CASES = [(1, 257, 40, 8), (7, 100, 16, 3), (63, 7, 64, 8), (100, 257, 80, 4), (63, 100, 40, 2),
             (100, 1, 16, 1), (7, 7, 80, 2)]


def forward_cases():
    if INTERPRET:
        for nq, nk, d, splits in CPU_CASES:
            yield pytest.param(torch.float32, nq, nk, d, splits, id=f"float32-Nq{nq}-Nk{nk}-D{d}-S{splits}")
        yield pytest.param(torch.float16, 63, 100, 64, 4, id="float16-Nq63-Nk100-D64-S4")
        return
    for dtype, nq, nk, d, splits in itertools.product(DTYPES, NQ_ALL, NK_ALL, D_ALL, SPLITS_ALL):
        yield pytest.param(dtype, nq, nk, d, splits, id=f"{str(dtype)[6:]}-Nq{nq}-Nk{nk}-D{d}-S{splits}")


def check_split_forward(q, k, v, causal, splits, tile=None, scale=None):
    scale_ = q.shape[-1] ** -0.5 if scale is None else scale
    out, lse, (_, config) = splitk.splitk_forward(q, k, v, causal, scale_, "ieee", splits, tile=tile)
    assert config["SPLITS"] == splits
    ref = kernels.reference_attention(q, k, v, causal=causal, scale=scale)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert not out.isnan().any() and not lse.isnan().any(), "unwritten (NaN) output elements"
    torch_err = None
    if q.dtype != torch.float32 and not INTERPRET:
        torch_err = max_err(torch_lowp_attention(q, k, v, causal, scale_), ref)
    err, tol = max_err(out, ref), tolerance(q.dtype, ref, torch_err)
    assert err <= tol, f"max abs error {err:.3e} > {tol:.3e} (PyTorch's own: {torch_err})"
    return out, lse


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype,nq,nk,d,splits", list(forward_cases()))
def test_split_forward(dtype, nq, nk, d, splits, causal):
    lead = (2,) if INTERPRET else (2, 3)
    q, k, v = rand(*lead, nq, d, dtype=dtype), rand(*lead, nk, d, dtype=dtype), rand(*lead, nk, d, dtype=dtype)
    q4, k4, v4 = (t[None] if INTERPRET else t for t in (q, k, v))
    if splits == 1:  # 1 through flash_forward means "unsplit": run the split kernels directly
        out = splitk.splitk_forward(q4, k4, v4, causal, d**-0.5, "ieee", 1)[0]
        ref = kernels.reference_attention(q4, k4, v4, causal=causal)
        torch_err = None if dtype == torch.float32 or INTERPRET else max_err(
            torch_lowp_attention(q4, k4, v4, causal, None), ref)
        assert max_err(out, ref) <= tolerance(dtype, ref, torch_err)
    else:
        check_split_forward(q4, k4, v4, causal, splits)


def test_split_lse_matches_unsplit_lse():
    """The merged lse is what flash's backward reads: it must equal the unsplit kernel's."""
    q, k, v = rand(1, 2, 40, 32), rand(1, 2, 150, 32), rand(1, 2, 150, 32)
    for causal in (False, True):
        o1, lse1, _ = flash.flash_forward(q, k, v, causal, 0.2, "ieee")
        o4, lse4, _ = splitk.splitk_forward(q, k, v, causal, 0.2, "ieee", 4)
        assert max_err(lse4, lse1) <= 1e-5 * max(1.0, lse1.abs().max().item())
        assert max_err(o4, o1) <= 2e-5


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("hq,hkv", [(4, 2), (4, 1)], ids=["gqa4-2", "mqa4-1"])
def test_split_grouped_query_attention(hq, hkv, causal):
    nq, nk = (37, 90) if INTERPRET else (100, 1000)
    q, k, v = rand(1, hq, nq, 40), rand(1, hkv, nk, 40), rand(1, hkv, nk, 40)
    check_split_forward(q, k, v, causal, 4)


# Forced tiles: query tile shorter than, equal to and longer than the key tile (the causal
# slice bounds must hold for both orders).
CPU_TILES = [(16, 32, 4, 1), (32, 16, 4, 1), (16, 16, 4, 1)]


def tile_cases():
    if INTERPRET:
        yield from (pytest.param(torch.float32, "ieee", t, 64, id="x".join(map(str, t))) for t in CPU_TILES)
        return
    for dtype, precision in ((torch.float32, "ieee"), (torch.float32, "tf32"), (torch.float16, "ieee")):
        for nq in (1, 100):
            for head_dim in (64, 128, 256):
                for tile in splitk.candidate_tiles(nq, head_dim, dtype):
                    yield pytest.param(dtype, precision, tile, head_dim,
                                       id=f"{str(dtype)[6:]}-{precision}-D{head_dim}-{'x'.join(map(str, tile))}")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype,precision,tile,head_dim", list(tile_cases()))
def test_split_tiles(dtype, precision, tile, head_dim, causal):
    nq, nk = (50, 120) if INTERPRET else (100, 700)
    d = head_dim - 8 if head_dim > 64 else 40  # padded head dims too
    q, k, v = rand(1, 2, nq, d, dtype=dtype), rand(1, 2, nk, d, dtype=dtype), rand(1, 2, nk, d, dtype=dtype)
    out, _, (_, config) = splitk.splitk_forward(q, k, v, causal, d**-0.5, precision, 3, tile=tile)
    assert (config["BLOCK_M"], config["BLOCK_N"]) == tile[:2], "the forced tile was not the one launched"
    ref = kernels.reference_attention(q, k, v, causal=causal)
    if precision == "tf32":
        tol = 5e-3 * max(1.0, ref.abs().max().item())  # TF32 keeps 10 mantissa bits
    else:
        torch_err = None if dtype == torch.float32 else max_err(torch_lowp_attention(q, k, v, causal, None), ref)
        tol = tolerance(dtype, ref, torch_err)
    assert not out.isnan().any()
    assert max_err(out, ref) <= tol


@pytest.mark.parametrize("scale", [0.37, -0.5, 0.0])  # the fused exp2 form holds for scale > 0 only
def test_split_custom_scale(scale):
    q, k, v = rand(1, 1, 9, 32), rand(1, 1, 70, 32), rand(1, 1, 70, 32)
    check_split_forward(q, k, v, True, 4, scale=scale)


def test_split_nan_propagates_only_to_rows_it_touches():
    n, d = 40, 32
    q, k, v = rand(1, 1, n, d), rand(1, 1, n, d), rand(1, 1, n, d)
    q[..., 2, 5] = float("nan")  # query row 2 only
    k[..., 20, 0] = float("nan")  # key 20: under causal, rows >= 20 see it
    out, _, _ = splitk.splitk_forward(q, k, v, True, d**-0.5, "ieee", 4, tile=(16, 16, 4, 1))
    bad = out[0, 0].isnan().any(dim=-1)
    expected = torch.zeros(n, dtype=torch.bool, device=out.device)
    expected[2] = True
    expected[20:] = True
    assert torch.equal(bad, expected), bad


def grads(fn, q, k, v, do):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    fn(q, k, v).backward(do)
    return q.grad, k.grad, v.grad


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("hq,hkv,nq,nk,splits", [(2, 2, 63, 100, 4), (4, 2, 7, 257, 8), (2, 2, 100, 7, 3)],
                         ids=["mha-S4", "gqa-S8", "short-keys-S3"])
def test_backward_through_split_forward(hq, hkv, nq, nk, splits, causal):
    d = 40
    q, k, v = rand(1, hq, nq, d), rand(1, hkv, nk, d), rand(1, hkv, nk, d)
    do = rand(1, hq, nq, d)
    scale = d**-0.5
    ours = grads(lambda a, b, c: FlashAttentionFunction.apply(a, b, c, causal, scale, "ieee", "splitk", splits),
                 q, k, v, do)
    ref = grads(lambda a, b, c: kernels.reference_attention(a, b, c, causal=causal),
                q.double(), k.double(), v.double(), do.double())
    for name, g, r in zip("qkv", ours, ref):
        assert not g.isnan().any(), f"d{name}: unwritten (NaN) elements"
        tol = 5e-5 * max(1.0, r.abs().max().item())  # gradients sum twice as many fp32 terms
        assert max_err(g, r) <= tol, f"d{name}: {max_err(g, r):.3e} > {tol:.3e}"


def test_flash_attention_dispatches_to_the_split(monkeypatch):
    """flash_attention (inference and autograd) takes the split path when the heuristic says so."""
    launched = []
    real = splitk.splitk_forward
    monkeypatch.setattr(splitk, "auto_splits", lambda q4, k4: 4)
    monkeypatch.setattr(splitk, "splitk_forward", lambda *a, **kw: launched.append(a[6]) or real(*a, **kw))
    q, k, v = rand(2, 30, 24), rand(2, 80, 24), rand(2, 80, 24)
    out = kernels.flash_attention(q, k, v, causal=True)
    assert launched == [4]
    assert max_err(out, kernels.reference_attention(q, k, v, causal=True)) <= 2e-5
    qg = q.clone().requires_grad_()
    kernels.flash_attention(qg, k, v, causal=True).sum().backward()
    assert launched == [4, 4] and qg.grad is not None and not qg.grad.isnan().any()


def test_named_backends_never_consult_the_heuristic(monkeypatch):
    monkeypatch.setattr(splitk, "auto_splits", lambda q4, k4: pytest.fail("heuristic consulted"))
    q, k, v = rand(1, 1, 40, 32), rand(1, 1, 40, 32), rand(1, 1, 40, 32)
    assert attention_forward(q, k, v, False, 0.2, "ieee", backend="pointer")[2] == "pointer"
    _, _, (_, config) = flash.flash_forward(q, k, v, False, 0.2, "ieee", tile=(32, 32, 4, 2))
    assert "SPLITS" not in config
    assert attention_forward(q, k, v, False, 0.2, "ieee", backend="splitk", splits=2)[2] == "splitk"
    with pytest.raises(ValueError, match="splits applies to backend='splitk' only"):
        attention_forward(q, k, v, False, 0.2, "ieee", backend="pointer", splits=2)


def test_splitk_backend_splits_at_least_in_two(monkeypatch):
    """backend="splitk" where the heuristic would not split still runs the split kernel (2 slices)."""
    launched = []
    real = splitk.splitk_forward
    monkeypatch.setattr(splitk, "splitk_forward", lambda *a, **kw: launched.append(a[6]) or real(*a, **kw))
    q, k, v = rand(1, 2, 20, 32), rand(1, 2, 70, 32), rand(1, 2, 70, 32)
    out = kernels.flash_attention(q, k, v, backend="splitk")
    assert launched == [max(2, splitk.auto_splits(q, k))]
    assert kernels.plan(q, k, v, backend="splitk").forward == "splitk"
    assert max_err(out, kernels.reference_attention(q, k, v)) <= 2e-5


@pytest.mark.parametrize("splits,error", [(0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_split_counts_are_refused(splits, error):
    q = rand(1, 1, 8, 16)
    with pytest.raises(error, match="splits"):
        attention_forward(q, q, q, False, 0.25, "ieee", backend="splitk", splits=splits)


@pytest.mark.skipif(not INTERPRET, reason="the interpreter has no SM count")
def test_no_automatic_split_under_the_interpreter():
    q = rand(1, 1, 4096, 128)
    assert splitk.auto_splits(q, q) == 1


@gpu_only
@pytest.mark.parametrize("shape,dtype,expect_split", [
    ((1, 1, 4096, 128), torch.float32, True),   # the draft's largest size
    ((1, 1, 128, 64), torch.float32, False),    # 4 key tiles: not worth a second launch
    ((4, 16, 4096, 128), torch.float16, False),  # production: the grid fills the GPU
])
def test_heuristic_on_this_gpu(shape, dtype, expect_split):
    q, k, v = rand(*shape, dtype=dtype), rand(*shape, dtype=dtype), rand(*shape, dtype=dtype)
    assert (splitk.auto_splits(q, k) > 1) == expect_split
    out, _, kernel = attention_forward(q, k, v, False, shape[-1] ** -0.5, "ieee")
    assert (kernel == "splitk") == expect_split
    ref = kernels.reference_attention(q, k, v)
    torch_err = None if dtype == torch.float32 else max_err(torch_lowp_attention(q, k, v, False, None), ref)
    assert max_err(out, ref) <= tolerance(dtype, ref, torch_err)


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hkv", [32, 8])
def test_decode_step(dtype, hkv):
    """One query against a long key sequence, the case split-K exists for (GQA too)."""
    q = rand(2, 32, 1, 128, dtype=dtype)
    k, v = rand(2, hkv, 8192, 128, dtype=dtype), rand(2, hkv, 8192, 128, dtype=dtype)
    assert splitk.auto_splits(q, k) > 1
    check_split_forward(q, k, v, False, splitk.auto_splits(q, k))


def test_tune_script_imports_quietly_and_tabulates():
    """scripts/tune_splitk.py runs on the GPU box; here: importing it does nothing, and its table
    picks the fastest split by graph time and skips failed variants."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "tune_splitk.py"
    spec = importlib.util.spec_from_file_location("tune_splitk", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    assert len(tune.cases(quick=False)) == 12 and len(tune.cases(quick=True)) == 2
    ok = dict(case="c", status="ok", splits=None)
    records = [dict(ok, variant="eager", p50_ms=0.03, graph_p50_ms=0.02),
               dict(ok, variant="flash unsplit", p50_ms=0.5, graph_p50_ms=0.4),
               dict(ok, variant="flash_attention (heuristic)", splits=4, p50_ms=0.2, graph_p50_ms=0.1),
               dict(ok, variant="split 4 32x32x4x2", p50_ms=0.2, graph_p50_ms=0.1),
               dict(ok, variant="split 8 32x32x4x2", p50_ms=0.1, graph_p50_ms=0.05),
               dict(case="c", variant="split 16 32x32x4x2", status="wrong", p50_ms=None, graph_p50_ms=None)]
    last = tune.table(records).splitlines()[-1]
    assert "8 32x32x4x2 0.100/0.050" in last and "S=4 0.200/0.100" in last and "0.030/0.020" in last
