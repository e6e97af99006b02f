"""How many bytes each design moves through global memory, and how many FLOPs it does.

A model written down, not a measurement; the posts set it beside measured times.
Two counts for each design:

* ``requested``: bytes the kernel's loads and stores ask of global memory. Re-reads
  count every time; the L2 cache may serve some of them, so this is the traffic the
  memory system must *handle*, an upper bound on DRAM traffic.
* ``compulsory``: bytes that must cross DRAM at least once: Q, K, V read once and O
  written once (plus whatever the design writes out and reads back, like the score
  matrix of eager PyTorch, which is far too large to stay in cache at long N).

FLOPs follow the FlashAttention convention: forward 4·Nq·Nk·D per head (two
matrix products of 2·Nq·Nk·D each), halved when causal; backward 2.5x forward.
Softmax arithmetic (exp, max, sum) is not counted, as in the papers.

Per design, per (batch, head), with e bytes per element and Nk_i the keys query i
sees (Nk, or min(i+1, Nk) when causal):

* basic: each query reads its q row, walks the keys three times (max, sum, weighted
  sum) and the values once: e·D·(1 + 3·Nk_i + Nk_i) read, e·D written.
* vectorized: each query reads its q row and loads all Nk keys and values once:
  e·D·(1 + 2·Nk) read (the causal mask is applied after the load, so a causal
  query still loads every key), e·D written. Every query re-reads all of K and V:
  the 2·Nq·Nk·D·e total is the same order as basic's; only the number of load
  instructions went down.
* flash: each BLOCK_M-row query tile reads its Q tile once and streams the K and V
  tiles it needs: ceil(Nq / BLOCK_M) passes over K and V (about half of them when
  causal, as tiles past the diagonal are skipped), plus O and the fp32 row
  statistics (log-sum-exp) written once.
* eager PyTorch (softmax(Q Kᵀ) V, materialised): Q, K read; S (Nq·Nk) written; S
  read and P written by softmax; P and V read; O written. S and P are in the input
  dtype.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def element_bytes(dtype: str) -> int:
    """Bytes per element of a dtype named as the benchmark records name it ('float16')."""
    if dtype not in ELEMENT_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(ELEMENT_BYTES)}")
    return ELEMENT_BYTES[dtype]


@dataclass(frozen=True)
class Traffic:
    design: str
    bytes_read: int  # requested by loads
    bytes_written: int  # requested by stores
    compulsory_bytes: int  # must cross DRAM at least once
    flops: int  # FlashAttention convention

    @property
    def bytes_total(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """FLOPs per requested byte (the roofline's x axis uses compulsory bytes instead)."""
        return self.flops / self.bytes_total

    def as_dict(self) -> dict:
        return {**asdict(self), "bytes_total": self.bytes_total}


def _check_sizes(**sizes) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def attention_flops(nq: int, nk: int, d: int, *, heads: int = 1, causal: bool = False, backward: bool = False) -> int:
    """4·Nq·Nk·D per head forward (half if causal); backward 2.5x that."""
    _check_sizes(nq=nq, nk=nk, d=d, heads=heads)
    f = 4 * heads * nq * nk * d
    if causal:
        f //= 2
    return int(f * 2.5) if backward else f


def _keys_seen(nq: int, nk: int, causal: bool) -> int:
    """Sum over queries of the keys each one attends to."""
    if not causal:
        return nq * nk
    full = max(0, nq - nk)  # queries at i >= nk see all nk keys
    tri = min(nq, nk)  # queries i < nk see i + 1 keys
    return tri * (tri + 1) // 2 + full * nk


def compulsory_bytes(nq: int, nk: int, d: int, *, elem_bytes: int = 4, heads: int = 1) -> int:
    """Q, K, V read once and O written once: the least any design must move."""
    _check_sizes(nq=nq, nk=nk, d=d, elem_bytes=elem_bytes, heads=heads)
    return heads * elem_bytes * d * (2 * nq + 2 * nk)


def basic(nq, nk, d, *, elem_bytes=4, heads=1, causal=False) -> Traffic:
    seen = _keys_seen(nq, nk, causal)
    read = heads * elem_bytes * d * (nq + 4 * seen)
    return Traffic("basic", read, heads * elem_bytes * nq * d,
                   compulsory_bytes(nq, nk, d, elem_bytes=elem_bytes, heads=heads),
                   attention_flops(nq, nk, d, heads=heads, causal=causal))


def vectorized(nq, nk, d, *, elem_bytes=4, heads=1, causal=False) -> Traffic:
    read = heads * elem_bytes * d * (nq + 2 * nq * nk)
    return Traffic("vectorized", read, heads * elem_bytes * nq * d,
                   compulsory_bytes(nq, nk, d, elem_bytes=elem_bytes, heads=heads),
                   attention_flops(nq, nk, d, heads=heads, causal=causal))


def flash(nq, nk, d, *, elem_bytes=4, heads=1, causal=False, block_m=128, block_n=64) -> Traffic:
    """Forward pass of the tiled kernel with BLOCK_M x BLOCK_N tiles."""
    _check_sizes(block_m=block_m, block_n=block_n)
    tiles_m = math.ceil(nq / block_m)
    kv_rows = 0
    for i in range(tiles_m):
        hi = min(nk, (i + 1) * block_m) if causal else nk
        kv_rows += min(nk, math.ceil(hi / block_n) * block_n)  # whole tiles are loaded (masked tail aside)
    read = heads * elem_bytes * d * (nq + 2 * kv_rows)
    written = heads * (elem_bytes * nq * d + 4 * nq)  # O, plus the fp32 log-sum-exp per row
    compulsory = compulsory_bytes(nq, nk, d, elem_bytes=elem_bytes, heads=heads) + heads * 4 * nq
    return Traffic("flash", read, written, compulsory,
                   attention_flops(nq, nk, d, heads=heads, causal=causal))


def eager(nq, nk, d, *, elem_bytes=4, heads=1, causal=False) -> Traffic:
    s = nq * nk * elem_bytes
    read = heads * (elem_bytes * d * (nq + 2 * nk) + 2 * s)  # Q, K, V; S by softmax; P by P@V
    written = heads * (2 * s + elem_bytes * nq * d)  # S, P, O
    compulsory = compulsory_bytes(nq, nk, d, elem_bytes=elem_bytes, heads=heads) + heads * 4 * s  # S and P round trips
    return Traffic("eager", read, written, compulsory, attention_flops(nq, nk, d, heads=heads, causal=causal))


DESIGNS = {"basic": basic, "vectorized": vectorized, "flash": flash, "eager": eager}


def table(nq, nk, d, *, elem_bytes=4, heads=1, causal=False) -> list[dict]:
    """One row per design, for the posts' tables."""
    return [fn(nq, nk, d, elem_bytes=elem_bytes, heads=heads, causal=causal).as_dict() for fn in DESIGNS.values()]
