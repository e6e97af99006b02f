"""The direct launch of compiled kernels (``kernels.flash._run``) computes exactly what
Triton's own launch path computes, and never reuses a kernel compiled for another
specialisation (alignment, int == 1, divisibility by 16, dtype)."""

from __future__ import annotations

import pytest
import torch

from kernels import flash

from conftest import DEVICE, INTERPRET, rand

gpu_only = pytest.mark.skipif(INTERPRET, reason="direct launch exists only on the GPU")


def _fwd_bwd(q, k, v, causal):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    o = flash.flash_attention(q, k, v, causal=causal)
    o.backward(torch.ones_like(o))
    return o.detach(), q.grad, k.grad, v.grad


@gpu_only
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 4, 100, 64), (1, 2, 257, 40), (3, 1, 64, 128)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_direct_equals_triton_path(monkeypatch, shape, dtype, causal):
    q, k, v = (rand(*shape, dtype=dtype) for _ in range(3))
    monkeypatch.setattr(flash, "DIRECT_LAUNCH", False)
    want = _fwd_bwd(q, k, v, causal)
    monkeypatch.setattr(flash, "DIRECT_LAUNCH", True)
    _fwd_bwd(q, k, v, causal)  # first call per specialisation: Triton's path, then cached
    for _ in range(2):
        got = _fwd_bwd(q, k, v, causal)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    assert flash.DIRECT_LAUNCH, "the direct launch fell back to Triton's path"


@gpu_only
def test_specialisation_separates_launches(monkeypatch):
    """Aligned, then misaligned pointers and a length of 1: each gets its own kernel."""
    monkeypatch.setattr(flash, "DIRECT_LAUNCH", True)
    buf = rand(1 + 2 * 4 * 96 * 64, dtype=torch.float16)
    aligned = buf[:-1].view(2, 4, 96, 64)
    shifted = buf[1:].view(2, 4, 96, 64)  # data_ptr % 16 == 2: Triton must not assume alignment
    assert aligned.data_ptr() % 16 == 0 and shifted.data_ptr() % 16 != 0
    k, v = rand(2, 4, 96, 64, dtype=torch.float16), rand(2, 4, 96, 64, dtype=torch.float16)
    for q in (aligned, shifted, aligned, shifted, aligned[:, :, :1], shifted[:, :, :1]):
        for _ in range(2):
            out = flash.flash_attention(q, k, v)
            ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 8.0, -1) @ v.double()
            assert (out.double() - ref).abs().max().item() < 2e-3
    assert flash._specialization((aligned,), ()) != flash._specialization((shifted,), ())
    assert len({flash._specialization((), (n,)) for n in (1, 16, 17, 2**31)}) == 4


@gpu_only
def test_profiler_hooks_take_tritons_path(monkeypatch):
    """With a launch hook set (as profilers do), every launch goes through Triton."""
    seen = []
    hook = seen.append
    knobs = flash.triton.knobs.runtime
    old = knobs.launch_enter_hook
    if hasattr(old, "add"):  # newer Tritons chain hooks
        old.add(hook)
        undo = lambda: old.remove(hook)  # noqa: E731
    else:
        knobs.launch_enter_hook = hook
        undo = lambda: setattr(knobs, "launch_enter_hook", old)  # noqa: E731
    try:
        q, k, v = (rand(1, 2, 64, 64, dtype=torch.float16, device=DEVICE) for _ in range(3))
        for _ in range(3):
            flash.flash_attention(q, k, v)
        assert len(seen) == 3
    finally:
        undo()


@pytest.mark.parametrize("name", sorted(flash._KERNELS))
def test_constexpr_params_only_for_a_trailing_block(name):
    """The direct launch passes constexprs after the runtime arguments, so it must only be
    used when every constexpr follows them (runs without a GPU: parses the signature only)."""
    kernel = flash._KERNELS[name][0]
    if INTERPRET:  # the interpreter's wrapper has no signature; parse the same function
        kernel = flash.triton.runtime.jit.JITFunction(kernel.fn)
    params = list(kernel.params)
    n_runtime = sum(not p.is_constexpr for p in params)
    got = flash._constexpr_params(kernel, n_runtime)
    assert got is not None and [n for n, _ in got] == [p.name for p in params if p.is_constexpr]
    assert flash._constexpr_params(kernel, n_runtime - 1) is None  # a runtime argument among them
    assert flash._constexpr_params(kernel, n_runtime + 1) is None  # a constexpr passed positionally
