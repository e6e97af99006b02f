"""Every switch the kernels read from the environment, read once, into one frozen object.

Importing this module also decides whether Triton compiles for a CUDA GPU or runs kernels
through its CPU interpreter. ``@triton.jit`` reads ``TRITON_INTERPRET`` when each kernel is
*decorated*, so the decision must happen before any kernel module is imported;
``kernels/__init__.py`` imports this module first.

| variable | default | effect |
|---|---|---|
| ``TRITON_INTERPRET`` | unset: 1 without a CUDA GPU | run every Triton kernel in the CPU interpreter |
| ``KERNELS_AUTOTUNE`` | 1 | 0: the pointer kernels take the first tile of each table instead of autotuning |
| ``KERNELS_DIRECT_LAUNCH`` | 1 | 0: every launch goes through Triton's own launcher (``kernels/launch.py``) |
| ``KERNELS_GLUON`` | 1 | 0: the router never picks a Gluon kernel by itself (``backend="gluon"`` still does) |
| ``KERNELS_POISON_OUTPUTS`` | 0 | 1: every output buffer starts as NaN (the tests set it) |
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch


def _decide_interpret() -> bool:
    """True when kernels run through Triton's CPU interpreter."""
    flag = os.environ.get("TRITON_INTERPRET")
    if flag is None:
        if torch.cuda.is_available():
            return False
        # No GPU: pick the interpreter ourselves so pages and scripts need no setup.
        os.environ["TRITON_INTERPRET"] = "1"
        print(
            "kernels: no CUDA GPU found, running Triton kernels through the CPU "
            "interpreter (TRITON_INTERPRET=1); expect small sizes only.",
            file=sys.stderr,
        )
        return True
    return flag.strip().lower() in {"1", "true", "on", "yes"}


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip() != "0"


@dataclass(frozen=True)
class Settings:
    interpret: bool  # Triton's CPU interpreter instead of the GPU
    autotune: bool  # the pointer kernels time their candidate tiles
    direct_launch: bool  # launch compiled kernels through their own entry after the first call
    gluon: bool  # the router may pick the Gluon Hopper kernels by itself
    poison_outputs: bool  # output buffers start as NaN

    @classmethod
    def from_env(cls) -> "Settings":
        interpret = _decide_interpret()
        return cls(
            interpret=interpret,
            autotune=_flag("KERNELS_AUTOTUNE", True),
            direct_launch=not interpret and _flag("KERNELS_DIRECT_LAUNCH", True),
            gluon=_flag("KERNELS_GLUON", True),
            # Read once at import, so it holds in every thread (autograd runs backward on its own).
            poison_outputs=os.environ.get("KERNELS_POISON_OUTPUTS", "0") == "1",
        )


SETTINGS = Settings.from_env()
INTERPRET: bool = SETTINGS.interpret
