"""The router (kernels/attention.py): backends, plan, the compile-failure fallback, torch.compile.

These run everywhere: on the CPU the Gluon kernels cannot run, so the tests that need the router
to pick them stand in for their availability by patching the public ``auto_applies`` of each
Gluon module, and a stand-in launcher raises what a broken Triton raises.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import kernels
from helpers import INTERPRET, max_err, rand
from kernels import attention, splitk
from kernels.gluon import dkdv as gluon_dkdv, dq as gluon_dq, forward as gluon_forward

try:
    from triton.runtime.errors import PTXASError
except ImportError:  # pragma: no cover
    PTXASError = RuntimeError


# The interpreter runs kernels in NumPy, which warns about the -inf arithmetic the kernels mean.
pytestmark = [pytest.mark.filterwarnings("ignore:divide by zero encountered in log2:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")]


@pytest.fixture(autouse=True)
def no_fallbacks_left_over():
    attention.forget_fallbacks()
    yield
    attention.forget_fallbacks()


def _qkv(nq=40, nk=56, d=32, hq=2, hkv=1, dtype=torch.float32):
    return rand(1, hq, nq, d, dtype=dtype), rand(1, hkv, nk, d, dtype=dtype), rand(1, hkv, nk, d, dtype=dtype)


def _grads(fn, q, k, v, do):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(do)
    return out, q.grad, k.grad, v.grad


@pytest.mark.parametrize("backend", ["auto", "pointer", "splitk"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_each_backend_matches_the_reference_forward_and_backward(backend, causal):
    q, k, v = _qkv()
    do = rand(*q.shape)
    ours = _grads(lambda a, b, c: kernels.flash_attention(a, b, c, causal=causal, backend=backend), q, k, v, do)
    ref = _grads(lambda a, b, c: kernels.reference_attention(a, b, c, causal=causal),
                 q.double(), k.double(), v.double(), do.double())
    for name, g, r in zip(("o", "dq", "dk", "dv"), ours, ref):
        assert not g.isnan().any(), f"{name}: unwritten (NaN) elements"
        assert max_err(g, r) <= 5e-5 * max(1.0, r.abs().max().item()), name


def test_unknown_backend_is_a_value_error_naming_the_choices():
    q, k, v = _qkv()
    for call in (lambda: kernels.flash_attention(q, k, v, backend="cuda"),
                 lambda: kernels.plan(q, k, v, backend="cuda")):
        with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'pointer', 'splitk', 'gluon'\)"):
            call()


@pytest.mark.skipif(not INTERPRET, reason="on the GPU the Gluon kernels may run here")
def test_gluon_backend_says_why_it_cannot_run():
    q, k, v = _qkv()
    for call in (lambda: kernels.flash_attention(q, k, v, backend="gluon"),
                 lambda: kernels.plan(q, k, v, backend="gluon")):
        with pytest.raises(ValueError, match="backend='gluon' cannot run here: Gluon kernels do not run in Triton's CPU"):
            call()


def test_plan_names_each_pass_and_why():
    q, k, v = _qkv()
    p = kernels.plan(q, k, v, causal=True, backward=True)
    assert isinstance(p, kernels.Plan)
    assert (p.forward, p.dkdv, p.dq, p.splits, p.fallback) == ("pointer", "pointer", "pointer", 1, None)
    assert set(p.why) == {"forward", "dkdv", "dq"} and all(p.why.values())
    assert p.record()["forward"] == "pointer"
    fwd_only = kernels.plan(q, k, v)
    assert fwd_only.dkdv is None and fwd_only.dq is None and set(fwd_only.why) == {"forward"}
    forced = kernels.plan(q, k, v, backend="splitk", backward=True)
    assert (forced.forward, forced.dkdv, forced.dq) == ("splitk", "pointer", "pointer") and forced.splits >= 2
    with pytest.raises(ValueError, match="plan: head dims differ"):
        kernels.plan(q, k[..., :16], v[..., :16])


def test_plan_follows_the_rule_the_call_follows(monkeypatch):
    """Where the heuristic splits, plan says split-K and the call launches it."""
    monkeypatch.setattr(splitk, "auto_splits", lambda q4, k4: 4)
    q, k, v = _qkv()
    assert kernels.plan(q, k, v).forward == "splitk" and kernels.plan(q, k, v).splits == 4
    assert attention.attention_forward(q, k, v, False, 0.2)[2] == "splitk"


def _gluon_applies_everywhere(monkeypatch):
    """Make the router believe the Gluon kernels take these inputs (their scope check says no on a CPU)."""
    for module in (gluon_forward, gluon_dkdv, gluon_dq):
        monkeypatch.setattr(module, "auto_applies", lambda q4, k4, v4, scale: True)


def _broken(*args, **kwargs):
    raise PTXASError("ptxas fatal: this Triton cannot compile the kernel (a stand-in for a broken release)")


def test_a_gluon_compile_failure_falls_back_to_the_pointer_kernel_with_one_warning(monkeypatch):
    _gluon_applies_everywhere(monkeypatch)
    for module, launcher in ((gluon_forward, "hopper_forward"), (gluon_dkdv, "hopper_dkdv"), (gluon_dq, "hopper_dq")):
        monkeypatch.setattr(module, launcher, _broken)
    q, k, v = _qkv(dtype=torch.float16)
    before = kernels.plan(q, k, v, backward=True)
    assert (before.forward, before.dkdv, before.dq, before.fallback) == ("gluon", "gluon", "gluon", None)
    do = rand(*q.shape, dtype=torch.float16)
    with pytest.warns(RuntimeWarning, match="the Gluon forward kernel failed to compile") as caught:
        out, dq, dk, dv = _grads(lambda a, b, c: kernels.flash_attention(a, b, c), q, k, v, do)
    assert sum("failed to compile" in str(w.message) for w in caught) == 3  # forward, dK/dV, dQ: once each
    ref = _grads(lambda a, b, c: kernels.reference_attention(a, b, c), q.double(), k.double(), v.double(), do.double())
    for name, g, r in zip(("o", "dq", "dk", "dv"), (out, dq, dk, dv), ref):
        assert not g.isnan().any() and max_err(g, r) <= 2**-8 * max(1.0, r.abs().max().item()), name
    after = kernels.plan(q, k, v, backward=True)
    assert (after.forward, after.dkdv, after.dq) == ("pointer", "pointer", "pointer")
    assert "PTXASError" in after.fallback and "failed to compile" in after.why["forward"]
    assert len(attention.fallbacks()) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call routes straight to the pointer kernel: no warning
        kernels.flash_attention(q, k, v)


def test_a_forced_gluon_backend_raises_the_compile_failure(monkeypatch):
    """backend="gluon" asks for that kernel: its failure is the caller's error, not a silent fallback."""
    monkeypatch.setattr(gluon_forward, "hopper_problem", lambda q4, k4, v4: None)
    monkeypatch.setattr(gluon_forward, "hopper_forward", _broken)
    q, k, v = _qkv(dtype=torch.float16)
    with pytest.raises(PTXASError):
        kernels.flash_attention(q, k, v, backend="gluon")
    assert not attention.fallbacks()


def test_bad_input_is_never_taken_for_a_compile_failure(monkeypatch):
    _gluon_applies_everywhere(monkeypatch)

    def bad(*args, **kwargs):
        raise ValueError("hopper_forward: a bad argument")

    monkeypatch.setattr(gluon_forward, "hopper_forward", bad)
    q, k, v = _qkv(dtype=torch.float16)
    with pytest.raises(ValueError, match="a bad argument"):
        kernels.flash_attention(q, k, v)
    assert not attention.fallbacks()


def test_custom_ops_pass_torch_library_checks():
    q, k, v = (t.requires_grad_() for t in _qkv(nq=9, nk=17, d=16))
    torch.library.opcheck(attention.flash_fwd_op, (q, k, v, True, 0.25, "ieee", "auto"),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_torch_compile_fullgraph_keeps_one_graph():
    """A module calling flash_attention compiles with fullgraph=True (no graph break) and matches eager.
    On the CPU through AOTAutograd's eager backend (Inductor would need a C++ toolchain); the GPU
    suite compiles with Inductor (tests/test_hopper.py)."""

    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return kernels.flash_attention(q, k, v, causal=True) * 2.0

    q, k, v = _qkv(nq=20, nk=20, d=16)
    do = rand(*q.shape)
    torch._dynamo.reset()
    compiled = torch.compile(Attn(), fullgraph=True, backend="aot_eager")
    got = _grads(compiled, q, k, v, do)
    want = _grads(Attn(), q, k, v, do)
    for name, g, w in zip(("o", "dq", "dk", "dv"), got, want):
        assert max_err(g, w) <= 1e-6, name
