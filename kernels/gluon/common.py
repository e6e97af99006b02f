"""What the Gluon Hopper kernels share: the Triton-version layer, layouts, descriptors, the ring.

- **Versions.** The supported range is Triton 3.6 to 3.9 (``pyproject.toml``). TMA's
  global-to-shared copy is ``tma.async_copy_global_to_shared`` in 3.6 and ``tma.async_load``
  (same leading arguments) in 3.9, where the old name only raises; ``tma_load`` is whichever
  exists. TMA's shared-to-global reduce-add is ``tma.async_atomic_add`` in 3.9; 3.6's Gluon API
  has no wrapper for it (its builder has the op), so ``tma_reduce_add`` is that wrapper there.
  ``scripts/compile_hopper.py --kernel all`` compiles every kernel, and these two, on both ends.
- **Layouts and descriptors**, computed once per shape.
- **Launch plans**: what a launch needs besides the data pointers (descriptor templates, grid,
  scalars, constexprs), built once per shape, dtype, strides, device and switch
  (``PlanCache``, ``LaunchPlan``); each call rebinds the templates to its tensors.
- **The ring.** Every kernel streams tiles through ``STAGES`` shared-memory stages guarded by
  "ready" and "empty" mbarriers. Tile ``t`` lives in stage ``t % STAGES`` and each stage is
  refilled every ``STAGES`` tiles, so the barrier's phase flips then: ``ring_slot`` is that rule,
  ``ring_wait`` waits for tile ``t``, ``ring_free`` waits as a producer for the stage to be free.
- **The schedule's constants**: 64 rows per consumer warpgroup, and the register split.

Nothing here runs in Triton's CPU interpreter; ``gluon_problem`` says why a call cannot run.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from ..settings import SETTINGS

try:  # Gluon's Hopper API (Triton >= 3.5); absent or different elsewhere.
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    GLUON_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the installed Triton
    GLUON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

__all__ = [
    "GLUON_IMPORT_ERROR", "HEAD_DIMS", "LOG2E", "MAXNREG", "PRODUCER_REGS", "CONSUMER_REGS", "ROWS",
    "LaunchPlan", "PlanCache", "TensorDescriptor", "acc_layout", "descriptor", "rebind", "tensor_key", "fence_async_shared", "gl", "gluon", "gluon_problem",
    "mbarrier", "ring_barriers", "ring_free", "ring_slot", "ring_wait", "row_descriptor", "smem_layout", "tma", "tma_load",
    "tma_reduce_add", "warpgroup_mma", "warpgroup_mma_wait",
]

LOG2E = 1.4426950408889634  # exp(x) == exp2(x * LOG2E)
ROWS = 64  # wgmma's M is 64 per warpgroup: 4 warps x 16 rows
HEAD_DIMS = (64, 128)
# Registers per thread: the producer warp needs a handful, the consumers take the rest.
PRODUCER_REGS = 24
CONSUMER_REGS = 240
MAXNREG = 168  # launch cap: (4 + 4 + 4 padded producer warps) * 32 threads * 168 <= 65536
TORCH_TO_GL = {}

if GLUON_IMPORT_ERROR is None:
    TORCH_TO_GL = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16}

    # The version layer: one name each, whatever the Triton.
    tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared

    if hasattr(tma, "async_atomic_add"):
        tma_reduce_add = tma.async_atomic_add
    else:
        from triton._C.libtriton import ir as _ir
        from triton.experimental.gluon.language._core import builtin as _builtin

        @_builtin
        def tma_reduce_add(tensor_desc, coord, src, _semantic=None):
            """TMA's shared-to-global reduce-add (PTX ``cp.reduce.async.bulk.tensor``, one bulk
            group, as ``tma.async_copy_shared_to_global``), Triton 3.6's missing wrapper."""
            coord = _semantic._convert_to_ir_values(coord, require_i64=False)
            _semantic.builder.create_async_tma_reduce(_ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord,
                                                      src.handle)

    @gluon.constexpr_function
    def acc_layout(cols):
        """wgmma's accumulator layout for one warpgroup's (64, cols) fp32 tile: its 4 warps
        stacked along the rows, 16 rows each."""
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, cols, 16])

    @gluon.jit
    def ring_slot(t, STAGES: gl.constexpr):
        """(stage, phase) of the t-th tile through a ring of STAGES stages."""
        return t % STAGES, (t // STAGES) & 1

    @gluon.jit
    def ring_wait(bars, t, STAGES: gl.constexpr):
        """Wait until tile t has landed in its stage (``bars``: one "ready" mbarrier per stage);
        returns the stage."""
        stage, phase = ring_slot(t, STAGES)
        mbarrier.wait(bars.index(stage), phase)
        return stage

    @gluon.jit
    def ring_barriers(STAGES: gl.constexpr):
        """The ring's mbarriers, initialised: two "ready" barriers per stage (a stage holds two
        tiles, which land separately so a consumer can start on the first) and one "empty" that
        both consumer warpgroups arrive on. Returns (ready_a, ready_b, empty)."""
        ready_a = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        ready_b = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(ready_a.index(i), count=1)  # the producer's expect + TMA bytes
            mbarrier.init(ready_b.index(i), count=1)
            mbarrier.init(empty.index(i), count=2)  # both consumers must let go of a stage
        return ready_a, ready_b, empty

    @gluon.jit
    def ring_free(empty, t, STAGES: gl.constexpr):
        """The producer's side: wait until tile t's stage has been let go of; returns the stage.
        A fresh mbarrier counts as having completed the phase before phase 0, so the first pass
        over the ring does not wait."""
        stage, phase = ring_slot(t, STAGES)
        mbarrier.wait(empty.index(stage), phase ^ 1)
        return stage
else:  # pragma: no cover
    tma_load = tma_reduce_add = acc_layout = ring_slot = ring_wait = ring_free = ring_barriers = None
    gluon = gl = mbarrier = tma = warpgroup_mma = warpgroup_mma_wait = fence_async_shared = None
    TensorDescriptor = None


@functools.cache
def smem_layout(dtype: torch.dtype, *block: int):
    """The swizzled shared-memory layout of a tile of ``block`` elements: computed once per shape."""
    gl_dtype = gl.float32 if dtype == torch.float32 else TORCH_TO_GL[dtype]
    return gl.NVMMASharedLayout.get_default_for(list(block), gl_dtype)


def descriptor(t2d: torch.Tensor, rows: int, cols: int | None = None):
    """A TMA descriptor over a 2-D tensor, copying (rows, cols) boxes (cols: every column)."""
    block = [rows, cols or t2d.shape[1]]
    return TensorDescriptor(t2d, list(t2d.shape), list(t2d.stride()), block, smem_layout(t2d.dtype, *block))


def row_descriptor(t1d: torch.Tensor, rows: int = ROWS):
    """A TMA descriptor over a flat per-row fp32 statistic, one ``rows``-row tile per copy."""
    return TensorDescriptor(t1d, [t1d.shape[0]], [1], [rows], smem_layout(t1d.dtype, rows))


# ----------------------------------------------------------------------------- launch plans
#
# A call's host time went mostly to Python that gives the same answer every call of one shape:
# three to six TensorDescriptors built and validated, their layouts hashed into the direct
# launcher's key, the grid and the argument lists (PERF_NOTES.md, session 6/7: 64 us per forward
# call with the direct launch, 131 us without). A ``LaunchPlan`` holds all of that for one key.
# What it may not hold is a data pointer: a descriptor carries its tensor (``base``), and a
# TMA descriptor encodes the address, so Triton's launcher encodes it again on every launch
# from the descriptor's base, shape and strides. ``rebind`` makes a call's descriptor from the
# plan's template by swapping the base, which skips the constructor's checks; that is safe
# because every check it makes reads the shape, strides, dtype, block and layout (equal by the
# key, and checked when the template was built) except the base's 16-byte alignment, which
# ``rebind`` checks itself (and the 32-byte alignment of fp4-padded layouts, which these
# kernels never use).


def tensor_key(t: torch.Tensor) -> tuple:
    """What a launch plan may depend on in one tensor: everything but where its data is (the type
    too, so an object that only looks like a tensor never shares a plan with one). Raises
    AttributeError or TypeError on something that is not tensor-like at all."""
    return (type(t), t.dtype, t.device, t.shape, t.stride())


# Rebinding copies the template's fields; a TensorDescriptor without a __dict__ (a Triton that
# made it a slotted dataclass) is rebuilt through its constructor instead, checks and all.
_REBIND_FIELDS = TensorDescriptor is not None and "__dict__" in dir(TensorDescriptor) \
    and not hasattr(TensorDescriptor, "__slots__")


def template(desc):
    """A validated descriptor as a plan keeps it: the base replaced by an empty tensor of its
    dtype on the meta device, so a cached plan holds on to no caller's memory."""
    base = torch.empty(0, dtype=desc.base.dtype, device="meta")
    if _REBIND_FIELDS:
        kept = object.__new__(type(desc))
        kept.__dict__.update(desc.__dict__, base=base)
        return kept
    return dataclasses.replace(desc, base=base)  # pragma: no cover - (a meta tensor's address is 0: aligned)


def rebind(tmpl, base: torch.Tensor):
    """The descriptor ``tmpl`` (from ``template``) over ``base``'s memory. ``base`` must have the
    template's dtype and a 16-byte aligned address (TMA's rule; raises ValueError otherwise);
    its shape and strides are the caller's to match (the plan's key holds them)."""
    if base.dtype != tmpl.base.dtype:
        raise ValueError(f"rebind: a {tmpl.base.dtype} descriptor cannot take a {base.dtype} tensor")
    if base.data_ptr() % 16:
        raise ValueError("rebind: the tensor is not 16-byte aligned (TMA needs it)")
    if not _REBIND_FIELDS:  # pragma: no cover - depends on the installed Triton
        return dataclasses.replace(tmpl, base=base)
    desc = object.__new__(type(tmpl))
    desc.__dict__ = tmpl.__dict__.copy()
    desc.base = base
    return desc


@dataclasses.dataclass(frozen=True, eq=False)
class LaunchPlan:
    """One Gluon kernel's launch for one key, all but the pointers: descriptor templates (in the
    kernel's argument order), grid, runtime scalars, constexprs and launch options, all functions
    of ``key`` (the plan cache's). So the plan itself, with the pointer arguments' alignment, is
    the direct launcher's key: it hashes by identity (``eq=False``), in constant time, and an
    entry keeps its plan alive, so no other plan can take its place under the same identity."""

    key: tuple
    grid: tuple
    templates: tuple
    scalars: tuple
    constexprs: dict
    options: dict

    def launch(self, direct, name: str, kernel, bases: tuple, tensors: tuple):
        """``kernel[grid](*descriptors over bases, *tensors, *scalars, **constexprs, **options)``
        through ``direct`` (a ``launch.DirectLauncher``); returns the compiled kernel.
        ``tensors``: the pointer arguments (outputs, flat statistics); Triton specialises them on
        16-byte alignment, so the key carries each one's low four address bits."""
        descriptors = tuple(rebind(t, b) for t, b in zip(self.templates, bases))
        key = (self, *[t.data_ptr() & 15 for t in tensors])
        return direct(name, kernel, self.grid, tensors, self.scalars, self.constexprs,
                      descriptors=descriptors, options=self.options, key=key)


class PlanCache:
    """Launch plans by key. ``get(key)`` is the plan or None; ``put(key, plan)`` stores it. Past
    ``max_entries`` distinct keys the cache starts over (a workload cycling through more shapes
    than that rebuilds plans, which is what every call did before)."""

    def __init__(self, max_entries: int = 1024):
        self._plans: dict[tuple, LaunchPlan] = {}
        self._max_entries = max_entries

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: tuple) -> LaunchPlan | None:
        return self._plans.get(key)

    def put(self, key: tuple, plan: LaunchPlan) -> LaunchPlan:
        if len(self._plans) >= self._max_entries:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def clear(self) -> None:
        self._plans.clear()


@functools.cache
def device_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def gluon_problem(q4: torch.Tensor, k4: torch.Tensor, v4: torch.Tensor, *extra: tuple[str, torch.Tensor]) -> str | None:
    """Why the Gluon kernels cannot take these (B, H, N, D) inputs, or None if they can.
    ``extra``: more (name, tensor) pairs TMA reads like q (the backward's dO)."""
    if GLUON_IMPORT_ERROR is not None:
        return f"this Triton has no Gluon Hopper API ({GLUON_IMPORT_ERROR})"
    if SETTINGS.interpret:
        return "Gluon kernels do not run in Triton's CPU interpreter"
    if q4.device.type != "cuda":
        return "inputs are not on a CUDA device"
    capability = device_capability(q4.device.index or 0)
    if capability != (9, 0):
        return f"the GPU is sm{''.join(map(str, capability))}, not sm90 (Hopper)"
    if q4.dtype not in TORCH_TO_GL:
        return f"dtype {q4.dtype} (the kernels take float16 or bfloat16)"
    if q4.shape[-1] not in HEAD_DIMS:
        return f"head dim {q4.shape[-1]} (the kernels take {HEAD_DIMS})"
    for name, t in (("q", q4), ("k", k4), ("v", v4), *extra):
        if t.dim() != 4 or not t.is_contiguous():
            return f"{name} is not a contiguous (B, H, N, D) tensor"
        if t.data_ptr() % 16:
            return f"{name} is not 16-byte aligned (TMA needs it)"
    if q4.shape[0] * q4.shape[1] * q4.shape[2] + 2 * ROWS >= 2**31 or k4.shape[0] * k4.shape[1] * k4.shape[2] + 2 * ROWS >= 2**31:
        return "more than 2**31 rows: TMA coordinates are int32"
    return None
