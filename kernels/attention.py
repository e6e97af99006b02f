"""The router: ``flash_attention`` picks a kernel per pass, and ``plan`` says which and why.

Three families of kernels compute the same attention:

| backend | forward | dK, dV | dQ |
|---|---|---|---|
| ``"pointer"`` | post 3's FA2 kernel (``kernels/flash.py``) | ``flash.py`` | ``flash.py`` |
| ``"splitk"`` | the split-K forward (``kernels/splitk.py``) | ``flash.py`` | ``flash.py`` |
| ``"gluon"`` | post 5's Hopper kernel (``kernels/gluon/forward.py``) | ``gluon/dkdv.py`` | ``gluon/dq.py`` |

``backend="auto"`` (the default) picks per call, by the rule that measured fastest
(``RULE``): split-K where the grid leaves SMs idle and each program walks enough key tiles;
else the Gluon kernels where they take the inputs and the sequence is long; else the pointer
kernel. The backward's two passes follow the Gluon rule on their own, whichever forward ran.
Naming a backend that cannot run the inputs is a ValueError that says why.

If a Gluon kernel fails to compile under ``"auto"`` (a Triton release that breaks it), the call
does not fail: that pass runs the pointer kernel, one warning names the reason, and ``plan``
reports it for every later call of the same kind.

A call with a variant (``window_size``, ``softcap``, ``alibi_slopes``, ``sinks``, ``block_mask``, or
packed documents through ``flash_attention_varlen``) runs the pointer kernel's variant build
(``kernels/variants.py``) for every pass: the split-K and Gluon kernels have none of them, so
naming either with a variant is a ValueError that says which variant it lacks.

Under ``torch.compile`` the call goes through the custom ops ``torch.ops.kernels.flash_fwd``
and ``torch.ops.kernels.flash_bwd`` (with fake-tensor functions and autograd), so a compiled
model keeps one graph; eager calls take the autograd Function directly, which costs less host
time per call.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
from torch.autograd.function import once_differentiable

from . import flash, splitk, variants
from .gluon import dkdv as gluon_dkdv, dq as gluon_dq, forward as gluon_forward
from .runtime import (as_batch_heads, check_alibi_slopes, check_attention_inputs, check_sinks, check_softcap,
                      check_window)
from .settings import SETTINGS

BACKENDS = ("auto", "pointer", "splitk", "gluon")
PRECISIONS = ("ieee", "tf32")
KERNEL_FILES = {"pointer": "kernels/flash.py", "splitk": "kernels/splitk.py", "gluon": "kernels/gluon/"}

try:
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import PTXASError

    COMPILE_ERRORS: tuple = (CompilationError, PTXASError, RuntimeError, NotImplementedError, AttributeError)
except ImportError:  # pragma: no cover - depends on the installed Triton
    COMPILE_ERRORS = (RuntimeError, NotImplementedError, AttributeError)
# Never taken for a compile failure: bad input, no memory, a broken CUDA context.
NOT_COMPILE_ERRORS = (ValueError, TypeError, torch.OutOfMemoryError, getattr(torch, "AcceleratorError", ()))

RULE = (
    "forward: split-K (kernels/splitk.py) when the grid has fewer programs than the GPU has SMs and each "
    f"walks at least {splitk.MIN_KEY_TILES} key tiles; else the Gluon kernel (kernels/gluon/forward.py) on sm90 "
    f"GPUs for contiguous fp16/bf16 inputs with D in {gluon_forward.HEAD_DIMS} and Nq, Nk >= "
    f"{gluon_forward.AUTO_MIN_LEN} (unless KERNELS_GLUON=0); else the pointer kernel (kernels/flash.py). "
    "backward: dK/dV (kernels/gluon/dkdv.py) and dQ (kernels/gluon/dq.py) by the Gluon kernels on the inputs "
    "the Gluon forward's rule takes, whichever forward ran; else the pointer kernels (kernels/flash.py)."
)

# (pass, dtype, head dim, causal) -> why the Gluon kernel for that pass failed to compile.
_FALLBACKS: dict[tuple, str] = {}


def fallbacks() -> dict[tuple, str]:
    """The Gluon compile failures seen in this process: (pass, dtype, D, causal) -> reason."""
    return dict(_FALLBACKS)


def forget_fallbacks() -> None:
    """Try the Gluon kernels again on the next call (after a Triton upgrade, or in a test)."""
    _FALLBACKS.clear()


def _fallback_key(name: str, q4: torch.Tensor, causal: bool) -> tuple:
    return (name, q4.dtype, q4.shape[-1], causal)


def _gluon_or_fallback(name: str, q4, causal: bool, launch, fallback):
    """Run the Gluon ``launch()``; if it fails to compile, remember why, warn once, run ``fallback()``."""
    key = _fallback_key(name, q4, causal)
    if key in _FALLBACKS:
        return fallback()
    try:
        return launch()
    except NOT_COMPILE_ERRORS:
        raise
    except COMPILE_ERRORS as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        _FALLBACKS[key] = reason
        warnings.warn(f"kernels.flash_attention: the Gluon {name} kernel failed to compile ({reason}); "
                      f"running the pointer kernel for {name} at {q4.dtype}, D = {q4.shape[-1]}, causal={causal} "
                      "from now on (kernels.plan reports it)", RuntimeWarning, stacklevel=3)
        return fallback()


# ----------------------------------------------------------------------------- the rule


def _check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"flash_attention: backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _forward_choice(q4, k4, v4, causal: bool, scale: float, backend: str, splits: int | None) -> tuple[str, int]:
    """(kernel, key slices) for the forward; raises ValueError if ``backend`` cannot run the inputs."""
    if backend == "splitk":
        return "splitk", splitk.check_splits(splits) if splits is not None else max(2, splitk.auto_splits(q4, k4))
    if splits is not None:
        raise ValueError("flash_attention: splits applies to backend='splitk' only")
    if backend == "pointer":
        return "pointer", 1
    if backend == "gluon":
        problem = gluon_forward.hopper_problem(q4, k4, v4)
        if problem is None and scale <= 0:
            problem = f"scale must be > 0 (the fused softmax needs it), got {scale}"
        if problem is not None:
            raise ValueError(f"flash_attention: backend='gluon' cannot run here: {problem}")
        return "gluon", 1
    n = splitk.auto_splits(q4, k4)
    if n > 1:
        return "splitk", n
    if gluon_forward.auto_applies(q4, k4, v4, scale) and _fallback_key("forward", q4, causal) not in _FALLBACKS:
        return "gluon", 1
    return "pointer", 1


def _backward_choice(q4, k4, v4, causal: bool, scale: float, backend: str) -> tuple[str, str]:
    """(dK/dV kernel, dQ kernel); raises ValueError if ``backend`` cannot run the inputs."""
    if backend == "gluon":
        problem = gluon_dkdv.hopper_bwd_problem(q4, k4, v4)
        if problem is not None:
            raise ValueError(f"flash_attention: backend='gluon' cannot run the backward here: {problem}")
        return "gluon", "gluon"
    if backend != "auto":
        return "pointer", "pointer"
    dkdv = "gluon" if (gluon_dkdv.auto_applies(q4, k4, v4, scale)
                       and _fallback_key("dkdv", q4, causal) not in _FALLBACKS) else "pointer"
    dq = "gluon" if (gluon_dq.auto_applies(q4, k4, v4, scale)
                     and _fallback_key("dq", q4, causal) not in _FALLBACKS) else "pointer"
    return dkdv, dq


# ----------------------------------------------------------------------------- passes on (B, H, N, D)


def attention_forward(q4, k4, v4, causal: bool, scale: float, precision: str = "ieee", *, backend: str = "auto",
                      splits: int | None = None):
    """The forward on validated (B, H, N, D) views; returns (o4, lse, kernel name).

    lse is (B, H, Nq) fp32 in log2 units, the same from every kernel, so any backward runs on
    any forward. ``splits`` forces the split-K forward's key slices (``backend="splitk"``).
    """
    kernel, n = _forward_choice(q4, k4, v4, causal, scale, _check_backend(backend), splits)
    if kernel == "splitk":
        o4, lse, _ = splitk.splitk_forward(q4, k4, v4, causal, scale, precision, n)
        return o4, lse, kernel
    if kernel == "pointer":
        return (*flash.flash_forward(q4, k4, v4, causal, scale, precision)[:2], kernel)
    gluon = lambda: (*gluon_forward.hopper_forward(q4, k4, v4, causal, scale)[:2], "gluon")  # noqa: E731
    if backend == "gluon":
        return gluon()
    pointer = lambda: (*flash.flash_forward(q4, k4, v4, causal, scale, precision)[:2], "pointer")  # noqa: E731
    return _gluon_or_fallback("forward", q4, causal, gluon, pointer)


def attention_backward(do4, q4, k4, v4, o4, lse, causal: bool, scale: float, precision: str = "ieee", *,
                       backend: str = "auto"):
    """dq, dk, dv (shaped like q4, k4, v4) from the forward's o4 and lse, on (B, H, N, D) views."""
    dkdv_kernel, dq_kernel = _backward_choice(q4, k4, v4, causal, scale, _check_backend(backend))
    delta = flash.flash_preprocess(o4, do4)
    do_c = do4.contiguous() if "gluon" in (dkdv_kernel, dq_kernel) else do4  # TMA reads whole rows
    strict = backend == "gluon"

    def run(name, kernel, gluon, pointer):
        if kernel != "gluon":
            return pointer()
        return gluon() if strict else _gluon_or_fallback(name, q4, causal, gluon, pointer)

    dk, dv = run("dkdv", dkdv_kernel,
                 lambda: gluon_dkdv.hopper_dkdv(q4, k4, v4, do_c, lse, delta, causal, scale),
                 lambda: flash.flash_dkdv(q4, k4, v4, do4, lse, delta, causal, scale, precision))
    dq = run("dq", dq_kernel,
             lambda: gluon_dq.hopper_dq(q4, k4, v4, do_c, lse, delta, causal, scale),
             lambda: flash.flash_dq(q4, k4, v4, do4, lse, delta, causal, scale, precision))
    return dq, dk, dv


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """Which kernel runs each pass of one ``flash_attention`` call, and why.

    ``forward``, ``dkdv``, ``dq``: "pointer", "splitk" or "gluon" (``KERNEL_FILES``); the
    backward's two are None when ``backward=False``. ``splits``: the split-K forward's key
    slices (1 otherwise). ``why``: one sentence per pass. ``fallback``: the compile failure that
    sent a Gluon pass to the pointer kernel, or None.
    """

    forward: str
    dkdv: str | None
    dq: str | None
    splits: int
    why: dict
    fallback: str | None = None

    def record(self) -> dict:
        """The plan as a JSON-ready dict (the benchmark stores it with every record)."""
        return asdict(self)


def _why_forward(kernel: str, q4, k4, v4, causal, scale, backend: str, n: int) -> str:
    if backend != "auto":
        return f"backend={backend!r} asked for it"
    if kernel == "splitk":
        return f"the unsplit grid leaves SMs idle and each program walks enough key tiles: {n} key slices"
    if kernel == "gluon":
        return f"sm90, fp16/bf16, D 64/128, contiguous, and Nq, Nk >= {gluon_forward.AUTO_MIN_LEN}"
    problem = gluon_forward.hopper_problem(q4, k4, v4)
    if _fallback_key("forward", q4, causal) in _FALLBACKS:
        problem = "the Gluon forward failed to compile"
    elif problem is None:
        problem = ("KERNELS_GLUON=0" if not SETTINGS.gluon else
                   "scale <= 0" if scale <= 0 else f"Nq or Nk below {gluon_forward.AUTO_MIN_LEN}, "
                   "where the pointer kernel measured faster")
    no_split = ("no split-K: the interpreter has no SM count" if SETTINGS.interpret else
                "no split-K: the grid fills the GPU or each program walks few key tiles")
    return f"{no_split}; not the Gluon kernel: {problem}"


def _why_backward(name: str, kernel: str, q4, k4, v4, causal, scale, backend: str) -> str:
    if backend != "auto":
        return f"backend={backend!r} asked for it"
    if kernel == "gluon":
        return "the inputs the Gluon forward's rule takes (whichever forward ran)"
    if _fallback_key(name, q4, causal) in _FALLBACKS:
        return f"the Gluon {name} kernel failed to compile"
    problem = gluon_dkdv.hopper_bwd_problem(q4, k4, v4)
    if problem is None:
        problem = ("KERNELS_GLUON=0" if not SETTINGS.gluon else
                   "scale <= 0" if scale <= 0 else f"Nq or Nk below {gluon_forward.AUTO_MIN_LEN}")
    return f"not the Gluon kernel: {problem}"


def plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, scale: float | None = None,
         backward: bool = False, backend: str = "auto", window_size=(-1, -1), softcap: float = 0.0,
         alibi_slopes=None, sinks=None, block_mask=None) -> Plan:
    """Which kernel ``flash_attention(q, k, v, causal=..., scale=..., backend=..., <variants>)`` runs
    for the forward and, with ``backward=True``, for dK/dV and dQ, and why. Same checks and errors
    as ``flash_attention``; launches nothing."""
    scale = check_attention_inputs("plan", q, k, v, causal, scale, allow_gqa=True)
    _check_backend(backend)
    setup = variant_setup("plan", q, k, v, causal, window_size, softcap, alibi_slopes, sinks, block_mask, backend)
    if setup is not None:
        why = f"backend={backend!r} asked for it" if backend == "pointer" else (
            f"the variants ({', '.join(setup.names)}) run on the pointer kernel only (kernels/variants.py)")
        whys = {"forward": why, **({"dkdv": why, "dq": why} if backward else {})}
        return Plan("pointer", "pointer" if backward else None, "pointer" if backward else None, 1, whys, None)
    q4, k4, v4 = as_batch_heads(q), as_batch_heads(k), as_batch_heads(v)
    kernel, n = _forward_choice(q4, k4, v4, causal, scale, backend, None)
    why = {"forward": _why_forward(kernel, q4, k4, v4, causal, scale, backend, n)}
    dkdv = dq = None
    if backward:
        dkdv, dq = _backward_choice(q4, k4, v4, causal, scale, backend)
        why["dkdv"] = _why_backward("dkdv", dkdv, q4, k4, v4, causal, scale, backend)
        why["dq"] = _why_backward("dq", dq, q4, k4, v4, causal, scale, backend)
    failed = [reason for (name, dtype, d, c), reason in _FALLBACKS.items()
              if (dtype, d, c) == (q4.dtype, q4.shape[-1], causal) and (backward or name == "forward")]
    return Plan(kernel, dkdv, dq, n, why, "; ".join(failed) or None)


# ----------------------------------------------------------------------------- autograd and custom ops


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd over (B, H, N, D) views: the routed forward, then the routed backward."""

    @staticmethod
    def forward(ctx, q4, k4, v4, causal, scale, precision, backend, splits=None):
        o4, lse, _ = attention_forward(q4, k4, v4, causal, scale, precision, backend=backend, splits=splits)
        ctx.save_for_backward(q4, k4, v4, o4, lse)
        ctx.args = (causal, scale, precision, backend)
        return o4

    @staticmethod
    @once_differentiable
    def backward(ctx, do4):
        q4, k4, v4, o4, lse = ctx.saved_tensors
        causal, scale, precision, backend = ctx.args
        dq, dk, dv = attention_backward(do4, q4, k4, v4, o4, lse, causal, scale, precision, backend=backend)
        return dq, dk, dv, None, None, None, None, None


@torch.library.custom_op("kernels::flash_fwd", mutates_args=())
def flash_fwd_op(q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor, causal: bool, scale: float,
                 precision: str, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(o4, lse) of the routed forward, as one op a compiled graph can hold."""
    o4, lse, _ = attention_forward(q4, k4, v4, causal, scale, precision, backend=backend)
    return o4, lse


@flash_fwd_op.register_fake
def _(q4, k4, v4, causal, scale, precision, backend):
    B, H, NQ, _ = q4.shape
    return q4.new_empty(q4.shape), q4.new_empty((B, H, NQ), dtype=torch.float32)


@torch.library.custom_op("kernels::flash_bwd", mutates_args=())
def flash_bwd_op(do4: torch.Tensor, q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor, o4: torch.Tensor,
                 lse: torch.Tensor, causal: bool, scale: float, precision: str,
                 backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of the routed backward, as one op."""
    return attention_backward(do4, q4, k4, v4, o4, lse, causal, scale, precision, backend=backend)


@flash_bwd_op.register_fake
def _(do4, q4, k4, v4, o4, lse, causal, scale, precision, backend):
    return q4.new_empty(q4.shape), k4.new_empty(k4.shape), v4.new_empty(v4.shape)


def _setup_context(ctx, inputs, output):
    q4, k4, v4, causal, scale, precision, backend = inputs
    o4, lse = output
    ctx.save_for_backward(q4, k4, v4, o4, lse)
    ctx.args = (causal, scale, precision, backend)


def _op_backward(ctx, do4, dlse):
    # lse is an output for the backward's sake only: its gradient is never used (None or zeros).
    q4, k4, v4, o4, lse = ctx.saved_tensors
    dq, dk, dv = flash_bwd_op(do4.contiguous(), q4, k4, v4, o4, lse, *ctx.args)
    return dq, dk, dv, None, None, None, None


flash_fwd_op.register_autograd(_op_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- variants (post 6)


@dataclass(frozen=True, eq=False)
class VariantSetup:
    """One call's checked variants: what ``variants.Launch`` needs besides q, k, v and the scale.

    ``window``: (left, right) with -1 unbounded, or None; causal is folded in (right = 0).
    ``bottom_right``: the window's diagonal is j = i + Nk - Nq (FlashAttention) rather than j = i.
    ``cu_q``/``cu_k``/``max_q``/``max_k``: packed documents (``flash_attention_varlen``), else None/0.
    """

    names: tuple
    window: tuple | None
    bottom_right: bool
    softcap: float
    slopes: torch.Tensor | None
    sinks: torch.Tensor | None
    block_mask: object = None
    cu_q: torch.Tensor | None = None
    cu_k: torch.Tensor | None = None
    max_q: int = 0
    max_k: int = 0

    def launch(self, q4, k4, v4, scale: float, precision: str, sinks=None) -> variants.Launch:
        return variants.Launch(q4, k4, v4, scale, precision, window=self.window, bottom_right=self.bottom_right,
                               softcap=self.softcap, slopes=self.slopes, sinks=sinks, cu_q=self.cu_q,
                               cu_k=self.cu_k, max_q=self.max_q, max_k=self.max_k, block_mask=self.block_mask)


def variant_setup(name: str, q, k, v, causal: bool, window_size, softcap, alibi_slopes, sinks, block_mask,
                  backend: str, *, varlen: tuple | None = None) -> VariantSetup | None:
    """Check the variant arguments of one call; None when it has none (the plain kernels run).

    ``varlen``: (cu_q, cu_k, max_q, max_k, documents) from ``kernels.varlen``, whose q is
    (total_q, Hq, D); else q is (..., Hq, Nq, D).
    """
    from .block_mask import BlockMask

    window = check_window(name, window_size)
    softcap = check_softcap(name, softcap)
    if varlen is not None:
        batch, heads, nq, nk = varlen[4], q.shape[1], None, None
    else:
        q4, k4 = as_batch_heads(q), as_batch_heads(k)
        batch, heads, nq, nk = q4.shape[0], q4.shape[1], q4.shape[2], k4.shape[2]
    slopes = check_alibi_slopes(name, alibi_slopes, batch, heads, q.device)
    sinks = check_sinks(name, sinks, heads, q.device)
    if sinks is not None:
        sinks = sinks.contiguous()  # the kernel reads sinks[h]; contiguous() keeps the gradient path
    if block_mask is not None:
        if not isinstance(block_mask, BlockMask):
            raise TypeError(f"{name}: block_mask must be a kernels.block_mask.BlockMask (from kernels.block_mask(...)), "
                            f"got {type(block_mask).__name__}")
        if varlen is not None:
            raise ValueError(f"{name}: block_mask does not compose with packed documents (varlen): write the "
                             "documents into the mask_mod of a block mask over the padded batch instead")
        if causal or window is not None:
            raise ValueError(f"{name}: block_mask does not compose with causal or window_size: write them into "
                             "its mask_mod (q_idx >= kv_idx, kv_idx >= q_idx - left)")
        block_mask.check(name, batch, heads, nq, nk, q.device)
    names = tuple(n for n, on in (("window_size", window is not None), ("softcap", softcap > 0),
                                  ("alibi_slopes", slopes is not None), ("sinks", sinks is not None),
                                  ("block_mask", block_mask is not None), ("varlen", varlen is not None)) if on)
    if not names:
        return None
    if backend in ("splitk", "gluon"):
        raise ValueError(f"{name}: backend={backend!r} has no {', '.join(names)}: only the pointer kernel "
                         "(kernels/variants.py) runs attention variants; use backend='auto' or 'pointer'")
    bottom_right = True
    if varlen is not None:
        if causal:  # FlashAttention's varlen: causal is the window's right edge on the bottom-right diagonal
            window = (window[0] if window is not None else -1, 0)
    elif causal and window is None:
        window, bottom_right = (-1, 0), False  # plain causal keeps its top-left meaning
    elif causal:
        if nq != nk:
            raise ValueError(f"{name}: causal with window_size needs Nq == Nk (got Nq={nq}, Nk={nk}): causal alone "
                             "is top-left aligned here, a window bottom-right as in FlashAttention; pass "
                             f"window_size=({window[0]}, 0) without causal for FlashAttention's causal window")
        window = (window[0], 0)
    cu = varlen[:4] if varlen is not None else (None, None, 0, 0)
    return VariantSetup(names, window, bottom_right, softcap, slopes, sinks, block_mask, *cu)


class VariantFunction(torch.autograd.Function):
    """Autograd over the variant kernels: q4, k4, v4 and the sinks get gradients."""

    @staticmethod
    def forward(ctx, q4, k4, v4, sinks, setup, scale, precision):
        launch = setup.launch(q4, k4, v4, scale, precision, sinks)
        o4, lse = launch.forward()
        ctx.save_for_backward(q4, k4, v4, o4, lse, sinks)
        ctx.args = (setup, scale, precision)
        return o4

    @staticmethod
    @once_differentiable
    def backward(ctx, do4):
        q4, k4, v4, o4, lse, sinks = ctx.saved_tensors
        setup, scale, precision = ctx.args
        dq, dk, dv, dsinks = setup.launch(q4, k4, v4, scale, precision, sinks).backward(do4, o4, lse)
        return dq, dk, dv, dsinks, None, None, None


def _natural(t4, varlen: bool):
    # (1, H, total, D) -> (total, H, D) for packed documents; (B, H, N, D) as is.
    return t4[0].permute(1, 0, 2) if varlen else t4


def _four(t, varlen: bool):
    return t.permute(1, 0, 2)[None] if varlen else t


def _op_setup(slopes, sinks, cu_q, cu_k, left, right, has_window, bottom_right, softcap, max_q, max_k):
    return VariantSetup(("custom op",), (left, right) if has_window else None, bottom_right, softcap, slopes,
                        sinks, None, cu_q, cu_k, max_q, max_k)


@torch.library.custom_op("kernels::variant_fwd", mutates_args=())
def variant_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor | None,
                   sinks: torch.Tensor | None, cu_q: torch.Tensor | None, cu_k: torch.Tensor | None,
                   scale: float, precision: str, left: int, right: int, has_window: bool, bottom_right: bool,
                   softcap: float, max_q: int, max_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse) of the variant forward as one op; q, k, v are (B, H, N, D), or (total, H, D) with cu_q."""
    varlen = cu_q is not None
    setup = _op_setup(slopes, sinks, cu_q, cu_k, left, right, has_window, bottom_right, softcap, max_q, max_k)
    o4, lse = setup.launch(_four(q, varlen), _four(k, varlen), _four(v, varlen), scale, precision, sinks).forward()
    return _natural(o4, varlen), lse


@variant_fwd_op.register_fake
def _(q, k, v, slopes, sinks, cu_q, cu_k, scale, precision, left, right, has_window, bottom_right, softcap,
      max_q, max_k):
    if cu_q is not None:
        return q.new_empty(q.shape), q.new_empty((1, q.shape[1], q.shape[0]), dtype=torch.float32)
    B, H, NQ, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((B, H, NQ), dtype=torch.float32)


@torch.library.custom_op("kernels::variant_bwd", mutates_args=())
def variant_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                   lse: torch.Tensor, slopes: torch.Tensor | None, sinks: torch.Tensor | None,
                   cu_q: torch.Tensor | None, cu_k: torch.Tensor | None, scale: float, precision: str, left: int,
                   right: int, has_window: bool, bottom_right: bool, softcap: float, max_q: int,
                   max_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dsinks) of the variant backward as one op; dsinks is (0,) without sinks."""
    varlen = cu_q is not None
    setup = _op_setup(slopes, sinks, cu_q, cu_k, left, right, has_window, bottom_right, softcap, max_q, max_k)
    launch = setup.launch(_four(q, varlen), _four(k, varlen), _four(v, varlen), scale, precision, sinks)
    dq, dk, dv, dsinks = launch.backward(_four(do, varlen), _four(o, varlen), lse)
    if dsinks is None:
        dsinks = q.new_zeros((0,), dtype=torch.float32)
    return _natural(dq, varlen), _natural(dk, varlen), _natural(dv, varlen), dsinks


@variant_bwd_op.register_fake
def _(do, q, k, v, o, lse, slopes, sinks, cu_q, cu_k, scale, precision, left, right, has_window, bottom_right,
      softcap, max_q, max_k):
    dsinks = sinks.new_empty(sinks.shape) if sinks is not None else q.new_empty((0,), dtype=torch.float32)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dsinks


def _variant_setup_context(ctx, inputs, output):
    q, k, v, slopes, sinks, cu_q, cu_k, *scalars = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, slopes, sinks, cu_q, cu_k)
    ctx.scalars = scalars


def _variant_op_backward(ctx, do, dlse):
    q, k, v, o, lse, slopes, sinks, cu_q, cu_k = ctx.saved_tensors
    dq, dk, dv, dsinks = variant_bwd_op(do.contiguous(), q, k, v, o, lse, slopes, sinks, cu_q, cu_k, *ctx.scalars)
    return dq, dk, dv, None, dsinks if sinks is not None else None, None, None, *([None] * len(ctx.scalars))


variant_fwd_op.register_autograd(_variant_op_backward, setup_context=_variant_setup_context)


def run_variant(setup: VariantSetup, q4, k4, v4, scale: float, precision: str) -> torch.Tensor:
    """The variant forward on (B, H, N, D) views ((1, H, total, D) for packed documents), with
    autograd when an input needs it; returns o4 like q4."""
    varlen = setup.cu_q is not None
    sinks = setup.sinks
    if torch.compiler.is_compiling():
        if setup.block_mask is not None:
            raise ValueError("flash_attention: block_mask is not supported under torch.compile (its mask_mod is a "
                             "Triton function, which an op schema cannot carry); call it outside the compiled region")
        left, right = setup.window if setup.window is not None else (-1, -1)
        o, _ = variant_fwd_op(_natural(q4, varlen), _natural(k4, varlen), _natural(v4, varlen), setup.slopes, sinks,
                              setup.cu_q, setup.cu_k, float(scale), precision, left, right, setup.window is not None,
                              setup.bottom_right, setup.softcap, setup.max_q, setup.max_k)
        return _four(o, varlen)
    needs_grad = any(t is not None and t.requires_grad for t in (q4, k4, v4, sinks))
    if torch.is_grad_enabled() and needs_grad:
        return VariantFunction.apply(q4, k4, v4, sinks, setup, scale, precision)
    return setup.launch(q4, k4, v4, scale, precision, sinks).forward()[0]


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0,
                    alibi_slopes: torch.Tensor | None = None, sinks: torch.Tensor | None = None,
                    block_mask=None, backend: str = "auto", precision: str = "ieee") -> torch.Tensor:
    """Attention with a Triton backward pass (``loss.backward()`` works), routed to the fastest kernel.

    q: (..., Hq, Nq, D); k, v: (..., Hkv, Nk, D) with the same batch dims and either the same
    heads or Hq a multiple of Hkv (grouped-query / multi-query attention, without copying k and
    v). Any Nq, Nk >= 1 and 1 <= D <= 256; strided inputs work. Returns (..., Hq, Nq, D) in q's
    dtype; softmax statistics are kept in fp32. ``causal`` masks top-left (query i sees keys
    j <= i); ``scale`` defaults to 1/sqrt(D).

    ``backend``: "auto" (the routing rule, ``RULE``), or "pointer" (post 3's kernels),
    "splitk" (the split-K forward, pointer backward) or "gluon" (post 5's Hopper kernels), a
    ValueError where the named one cannot run the inputs. ``plan(q, k, v, ...)`` says which
    kernel runs each pass and why. ``precision`` applies to fp32 inputs on the GPU: "ieee"
    (default) for exact fp32 dot products, "tf32" for the faster tensor-core mode (about 1e-3
    relative error).

    Variants (post 6; FlashAttention's names and conventions, every one runs the pointer kernel):
    ``window_size=(left, right)``: query i sees keys i + Nk - Nq - left <= j <= i + Nk - Nq + right
    (bottom-right aligned, -1 = unbounded on that side); with ``causal`` the right side is 0, and
    then Nq must equal Nk (causal alone is top-left, the window bottom-right: the two agree only
    there; pass ``window_size=(left, 0)`` for FlashAttention's bottom-right causal window).
    ``softcap`` > 0: scores s -> softcap * tanh(s / softcap) after scaling. ``alibi_slopes`` fp32
    (Hq,) or (B, Hq): the bias -slope * |i + Nk - Nq - j|. ``sinks`` (Hq,): one logit per query
    head added to every row's softmax denominator (learned: it gets a gradient). ``block_mask``: a
    ``kernels.block_mask`` built for (B, Hq, Nq, Nk) (B or Hq may be 1 in it); it composes with softcap,
    alibi_slopes and sinks, not with causal or window_size (write those into its mask_mod).
    A row that sees no key returns 0.
    """
    scale = check_attention_inputs("flash_attention", q, k, v, causal, scale, allow_gqa=True)
    _check_backend(backend)
    if precision not in PRECISIONS:
        raise ValueError(f"flash_attention: precision must be one of {PRECISIONS}, got {precision!r}")
    setup = variant_setup("flash_attention", q, k, v, causal, window_size, softcap, alibi_slopes, sinks,
                          block_mask, backend)
    if setup is not None:
        if q.numel() == 0 or k.numel() == 0:
            return q * 0.0 + (sinks.sum() * 0.0 if sinks is not None else 0.0)
        precision = precision if q.dtype == torch.float32 else "ieee"
        return run_variant(setup, as_batch_heads(q), as_batch_heads(k), as_batch_heads(v), scale,
                           precision).reshape(q.shape)
    if q.numel() == 0 or k.numel() == 0:
        # Nq = 0 (or an empty batch): nothing to compute; keep the result in the graph.
        return q * 0.0
    precision = precision if q.dtype == torch.float32 else "ieee"
    q4, k4, v4 = as_batch_heads(q), as_batch_heads(k), as_batch_heads(v)
    if torch.compiler.is_compiling():
        o4, _ = flash_fwd_op(q4, k4, v4, causal, float(scale), precision, backend)
    elif torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        o4 = FlashAttentionFunction.apply(q4, k4, v4, causal, scale, precision, backend)
    else:
        # Inference: skip the autograd machinery (host time matters at short sequences).
        o4, _, _ = attention_forward(q4, k4, v4, causal, scale, precision, backend=backend)
    return o4.reshape(q.shape)
