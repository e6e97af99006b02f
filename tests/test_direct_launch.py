"""The direct launch of compiled kernels (``kernels.launch.DirectLauncher``) computes exactly
what Triton's own launch path computes, never reuses a kernel compiled for another
specialisation (alignment, int == 1, divisibility by 16, dtype), and falls back to Triton's
path, with one warning, if the compiled kernel's launch entry ever refuses its arguments.
The cache logic runs on the CPU too, against a fake compiled kernel."""

from __future__ import annotations

import warnings

import pytest
import torch
import triton

import kernels
from kernels import flash, launch

from helpers import DEVICE, INTERPRET, rand


def _fwd_bwd(q, k, v, causal):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    o = kernels.flash_attention(q, k, v, causal=causal)
    o.backward(torch.ones_like(o))
    return o.detach(), q.grad, k.grad, v.grad


@pytest.mark.gpu  # direct launch exists only on the GPU
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 4, 100, 64), (1, 2, 257, 40), (3, 1, 64, 128)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_direct_equals_triton_path(monkeypatch, shape, dtype, causal):
    q, k, v = (rand(*shape, dtype=dtype) for _ in range(3))
    monkeypatch.setattr(launch.DIRECT, "enabled", False)
    want = _fwd_bwd(q, k, v, causal)
    monkeypatch.setattr(launch.DIRECT, "enabled", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback warning fails the test
        _fwd_bwd(q, k, v, causal)  # first call per specialisation: Triton's path, then cached
        for _ in range(2):
            got = _fwd_bwd(q, k, v, causal)
            for g, w in zip(got, want):
                assert torch.equal(g, w)
    assert launch.DIRECT.enabled and len(launch.DIRECT) > 0, "the direct launch fell back to Triton's path"


@pytest.mark.gpu  # direct launch exists only on the GPU
def test_specialisation_separates_launches(monkeypatch):
    """Aligned, then misaligned pointers and a length of 1: each gets its own kernel."""
    monkeypatch.setattr(launch.DIRECT, "enabled", True)
    buf = rand(1 + 2 * 4 * 96 * 64, dtype=torch.float16)
    aligned = buf[:-1].view(2, 4, 96, 64)
    shifted = buf[1:].view(2, 4, 96, 64)  # data_ptr % 16 == 2: Triton must not assume alignment
    assert aligned.data_ptr() % 16 == 0 and shifted.data_ptr() % 16 != 0
    k, v = rand(2, 4, 96, 64, dtype=torch.float16), rand(2, 4, 96, 64, dtype=torch.float16)
    for q in (aligned, shifted, aligned, shifted, aligned[:, :, :1], shifted[:, :, :1]):
        for _ in range(2):
            out = kernels.flash_attention(q, k, v)
            ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 8.0, -1) @ v.double()
            assert (out.double() - ref).abs().max().item() < 2e-3
    assert launch.specialization((aligned,), ()) != launch.specialization((shifted,), ())
    assert len({launch.specialization((), (n,)) for n in (1, 16, 17, 2**31)}) == 4


@pytest.mark.gpu  # direct launch exists only on the GPU
def test_profiler_hooks_take_tritons_path(monkeypatch):
    """With a launch hook set (as profilers do), every launch goes through Triton."""
    seen = []
    hook = seen.append
    knobs = triton.knobs.runtime
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
            kernels.flash_attention(q, k, v)
        assert len(seen) == 3
    finally:
        undo()


@pytest.mark.parametrize("name", sorted(flash.KERNELS))
def test_constexpr_params_only_for_a_trailing_block(name):
    """The direct launch passes constexprs after the runtime arguments, so it must only be
    used when every constexpr follows them (runs without a GPU: parses the signature only)."""
    kernel = flash.KERNELS[name].kernel
    if INTERPRET:  # the interpreter's wrapper has no signature; parse the same function
        kernel = triton.runtime.jit.JITFunction(kernel.fn)
    params = list(kernel.params)
    n_runtime = sum(not p.is_constexpr for p in params)
    got = launch.constexpr_params(kernel, n_runtime)
    assert got is not None and [n for n, _ in got] == [p.name for p in params if p.is_constexpr]
    assert launch.constexpr_params(kernel, n_runtime - 1) is None  # a runtime argument among them
    assert launch.constexpr_params(kernel, n_runtime + 1) is None  # a constexpr passed positionally


# ----------------------------------------------------------------------------- CPU: the cache logic


class FakeParam:
    def __init__(self, name, is_constexpr, default=None):
        self.name, self.is_constexpr, self.default = name, is_constexpr, default


class FakeCompiled:
    """Stands in for Triton's CompiledKernel: ``compiled[grid](*args)`` records the launch."""

    def __init__(self, log, fail=False):
        self.log, self.fail = log, fail

    def __getitem__(self, grid):
        self.log.append(("entry", grid))

        def runner(*args):
            if self.fail:
                raise TypeError("launcher() takes 12 positional arguments but 14 were given")
            self.log.append(("direct", grid, args))
        return runner


class FakeKernel:
    """Stands in for a @triton.jit function with two runtime parameters and two constexprs."""

    params = [FakeParam("x_ptr", False), FakeParam("n", False), FakeParam("BLOCK", True),
              FakeParam("FLAG", True, default=False)]

    def __init__(self, fail=False):
        self.log, self.fail, self.compiles = [], fail, 0

    def __getitem__(self, grid):
        def launch(*args, **constexprs):
            self.log.append(("triton", grid, args, constexprs))
            self.compiles += 1
            return FakeCompiled(self.log, self.fail)
        return launch


def test_cache_launches_directly_after_the_first_call():
    kernel, launcher = FakeKernel(), launch.DirectLauncher(enabled=True, current_device=lambda: 0)
    x = torch.zeros(8)
    for _ in range(3):
        launcher("k", kernel, (4, 2), (x,), (100,), {"BLOCK": 32})
    kinds = [entry[0] for entry in kernel.log]
    assert kinds == ["triton", "entry", "direct", "direct"]  # the launch entry is built once
    # The direct entry gets the full 3-D grid and the constexprs in parameter order,
    # the default filled in for the one not passed.
    assert kernel.log[1][1] == (4, 2, 1) and kernel.log[2][2] == (x, 100, 32, False)


@pytest.mark.parametrize("change", ["alignment", "dtype", "scalar", "constexpr", "grid", "device"])
def test_a_new_specialisation_goes_through_triton(change):
    device = [0]
    kernel, launcher = FakeKernel(), launch.DirectLauncher(enabled=True, current_device=lambda: device[0])
    buf = torch.zeros(64)
    tensors, scalars, meta, grid = (buf[:32],), (100,), {"BLOCK": 32}, (1,)
    launcher("k", kernel, grid, tensors, scalars, meta)
    if change == "alignment":
        tensors = (buf[1:33],)  # 4 bytes past a 16-byte boundary
    elif change == "dtype":
        tensors = (buf[:32].half(),)
    elif change == "scalar":
        scalars = (1,)  # Triton specialises ints equal to 1
    elif change == "constexpr":
        meta = {"BLOCK": 64}
    elif change == "grid":
        grid = (2,)
    else:
        device[0] = 1
    launcher("k", kernel, grid, tensors, scalars, meta)
    launcher("k", kernel, grid, tensors, scalars, meta)
    assert [e[0] for e in kernel.log if e[0] != "entry"] == ["triton", "triton", "direct"]
    assert len(launcher) == 2


def test_failed_direct_launch_warns_once_and_falls_back():
    kernel, launcher = FakeKernel(fail=True), launch.DirectLauncher(enabled=True, current_device=lambda: 0)
    x = torch.zeros(8)
    launcher("k", kernel, (1,), (x,), (3,), {"BLOCK": 16})
    with pytest.warns(RuntimeWarning, match="launching a compiled kernel directly failed"):
        launcher("k", kernel, (1,), (x,), (3,), {"BLOCK": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        launcher("k", kernel, (1,), (x,), (3,), {"BLOCK": 16})
    assert not launcher.enabled and len(launcher) == 0
    assert [e[0] for e in kernel.log if e[0] != "entry"] == ["triton", "triton", "triton"]


def test_disabled_launcher_and_cache_bound():
    kernel = FakeKernel()
    off = launch.DirectLauncher(enabled=False, current_device=lambda: 0)
    x = torch.zeros(8)
    for _ in range(2):
        off("k", kernel, (1,), (x,), (5,), {"BLOCK": 16})
    assert [e[0] for e in kernel.log] == ["triton", "triton"] and len(off) == 0
    small = launch.DirectLauncher(enabled=True, current_device=lambda: 0, max_entries=2)
    for n in range(5):
        small("k", kernel, (1,), (x,), (n,), {"BLOCK": 16})
    assert len(small) <= 2


def test_kernel_with_a_constexpr_among_runtime_params_is_never_cached():
    class Interleaved(FakeKernel):
        params = [FakeParam("x_ptr", False), FakeParam("BLOCK", True), FakeParam("n", False)]

    kernel, launcher = Interleaved(), launch.DirectLauncher(enabled=True, current_device=lambda: 0)
    x = torch.zeros(8)
    for _ in range(2):
        launcher("k", kernel, (1,), (x,), (7,), {"BLOCK": 16})
    assert [e[0] for e in kernel.log] == ["triton", "triton"]


def test_a_callers_key_replaces_the_computed_one_but_not_the_device():
    """``key=``: the Gluon launch plans pass their own key (kernels/gluon/common.py). Equal keys
    share an entry whatever the arguments; the device still separates them."""
    device = [0]
    kernel, launcher = FakeKernel(), launch.DirectLauncher(enabled=True, current_device=lambda: device[0])
    x = torch.zeros(8)
    for key in (("plan", 1), ("plan", 1), ("plan", 2)):
        launcher("k", kernel, (1,), (x,), (3,), {"BLOCK": 16}, key=key)
    device[0] = 1
    launcher("k", kernel, (1,), (x,), (3,), {"BLOCK": 16}, key=("plan", 1))
    assert [e[0] for e in kernel.log if e[0] != "entry"] == ["triton", "direct", "triton", "triton"]
    assert len(launcher) == 3
