"""Input validation and small helpers shared by every kernel, and where the kernels run.

The mode (GPU or Triton's CPU interpreter) is decided once, in ``kernels/settings.py``.
"""

from __future__ import annotations

import math

import torch

from .settings import INTERPRET, SETTINGS

MAX_HEAD_DIM = 256
INT32_MAX = 2**31 - 1
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y

# bf16 tl.dot returns garbage under the interpreter, so bf16 is GPU-only.
INTERPRETER_DTYPES = (torch.float32, torch.float16)
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def version_tuple(text: str) -> tuple[int, int]:
    parts = (text.split("+")[0].split(".") + ["0", "0"])[:2]
    return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)


def interpreter_problem() -> str | None:
    """Why Triton's CPU interpreter cannot run here, or None if it can.

    Triton 3.6's interpreter turns 1-element NumPy arrays into Python ints, which
    NumPy 2.4 forbids ("only 0-dimensional arrays can be converted to Python
    scalars"): every kernel with a loop bound from an argument fails. 3.9 works.
    """
    import numpy
    import triton

    if version_tuple(triton.__version__) < (3, 9) and version_tuple(numpy.__version__) >= (2, 4):
        return (f"Triton {triton.__version__}'s CPU interpreter fails with NumPy {numpy.__version__} "
                "(NumPy 2.4 stopped converting 1-element arrays to scalars); install triton>=3.9 or numpy<2.4")
    return None


def supported_dtypes() -> tuple[torch.dtype, ...]:
    return INTERPRETER_DTYPES if INTERPRET else GPU_DTYPES


def mode_description() -> str:
    """One line that says where the kernels ran, for pages and benchmark files."""
    if INTERPRET:
        return "Triton CPU interpreter (no GPU on this machine)"
    return f"CUDA GPU: {torch.cuda.get_device_name()}"


def next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def check_shapes(name: str, q, k, v, *, allow_gqa: bool = False) -> None:
    """Types, ranks, dtypes, devices and shapes of (q, k, v), shared by every kernel
    and the reference: q (..., Nq, D), k and v (..., Nk, D). With ``allow_gqa`` the
    dimension just before Nq (heads) of q may be a multiple of k's and v's.
    """
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(
                f"{name}: {arg} must have at least 2 dims (..., N, D), got shape {tuple(t.shape)}"
            )
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name}: {arg} must be a floating-point tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(
            f"{name}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    if not (q.device == k.device == v.device):
        raise ValueError(
            f"{name}: q, k and v must be on one device, got {q.device}, {k.device}, {v.device}"
        )

    d = q.shape[-1]
    if k.shape[-1] != d or v.shape[-1] != d:
        raise ValueError(
            f"{name}: head dims differ: q has D={d}, k has D={k.shape[-1]}, v has D={v.shape[-1]}"
        )
    if d == 0:
        raise ValueError(f"{name}: head dim D must be at least 1, got 0")
    if d > MAX_HEAD_DIM:
        raise ValueError(f"{name}: head dim D={d} is above the supported maximum {MAX_HEAD_DIM}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"{name}: k and v must have the same length, got Nk={k.shape[-2]} and {v.shape[-2]}"
        )
    if k.shape[-2] == 0:
        raise ValueError(f"{name}: k and v are empty (Nk=0): softmax over no keys is undefined")
    if k.shape[:-2] != v.shape[:-2]:
        raise ValueError(
            f"{name}: k and v leading dims differ: {tuple(k.shape[:-2])} vs {tuple(v.shape[:-2])}"
        )
    lq, lk = tuple(q.shape[:-2]), tuple(k.shape[:-2])
    if lq != lk:
        gqa_ok = (
            allow_gqa
            and len(lq) == len(lk)
            and len(lq) >= 1
            and lq[:-1] == lk[:-1]
            and lk[-1] > 0
            and lq[-1] % lk[-1] == 0
        )
        if not gqa_ok:
            hint = (
                " (grouped-query attention needs q heads to be a multiple of k/v heads)"
                if allow_gqa
                else ""
            )
            raise ValueError(
                f"{name}: leading (batch, head) dims of q {lq} and k/v {lk} must match{hint}"
            )



def check_attention_inputs(
    name: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    scale: float | None,
    *,
    allow_gqa: bool = False,
) -> float:
    """Validate (q, k, v, causal, scale) for kernel ``name``; return the softmax scale.

    Adds to ``check_shapes`` what only the Triton kernels need: a supported dtype, a
    device the current mode can run on, a bool ``causal`` and a finite ``scale``.
    """
    check_shapes(name, q, k, v, allow_gqa=allow_gqa)
    if not isinstance(causal, bool):
        raise TypeError(f"{name}: causal must be a bool, got {type(causal).__name__}")
    if q.dtype not in supported_dtypes():
        where = "under the Triton CPU interpreter" if INTERPRET else "on the GPU"
        ok = ", ".join(str(t).replace("torch.", "") for t in supported_dtypes())
        raise TypeError(f"{name}: dtype {q.dtype} is not supported {where}; use one of {ok}")
    if q.device.type == "cpu" and not INTERPRET:
        raise ValueError(
            f"{name}: tensors are on the CPU but Triton is compiling for the GPU; move them "
            "to 'cuda', or set TRITON_INTERPRET=1 before importing kernels"
        )
    if INTERPRET and (problem := interpreter_problem()):
        raise RuntimeError(f"{name}: {problem}")
    if q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: device {q.device} is not supported (cpu or cuda only)")
    check_slice_spans(name, q=q, k=k, v=v)
    slices = math.prod(q.shape[:-2])
    if slices > MAX_GRID_Y:
        # Every kernel puts the (batch, head) slices on the launch grid's second axis.
        raise ValueError(f"{name}: {slices} (batch, head) slices in q {tuple(q.shape)}; a launch grid holds at "
                         f"most {MAX_GRID_Y} along that axis: split the batch")

    if scale is None:
        return 1.0 / math.sqrt(q.shape[-1])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{name}: scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"{name}: scale must be finite, got {scale}")
    return float(scale)


def check_slice_spans(name: str, **tensors: torch.Tensor) -> None:
    """Batch and head offsets are 64-bit in every kernel; offsets inside one (batch, head)
    slice, row * stride_n + d * stride_d, stay 32-bit because they sit in the hot loop. So
    the largest offset inside a slice of each (..., N, D) tensor must fit in an int32."""
    for arg, t in tensors.items():
        span = sum((size - 1) * abs(stride) for size, stride in zip(t.shape[-2:], t.stride()[-2:]))
        if span > INT32_MAX:
            raise ValueError(
                f"{name}: one (batch, head) slice of {arg} spans {span + 1} elements (shape {tuple(t.shape)}, "
                f"strides {t.stride()}); offsets inside a slice are 32-bit, so it must span at most 2**31: "
                "make the tensor contiguous or split the sequence")


def as_batch_heads(t: torch.Tensor) -> torch.Tensor:
    """View ``t`` (..., N, D) as 4-D (B, H, N, D) without copying when possible.

    Up to two leading dims map to (B, H) and keep their strides, so transposed
    (B, N, H, D) views run without a copy; more leading dims are merged into B
    (a copy only if they cannot be merged as a view).
    """
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t[None]
    if t.dim() == 4:
        return t
    return t.reshape(-1, *t.shape[-3:])


# KERNELS_POISON_OUTPUTS=1 (the tests set it) makes every output buffer start as NaN: an
# element a kernel forgot to write then fails the comparison instead of passing by luck.
POISON_OUTPUTS = SETTINGS.poison_outputs


def new_output(shape, *, dtype, device) -> torch.Tensor:
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- variants (post 6)


def check_window(name: str, window_size) -> tuple[int, int] | None:
    """FlashAttention's ``window_size=(left, right)``, -1 = unbounded; None when both are -1."""
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise TypeError(f"{name}: window_size must be a pair (left, right), got {window_size!r}")
    for side, w in zip(("left", "right"), window_size):
        if isinstance(w, bool) or not isinstance(w, int):
            raise TypeError(f"{name}: window_size {side} must be an int, got {type(w).__name__}")
        if w < -1:
            raise ValueError(f"{name}: window_size {side} must be >= -1 (-1 = unbounded), got {w}")
    left, right = int(window_size[0]), int(window_size[1])
    return None if (left, right) == (-1, -1) else (left, right)


def check_softcap(name: str, softcap) -> float:
    """The soft cap c of c * tanh(s / c): a finite float >= 0, 0 meaning off."""
    if isinstance(softcap, bool) or not isinstance(softcap, (int, float)):
        raise TypeError(f"{name}: softcap must be a float, got {type(softcap).__name__}")
    if not math.isfinite(softcap) or softcap < 0:
        raise ValueError(f"{name}: softcap must be finite and >= 0 (0 = off), got {softcap}")
    return float(softcap)


def check_alibi_slopes(name: str, slopes, batch: int, heads: int, device) -> torch.Tensor | None:
    """ALiBi slopes: fp32 (heads,) or (batch, heads) on the inputs' device."""
    if slopes is None:
        return None
    if not isinstance(slopes, torch.Tensor):
        raise TypeError(f"{name}: alibi_slopes must be a torch.Tensor or None, got {type(slopes).__name__}")
    if slopes.dtype != torch.float32:
        raise TypeError(f"{name}: alibi_slopes must be float32 (as FlashAttention's), got {slopes.dtype}")
    if tuple(slopes.shape) not in ((heads,), (batch, heads)):
        raise ValueError(f"{name}: alibi_slopes must have shape ({heads},) or ({batch}, {heads}) (query heads), "
                         f"got {tuple(slopes.shape)}")
    if slopes.device != torch.device(device):
        raise ValueError(f"{name}: alibi_slopes is on {slopes.device} but q on {device}")
    return slopes


def check_sinks(name: str, sinks, heads: int, device) -> torch.Tensor | None:
    """Attention sinks: one floating-point logit per query head, (heads,), on the inputs' device."""
    if sinks is None:
        return None
    if not isinstance(sinks, torch.Tensor):
        raise TypeError(f"{name}: sinks must be a torch.Tensor or None, got {type(sinks).__name__}")
    if not sinks.dtype.is_floating_point:
        raise TypeError(f"{name}: sinks must be floating point, got {sinks.dtype}")
    if tuple(sinks.shape) != (heads,):
        raise ValueError(f"{name}: sinks must have shape ({heads},), one logit per query head, "
                         f"got {tuple(sinks.shape)}")
    if sinks.device != torch.device(device):
        raise ValueError(f"{name}: sinks is on {sinks.device} but q on {device}")
    return sinks
