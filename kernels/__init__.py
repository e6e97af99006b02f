"""Attention kernels in Triton, from a first naive kernel to FlashAttention-2.

Every public kernel has the signature ``fn(q, k, v, *, causal=False, scale=None)``
with q of shape (..., Nq, D) and k, v of shape (..., Nk, D). On a machine without
a CUDA GPU, importing this package switches Triton to its CPU interpreter.
"""

from .runtime import INTERPRET, mode_description, supported_dtypes  # first: picks the mode
from .basic import basic_attention
from .flash import flash_attention
from .reference import reference_attention
from .vectorized import MAX_TILE_ELEMENTS, vectorized_attention

KERNELS = {
    "basic": basic_attention,
    "vectorized": vectorized_attention,
    "flash": flash_attention,
}

__all__ = [
    "INTERPRET",
    "KERNELS",
    "MAX_TILE_ELEMENTS",
    "basic_attention",
    "flash_attention",
    "mode_description",
    "reference_attention",
    "supported_dtypes",
    "vectorized_attention",
]
