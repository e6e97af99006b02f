"""How the pointer kernels are launched: autotuning over a tile table, and the direct launcher.

``TunedKernel`` pairs a ``@triton.jit`` kernel with its candidate tiles (BLOCK_M, BLOCK_N,
num_warps, num_stages) per head dim and launches it: autotuned the first time per tuning key,
then with the winning config directly. ``DIRECT`` skips Triton's argument binding once a
specialisation has been compiled; the Gluon launchers use it too.
"""

from __future__ import annotations

import functools
import warnings

import triton

from .settings import SETTINGS

INTERPRETER_TILE = (32, 32)  # the interpreter cannot time configs: one tile unless a test forces another
TILE_FIELDS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")

# ----------------------------------------------------------------------------- direct launch
#
# Once a kernel is compiled, ``kernel[grid](...)`` still spends ~27 us of host time per call
# on the H100 box (binding ~40 arguments, specialising each, hashing a cache key); launching
# the compiled kernel itself takes ~9 us. At N = 1k that difference decides whether the GPU
# waits for the host. So after the first launch of a specialisation, later launches with the
# same specialisation go through the compiled kernel's own launch entry, ``compiled[grid](...)``:
# the call Triton's launcher makes itself, so profiler hooks and launch metadata stay Triton's.
# (Triton 3.6 keeps an empty hook chain installed, so that entry builds launch metadata on every
# call: a few us more than calling the launcher with no hooks, the price of not depending on its
# argument layout; see PERF_NOTES.md.)


def specialization(tensors: tuple, scalars: tuple, descriptors: tuple = ()) -> tuple:
    """A key at least as fine as what Triton specialises a compiled kernel on.

    Triton specialises tensors on dtype and 16-byte alignment of the pointer, ints on being
    1, divisible by 16, or beyond int32, and a Gluon tensor descriptor on its dtype, block
    shape and shared-memory layout. Here tensors key on dtype and the pointer's low four
    bits, descriptors on dtype, block shape, layout, shape and strides, and scalars on their
    exact values (cheaper to hash than to classify): equal keys always mean the same compiled
    kernel; a new key only costs one launch through Triton.
    """
    descs = [(d.base.dtype, *d.block_shape, repr(d.layout), *d.shape, *d.strides) for d in descriptors]
    return (*descs, *[(t.dtype, t.data_ptr() & 15) for t in tensors], *scalars)


def constexpr_params(kernel, n_args: int) -> tuple | None:
    """((name, default), ...) of the kernel's constexprs, if they all follow the ``n_args`` runtime
    parameters; else None. Called only when a specialisation is first seen, so not memoised."""
    params = list(kernel.params)
    tail = params[n_args:]
    ok = all(not p.is_constexpr for p in params[:n_args]) and all(p.is_constexpr for p in tail)
    return tuple((p.name, p.default) for p in tail) if ok else None


class DirectLauncher:
    """Launches a @triton.jit kernel through Triton the first time per specialisation, then
    through the compiled kernel's ``[grid]`` entry.

    ``enabled`` starts from the mode and ``KERNELS_DIRECT_LAUNCH``; if a direct launch ever
    fails (a Triton whose compiled-kernel entry takes its arguments differently), it warns
    once, turns itself off and every later launch takes Triton's own path.
    ``current_device`` returns the device index launches go to (Triton's current device).
    """

    def __init__(self, enabled: bool, current_device, max_entries: int = 4096):
        self.enabled = enabled
        self._current_device = current_device
        self._max_entries = max_entries  # distinct signatures kept; then the cache starts over
        self._compiled: dict[tuple, tuple] = {}  # key -> (compiled kernel, constexpr values in order)

    def __len__(self) -> int:
        return len(self._compiled)

    def __call__(self, name: str, kernel, grid: tuple, tensors: tuple, scalars: tuple, constexprs: dict,
                 descriptors: tuple = (), options: dict | None = None, key: tuple | None = None):
        """Launch ``kernel[grid](*descriptors, *tensors, *scalars, **constexprs, **options)``; returns
        the compiled kernel. ``descriptors`` are Gluon TensorDescriptors, the kernel's first
        arguments; ``options`` are launch options such as ``num_warps`` (part of the key).

        ``key``: a caller's own key for everything but the device, at least as fine as the one
        computed here (grid, constexprs, options and ``specialization``); the Gluon launchers
        pass their cached launch plan with their pointers' alignment (``gluon.common.LaunchPlan``),
        which saves hashing descriptor layouts on every call. None: computed here, as for the
        pointer kernels."""
        options = options or {}
        if not self.enabled:
            return kernel[grid](*descriptors, *tensors, *scalars, **constexprs, **options)
        if key is None:
            key = (name, self._current_device(), *grid, *constexprs.values(), *options.items(),
                   *specialization(tensors, scalars, descriptors))
        else:
            key = (name, self._current_device(), key)
        hit = self._compiled.get(key)
        if hit is not None:
            compiled, runner, consts = hit
            try:
                runner(*descriptors, *tensors, *scalars, *consts)
                return compiled
            except (TypeError, AttributeError, ValueError, IndexError) as exc:
                self.enabled = False
                self._compiled.clear()
                warnings.warn(f"kernels.launch: launching a compiled kernel directly failed ({exc!r}); "
                              "every later launch goes through Triton's own launcher (a few us slower per "
                              "call). Please report this with your Triton version.", RuntimeWarning,
                              stacklevel=2)
        compiled = kernel[grid](*descriptors, *tensors, *scalars, **constexprs, **options)
        n_args = len(descriptors) + len(tensors) + len(scalars)
        params = constexpr_params(kernel, n_args) if self.enabled else None
        if params is not None:
            if len(self._compiled) >= self._max_entries:
                self._compiled.clear()
            consts = tuple(constexprs.get(n, default) for n, default in params)
            # The grid is in the key, so the compiled kernel's launch entry for it is built once.
            self._compiled[key] = (compiled, compiled[(*grid, 1, 1)[:3]], consts)
        return compiled


DIRECT = DirectLauncher(
    enabled=SETTINGS.direct_launch,
    current_device=lambda: triton.runtime.driver.active.get_current_device(),
)

# ----------------------------------------------------------------------------- autotuned launch


class TunedKernel:
    """A @triton.jit kernel with BLOCK_M and BLOCK_N constexprs and its candidate tiles.

    ``tiles`` maps a padded head dim bucket (64, 128, 256) to candidates (BLOCK_M, BLOCK_N,
    num_warps, num_stages); configs that do not fit in shared memory (fp32, D = 256) are dropped
    by the autotuner itself. With ``SETTINGS.autotune`` off (``KERNELS_AUTOTUNE=0``) the first
    candidate is used, which keeps a test suite over many shapes from compiling every candidate
    for every shape.
    """

    def __init__(self, name: str, kernel, tiles: dict[int, list[tuple]],
                 key: tuple[str, ...] = ("TUNE_N", "HEAD_DIM", "IS_CAUSAL", "PRECISION")):
        self.name, self.kernel, self.tiles, self.key = name, kernel, tiles, key
        # The autotuner's pick per tuning key. After the first call for a key the kernel is
        # launched with that config directly: the autotuner rebuilds a dict of all ~30 arguments
        # on every call, the largest single item (about a third) in a profile of host time per
        # forward call on the H100.
        self.best: dict[tuple, dict] = {}

    def candidates(self, head_dim: int) -> list[tuple]:
        """The candidate tiles at padded head dim ``head_dim``; the first is the untuned tile."""
        return list(self.tiles[64 if head_dim <= 64 else 128 if head_dim <= 128 else 256])

    @functools.cache
    def autotuner(self, head_dim: int, tuned: bool):
        """The kernel wrapped in an autotuner over the candidates (or over the first one).

        Built lazily: constructing an autotuner must not happen at import on a machine
        with no GPU. ``cache_results``: the timings of each tuning key are written to
        Triton's cache directory (``TRITON_CACHE_DIR``, by default ``~/.triton/cache``, as
        ``*.autotune.json``), so a new process reuses the choice instead of re-timing
        every candidate; the cache key includes the kernel source and the candidates.
        """
        configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
                   for bm, bn, w, s in self.candidates(head_dim)]
        return triton.autotune(configs=configs if tuned else configs[:1], key=list(self.key),
                               cache_results=True)(self.kernel)

    def __call__(self, grid_of, tensors: tuple, scalars: tuple, meta: dict, key: tuple, tile=None):
        """Launch on ``grid_of(BLOCK_M, BLOCK_N)``; returns (compiled kernel, config).

        The kernel's runtime arguments are ``tensors`` then ``scalars``; ``meta`` holds the
        constexpr switches (``HEAD_DIM`` among them); ``key`` must separate every launch the
        autotuner would time separately (bucketed length, dtypes); ``tile`` = (BLOCK_M, BLOCK_N,
        num_warps, num_stages) skips tuning altogether (under the interpreter only its block
        sizes count). The compiled kernel is None under the interpreter.
        """
        if tile is not None:
            cfg = dict(zip(TILE_FIELDS, tile))
            if SETTINGS.interpret:
                cfg = {"BLOCK_M": cfg["BLOCK_M"], "BLOCK_N": cfg["BLOCK_N"]}
        elif SETTINGS.interpret:
            cfg = dict(zip(TILE_FIELDS, INTERPRETER_TILE))
        else:
            key = (SETTINGS.autotune, *meta.values(), *key)
            cfg = self.best.get(key)
            if cfg is None:
                tuner = self.autotuner(meta["HEAD_DIM"], SETTINGS.autotune)
                compiled = tuner[lambda m: grid_of(m["BLOCK_M"], m["BLOCK_N"])](*tensors, *scalars, **meta)
                best = tuner.best_config
                self.best[key] = dict(best.kwargs, num_warps=best.num_warps, num_stages=best.num_stages)
                return compiled, self.best[key]
        grid = grid_of(cfg["BLOCK_M"], cfg["BLOCK_N"])
        return DIRECT(self.name, self.kernel, grid, tensors, scalars, {**meta, **cfg}), cfg
