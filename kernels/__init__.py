"""Attention kernels in Triton, from a first naive kernel to FlashAttention-class Hopper kernels.

Every public kernel has the signature ``fn(q, k, v, *, causal=False, scale=None)`` with q of
shape (..., Nq, D) and k, v of shape (..., Nk, D). ``flash_attention`` is the router over
post 3's pointer kernel, the split-K forward and post 5's Gluon kernels; ``plan`` says which
kernel runs each pass and why. On a machine without a CUDA GPU, importing this package switches
Triton to its CPU interpreter.

Post 6's variants take FlashAttention's names: ``flash_attention(..., window_size=, softcap=,
alibi_slopes=, sinks=, block_mask=)``, ``flash_attention_varlen`` for packed documents, and
``block_mask(mask_mod, B, H, N_q, N_k)`` for block-sparse masks (``kernels/variants.py``,
``kernels/varlen.py``, ``kernels/block_mask.py``).

Imports run one way: ``settings`` <- ``runtime`` <- ``tiles``, ``launch`` <- the kernels
(``basic``, ``vectorized``, ``flash``, ``splitk``, ``gluon``, ``ablation``, ``experiments``)
<- ``attention`` (the router) <- ``varlen``; ``variants`` (post 6's kernels) and ``block_mask``
sit beside ``flash``.
"""

from .settings import INTERPRET, SETTINGS  # first: picks the mode before any kernel is decorated
from .runtime import mode_description, supported_dtypes
from .attention import BACKENDS, Plan, flash_attention, plan
from .basic import basic_attention
from .block_mask import BlockMask, block_mask
from .reference import reference_attention, reference_attention_varlen
from .varlen import flash_attention_varlen
from .vectorized import MAX_TILE_ELEMENTS, vectorized_attention

KERNELS = {
    "basic": basic_attention,
    "vectorized": vectorized_attention,
    "flash": flash_attention,
}

__all__ = [
    "BACKENDS",
    "BlockMask",
    "INTERPRET",
    "KERNELS",
    "MAX_TILE_ELEMENTS",
    "Plan",
    "SETTINGS",
    "basic_attention",
    "block_mask",
    "flash_attention",
    "flash_attention_varlen",
    "mode_description",
    "plan",
    "reference_attention",
    "reference_attention_varlen",
    "supported_dtypes",
    "vectorized_attention",
]
