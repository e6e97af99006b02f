"""What the kernel tests share: the mode, devices and dtypes, inputs, and the error yardstick.

Imported by ``tests/conftest.py`` before anything imports ``kernels``: it sets
``KERNELS_POISON_OUTPUTS``, which the package reads once.
"""

from __future__ import annotations

import os
import zlib

# Every output buffer starts as NaN, so an element a kernel never wrote fails a test.
os.environ["KERNELS_POISON_OUTPUTS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from kernels.gluon import common as gluon_common  # noqa: E402

INTERPRET = kernels.INTERPRET
DEVICE = "cpu" if INTERPRET else "cuda"
if not INTERPRET and torch.cuda.device_count() > 1 and os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    # pytest -n on a host with several GPUs: worker gwK runs on GPU K mod count, so one run of the
    # suite spreads over every GPU ("cuda" then means that GPU for the worker's tests).
    torch.cuda.set_device(int(os.environ["PYTEST_XDIST_WORKER"][2:]) % torch.cuda.device_count())
DTYPES = [torch.float32, torch.float16] if INTERPRET else [torch.float32, torch.float16, torch.bfloat16]
# Where the Gluon Hopper kernels (kernels/gluon/) can run.
ON_HOPPER = (not INTERPRET and torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
             and gluon_common.GLUON_IMPORT_ERROR is None)
HOPPER_ONLY = pytest.mark.hopper  # skipped off Hopper by conftest.py




def seed_of(nodeid: str) -> int:
    """The seed of a test's inputs: a stable hash of its id (``hash()`` is salted per process)."""
    return zlib.crc32(nodeid.encode())


def rand(*shape, dtype=torch.float32, device=DEVICE, requires_grad=False):
    t = torch.randn(*shape, dtype=torch.float32, device=device).to(dtype)
    return t.requires_grad_(requires_grad)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def torch_lowp_attention(q, k, v, causal, scale):
    """PyTorch's own low-precision attention, the yardstick for fp16/bf16 error."""
    if q.shape[:-2] != k.shape[:-2]:
        g = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(g, dim=-3), v.repeat_interleave(g, dim=-3)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)


def tolerance(dtype: torch.dtype, ref: torch.Tensor, torch_err: float | None) -> float:
    """The largest max-abs error we accept for an output in ``dtype``.

    fp32: round-off of sums of up to a few hundred fp32 terms, 2e-5 relative to
    the output's magnitude (float32 eps is 1.2e-7; 257 terms give ~3e-5 worst case,
    typical far less). fp16/bf16 on the GPU: at most 2x PyTorch's own error
    against the float64 reference, plus one unit in the last place of the output
    (so an exactly-right PyTorch, e.g. Nk = 1, does not demand perfection).
    fp16 under the interpreter (PyTorch's CPU kernels there compute in fp32, so no
    fair yardstick): P is rounded to fp16 before P@V (relative 2^-11 per weight)
    and the output once more, so 2^-9 of the output's magnitude.
    """
    scale_ = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    if dtype == torch.float32:
        return 2e-5 * scale_
    ulp = torch.finfo(dtype).eps * scale_
    if torch_err is None:
        return 2.0**-9 * scale_
    return 2.0 * torch_err + ulp
