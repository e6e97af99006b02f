"""Numbers as the posts print them."""

from __future__ import annotations

import math


def _check(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value}")
    return float(value)


def ms(value: float) -> str:
    """A time given in milliseconds: '12.3 µs', '0.512 ms' or '18.4 ms'."""
    value = _check(value, "ms")
    return f"{value * 1e3:.1f} µs" if value < 0.1 else f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def size(n: int) -> str:
    """A sequence length: '512', '4k', '16k'."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"size must be a positive int, got {n!r}")
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def duration(value: float, unit: str) -> str:
    """A span of a timeline in its file's unit: ns as '12.3 µs', SM clock cycles as '45,678 cycles'."""
    value = _check(value, "duration")
    if unit == "ns":
        return f"{value / 1e3:.1f} µs"
    if unit == "cycles":
        return f"{value:,.0f} cycles"
    raise ValueError(f"unit must be 'ns' or 'cycles', got {unit!r}")
