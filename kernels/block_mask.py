"""Block-sparse masks: which key blocks each query block visits, built once from a ``mask_mod``.

``block_mask(mask_mod, B, H, N_q, N_k, block=128)`` evaluates ``mask_mod(b, h, q_idx, kv_idx)``,
a ``@triton.jit`` function returning True where query ``q_idx`` may see key ``kv_idx``, over
every (block x block) tile of the score matrix, in a small Triton kernel, and sorts each tile
into one of three kinds:

- FULL: every (query, key) pair of the tile is kept: the attention kernel runs it unmasked;
- PARTIAL: some are: the attention kernel calls ``mask_mod`` inside it;
- absent: none are: the attention kernel never visits it.

The mask is evaluated by Triton (not by PyTorch on index tensors) because the attention kernel
calls the same function in partial blocks: the build and the kernel then agree by
construction, and ``mask_mod`` may use anything a kernel can (``tl.load`` of a document-id
table passed as ``aux``, ``tl.where``...). Building costs one pass over the N_q x N_k pairs;
``block_mask`` caches the result per (mask_mod, sizes, block, device, aux tensor and its version),
so a training loop builds each mask once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .settings import SETTINGS

BLOCKS = (64, 128, 256)  # every forward and backward tile table has entries dividing these
ABSENT, PARTIAL, FULL = 0, 1, 2
CACHE_SIZE = 64
try:  # under the interpreter @triton.jit returns an InterpretedFunction
    from triton.runtime.interpreter import InterpretedFunction

    JIT_TYPES: tuple = (triton.runtime.JITFunction, InterpretedFunction)
except ImportError:  # pragma: no cover - depends on the installed Triton
    JIT_TYPES = (triton.runtime.JITFunction,)


@triton.jit
def block_kind_kernel(
    kind_ptr, aux_ptr,
    N_Q, N_K, H, Q_BLOCKS, K_BLOCKS,
    MASK_MOD: tl.constexpr, HAS_MASK_AUX: tl.constexpr, BLOCK: tl.constexpr, SUB: tl.constexpr,
):
    # One program per (b, h, query block, key block); it walks its tile in (SUB x SUB) pieces
    # so a block of 256 does not need 64k registers' worth of mask at once.
    kb = tl.program_id(0)
    qb = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    b = bh // H
    h = bh % H
    # Counts per position of the (SUB, SUB) piece, summed once at the end (type-stable loop carries).
    n_keep = tl.zeros((SUB, SUB), tl.int32)
    n_valid = tl.zeros((SUB, SUB), tl.int32)
    for i in range(0, BLOCK, SUB):
        rows = qb * BLOCK + i + tl.arange(0, SUB)
        for j in range(0, BLOCK, SUB):
            cols = kb * BLOCK + j + tl.arange(0, SUB)
            # Pairs past the matrix's edge are not part of the tile: they decide nothing.
            valid = (rows < N_Q)[:, None] & (cols < N_K)[None, :]
            # Clamped indices: a mask_mod that loads from a per-token table stays inside it.
            r = tl.minimum(rows, N_Q - 1)[:, None]
            c = tl.minimum(cols, N_K - 1)[None, :]
            if HAS_MASK_AUX:
                keep = MASK_MOD(b, h, r, c, aux_ptr)
            else:
                keep = MASK_MOD(b, h, r, c)
            keep = keep & valid
            n_keep += keep.to(tl.int32)
            n_valid += valid.to(tl.int32)
    kept = tl.sum(tl.sum(n_keep, axis=1), axis=0)
    seen = tl.sum(tl.sum(n_valid, axis=1), axis=0)
    kind = tl.where(kept == 0, 0, tl.where(kept == seen, 2, 1))
    tl.store(kind_ptr + (bh * Q_BLOCKS + qb) * K_BLOCKS + kb, kind.to(tl.int8))


# ----------------------------------------------------------------------------- ready-made mask_mods


@triton.jit
def causal(b, h, q_idx, kv_idx):
    # Query i sees keys j <= i.
    return q_idx >= kv_idx


@triton.jit
def prefix_lm(b, h, q_idx, kv_idx, prefix_ptr):
    # Bidirectional over batch row b's first prefix_ptr[b] tokens, causal after them.
    return (kv_idx <= q_idx) | (kv_idx < tl.load(prefix_ptr + b))


@triton.jit
def packed_documents(b, h, q_idx, kv_idx, doc_ptr):
    # Causal within each document; doc_ptr is ``document_aux(doc_ids)``: N, then each row's ids.
    n = tl.load(doc_ptr)
    row = doc_ptr + 1 + b * n
    return (tl.load(row + q_idx) == tl.load(row + kv_idx)) & (q_idx >= kv_idx)


def document_aux(doc_ids: torch.Tensor) -> torch.Tensor:
    """The ``aux`` of ``packed_documents`` from (B, N) document ids: int32 [N, ids of row 0, row 1, ...]."""
    if doc_ids.dim() != 2:
        raise ValueError(f"document_aux: doc_ids must be (B, N), got shape {tuple(doc_ids.shape)}")
    head = torch.tensor([doc_ids.shape[1]], dtype=torch.int32, device=doc_ids.device)
    return torch.cat([head, doc_ids.reshape(-1).to(torch.int32)])


@dataclass(frozen=True, eq=False)
class BlockMask:
    """Per (b, h, query block) the key blocks to visit, and the transpose for the dK/dV pass.

    ``kind``: (B, H, q_blocks, kv_blocks) int8, ``ABSENT`` / ``PARTIAL`` / ``FULL``.
    ``kv_num``: (B, H, q_blocks, 2) int32, (number of FULL, number of PARTIAL) key blocks;
    ``kv_idx``: (B, H, q_blocks, kv_blocks) int32, the FULL key blocks in order, then the
    PARTIAL ones, then padding. ``q_num`` / ``q_idx``: the same per key block, over query
    blocks. B or H of 1 applies to every batch row or head (``mask_mod`` is then called with
    b = 0 or h = 0 and must not depend on it). ``aux``: the tensor handed to ``mask_mod`` as its
    fifth argument (a pointer), or None.
    """

    mask_mod: object
    B: int
    H: int
    N_q: int
    N_k: int
    block: int
    aux: torch.Tensor | None
    kind: torch.Tensor
    kv_num: torch.Tensor
    kv_idx: torch.Tensor
    q_num: torch.Tensor
    q_idx: torch.Tensor

    @property
    def q_blocks(self) -> int:
        return self.kind.shape[2]

    @property
    def kv_blocks(self) -> int:
        return self.kind.shape[3]

    @property
    def device(self) -> torch.device:
        return self.kind.device

    def counts(self) -> dict[str, int]:
        """How many (b, h, query block, key block) tiles are full, partial and absent."""
        return {name: int((self.kind == k).sum()) for name, k in (("full", FULL), ("partial", PARTIAL),
                                                                 ("absent", ABSENT))}

    def density(self) -> float:
        """The fraction of tiles the attention kernel visits (full or partial)."""
        return float((self.kind != ABSENT).float().mean())

    def check(self, name: str, B: int, H: int, N_q: int, N_k: int, device) -> None:
        """Raise ValueError unless this mask applies to (B, H, N_q, N_k) inputs on ``device``."""
        if (self.N_q, self.N_k) != (N_q, N_k) or self.B not in (1, B) or self.H not in (1, H):
            raise ValueError(f"{name}: block_mask was built for B={self.B}, H={self.H}, N_q={self.N_q}, "
                             f"N_k={self.N_k}, but the inputs have B={B}, H={H} (query heads), N_q={N_q}, "
                             f"N_k={N_k} (B and H may be 1 in the mask)")
        if torch.device(device) != self.device:
            raise ValueError(f"{name}: block_mask lives on {self.device} but the inputs on {device}")


def _lists(kind: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # (num, idx) over the last axis: FULL blocks first, then PARTIAL, each in increasing order.
    order = torch.where(kind == FULL, 0, torch.where(kind == PARTIAL, 1, 2)).to(torch.int8)
    idx = torch.sort(order, dim=-1, stable=True).indices.to(torch.int32).contiguous()
    num = torch.stack([(kind == FULL).sum(-1), (kind == PARTIAL).sum(-1)], dim=-1).to(torch.int32).contiguous()
    return num, idx


_CACHE: OrderedDict = OrderedDict()


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"block_mask: {name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"block_mask: {name} must be >= {low}, got {value}")
    return value


def block_mask(mask_mod, B: int, H: int, N_q: int, N_k: int, *, block: int = 128, device=None,
               aux: torch.Tensor | None = None) -> BlockMask:
    """The ``BlockMask`` of ``mask_mod`` at these sizes; the same arguments return the same object.

    ``mask_mod(b, h, q_idx, kv_idx)``: a ``@triton.jit`` function; q_idx and kv_idx are int
    tensors that broadcast against each other ((rows, 1) and (1, cols); the dK/dV kernel passes
    (1, rows) and (cols, 1)), b and h scalars; it returns their broadcast bool tile (True = keep),
    so it must be elementwise. With ``aux``
    (a tensor on ``device``) it is called as ``mask_mod(b, h, q_idx, kv_idx, aux_ptr)`` and may
    ``tl.load`` from it (a document id per token, a prefix length per batch row). B, H: the
    inputs' batch and query heads, or 1 for a mask shared by all. ``block``: the block size of
    both axes, one of ``BLOCKS``. ``device`` defaults to the GPU, or the CPU under the
    interpreter.

    Caching (a training loop builds each mask once): the same arguments, with ``aux`` the same
    tensor object, return the same ``BlockMask``. The mask is a snapshot of ``aux`` at build
    time, as a FlexAttention ``BlockMask`` is of the tensors its ``mask_mod`` reads: a write
    into ``aux`` that PyTorch sees (``aux[i] = x``, ``aux.copy_(...)``, any in-place op on it or
    on a view of it) bumps its version and the next call builds anew. Writes PyTorch cannot see
    (a Triton kernel's ``tl.store``, NumPy or DLPack aliases, ``aux.data``) are not detected:
    after one, call ``clear_cache()`` or pass a new tensor. Do not write into ``aux`` while a
    mask built from it is still in use: the attention kernel reads ``aux`` again in partial
    blocks, and the block lists would no longer match it.
    """
    if not isinstance(mask_mod, JIT_TYPES):
        raise TypeError(f"block_mask: mask_mod must be a @triton.jit function, got {type(mask_mod).__name__}")
    B, H = _check_int("B", B, 1), _check_int("H", H, 1)
    N_q, N_k = _check_int("N_q", N_q, 1), _check_int("N_k", N_k, 1)
    if block not in BLOCKS:
        raise ValueError(f"block_mask: block must be one of {BLOCKS}, got {block!r}")
    if device is None:
        device = torch.device("cpu") if SETTINGS.interpret else torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cpu" and not SETTINGS.interpret:
        raise ValueError("block_mask: device is the CPU but Triton is compiling for the GPU")
    if aux is not None:
        if not isinstance(aux, torch.Tensor):
            raise TypeError(f"block_mask: aux must be a torch.Tensor or None, got {type(aux).__name__}")
        if aux.device != device:
            raise ValueError(f"block_mask: aux is on {aux.device} but the mask is built on {device}")
    given = aux
    key = (mask_mod, B, H, N_q, N_k, block, str(device), _aux_key(aux))
    version = _version(aux)
    hit = _CACHE.get(key)
    if hit is not None:
        mask, held, built_version = hit
        # The entry holds the caller's tensor, so its memory cannot be freed and handed to another
        # tensor at the same address; the version counter catches every write PyTorch makes to it.
        if held is given and version is not None and version == built_version:
            _CACHE.move_to_end(key)
            return mask
        del _CACHE[key]
    if aux is not None:
        aux = aux.contiguous()
    q_blocks, kv_blocks = triton.cdiv(N_q, block), triton.cdiv(N_k, block)
    kind = torch.empty((B, H, q_blocks, kv_blocks), dtype=torch.int8, device=device)
    block_kind_kernel[(kv_blocks, q_blocks, B * H)](
        kind, aux if aux is not None else kind, N_q, N_k, H, q_blocks, kv_blocks,
        MASK_MOD=mask_mod, HAS_MASK_AUX=aux is not None, BLOCK=block, SUB=min(block, 64))
    kv_num, kv_idx = _lists(kind)
    q_num, q_idx = _lists(kind.transpose(-1, -2))
    mask = BlockMask(mask_mod, B, H, N_q, N_k, block, aux, kind, kv_num, kv_idx, q_num, q_idx)
    if aux is None or version is not None:  # an inference tensor has no version: never cached
        _CACHE[key] = (mask, given, version)
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return mask


def _aux_key(aux: torch.Tensor | None):
    # The caller's tensor itself (address, layout, dtype), before any contiguous() copy: the same
    # tensor passed again finds its entry. Its contents are checked by version, not key.
    if aux is None:
        return None
    return (id(aux), aux.data_ptr(), aux.storage_offset(), tuple(aux.shape), aux.stride(), aux.dtype)


def _version(aux: torch.Tensor | None):
    # PyTorch's in-place write counter (shared by every view of the storage); None for the
    # inference-mode tensors that have none.
    if aux is None:
        return 0
    try:
        return aux._version
    except RuntimeError:
        return None


def clear_cache() -> None:
    """Forget every built mask (the next ``block_mask`` call builds anew)."""
    _CACHE.clear()
