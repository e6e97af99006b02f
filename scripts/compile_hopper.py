"""Compile the Gluon Hopper kernels for sm_90 on any machine, GPU or not, and print what the
compiler reports: registers, spills, shared memory, ptxas warnings, and (with --sass) the
instruction mix.

    TRITON_INTERPRET=0 python scripts/compile_hopper.py [--kernel all|fwd|dkdv|dq] [--sass]

``--kernel fwd`` (the default) compiles the forward (kernels/gluon/forward.py) with each consumer
schedule, ``--kernel dkdv`` the dK/dV kernel (kernels/gluon/dkdv.py) with each schedule,
``--kernel dq`` the dQ kernel (kernels/gluon/dq.py) at both key-tile sizes and schedules, and
``--kernel all`` every one of those at D 64 and 128, fp16 and bf16, causal and not, plus a
probe of the version layer's TMA reduce-add (kernels/gluon/common.py). It exits 1 if anything
fails to compile, after trying the rest; the CPU test suite runs ``--kernel all``.

Needs no GPU and no CUDA driver (Triton ships ptxas): any Triton of the supported range.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import io
import itertools
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import traceback

DTYPES = ("fp16", "bf16")


def tensordesc(dtype: str, block: list[int]) -> str:
    """The signature type of a Gluon TensorDescriptor argument with this dtype and block."""
    from kernels.gluon import common

    layout = common.smem_layout(_torch_dtype(dtype), *block)
    return f"tensordesc<{dtype}[{', '.join(map(str, block))}],{layout!r}>"


def _torch_dtype(name: str):
    import torch
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def compile_gluon(fn, runtime: dict, constexprs: dict, maxnreg: int | None = None):
    """``triton.compile`` of a Gluon kernel for sm_90: ``runtime`` maps each runtime argument to
    its signature type, ``constexprs`` each constexpr to its value."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    names = [p.name for p in fn.params]
    signature = {n: runtime.get(n, "constexpr") for n in names}
    src = GluonASTSource(fn, signature, {(names.index(k),): v for k, v in constexprs.items()})
    options = {"num_warps": 4}
    if maxnreg:
        options["maxnreg"] = maxnreg
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def compile_variant(head_dim: int, causal: bool, dtype: str, schedule: str = "serial"):
    """The Gluon forward for one head dim, mask mode, dtype and schedule, as its launcher builds it."""
    from kernels.gluon import common, forward

    block_n, stages = forward.TILES[head_dim]
    runtime = {"q_desc": tensordesc(dtype, [common.ROWS, head_dim]), "k_desc": tensordesc(dtype, [block_n, head_dim]),
               "v_desc": tensordesc(dtype, [block_n, head_dim]), "o_ptr": f"*{dtype}", "lse_ptr": "*fp32",
               "stride_ob": "i32", "stride_oh": "i32", "stride_on": "i32", "H": "i32", "GROUP": "i32",
               "N_Q": "i32", "N_K": "i32", "qk_scale": "fp32"}
    constexprs = {"IS_CAUSAL": causal, "BLOCK_N": block_n, "STAGES": stages,
                  "CONSUMER_REGS": common.CONSUMER_REGS, "PRODUCER_REGS": common.PRODUCER_REGS,
                  "SCHEDULE": schedule, "LPT": True}
    return compile_gluon(forward.hopper_fwd_kernel, runtime, constexprs, common.MAXNREG)


def compile_bwd_variant(head_dim: int, causal: bool, dtype: str, schedule: str | None = None,
                        stages: int | None = None):
    """The Gluon dK/dV kernel for one head dim, mask mode, dtype and schedule, as its launcher builds it."""
    from kernels.gluon import common, dkdv

    desc = tensordesc(dtype, [common.ROWS, head_dim])
    row_desc = tensordesc("fp32", [common.ROWS])
    runtime = {"q_desc": desc, "k_desc": desc, "v_desc": desc, "do_desc": desc,
               "lse_desc": row_desc, "delta_desc": row_desc, "dk_ptr": f"*{dtype}", "dv_ptr": f"*{dtype}",
               "H": "i32", "H_KV": "i32", "N_Q": "i32", "N_K": "i32", "STAT_STRIDE": "i32",
               "qk_scale": "fp32", "scale": "fp32"}
    constexprs = {"IS_CAUSAL": causal, "STAGES": stages or dkdv.STAGES[head_dim],
                  "CONSUMER_REGS": common.CONSUMER_REGS, "PRODUCER_REGS": common.PRODUCER_REGS,
                  "SCHEDULE": schedule or dkdv.DEFAULT_SCHEDULE}
    return compile_gluon(dkdv.hopper_dkdv_kernel, runtime, constexprs, common.MAXNREG)


def compile_dq_variant(head_dim: int, causal: bool, dtype: str, block_n: int | None = None,
                       stages: int | None = None, schedule: str | None = None):
    """The Gluon dQ kernel for one head dim, mask mode, dtype, key tile and schedule, as its
    launcher builds it."""
    from kernels.gluon import common, dq

    default_block_n, default_stages = dq.TILES[head_dim]
    block_n = block_n or default_block_n
    rows = tensordesc(dtype, [common.ROWS, head_dim])
    keys = tensordesc(dtype, [block_n, head_dim])
    runtime = {"q_desc": rows, "do_desc": rows, "k_desc": keys, "v_desc": keys, "dq_ptr": f"*{dtype}",
               "lse_ptr": "*fp32", "delta_ptr": "*fp32", "H": "i32", "H_KV": "i32", "N_Q": "i32", "N_K": "i32",
               "qk_scale": "fp32", "scale": "fp32"}
    constexprs = {"IS_CAUSAL": causal, "BLOCK_N": block_n, "STAGES": stages or default_stages,
                  "CONSUMER_REGS": common.CONSUMER_REGS, "PRODUCER_REGS": common.PRODUCER_REGS,
                  "SCHEDULE": schedule or dq.DEFAULT_SCHEDULE}
    return compile_gluon(dq.hopper_dq_kernel, runtime, constexprs, common.MAXNREG)


def compile_reduce_add_probe():
    """A minimal kernel through the version layer's TMA load and reduce-add (``common.tma_load``,
    ``common.tma_reduce_add``): one (64, 64) fp32 tile read into shared memory and added back."""
    from kernels.gluon import common

    return compile_gluon(_reduce_add_probe(), {"src_desc": tensordesc("fp32", [64, 64]),
                                               "dst_desc": tensordesc("fp32", [64, 64])}, {})


def _reduce_add_probe():
    from kernels.gluon.common import fence_async_shared, gl, gluon, mbarrier, tma, tma_load, tma_reduce_add

    @gluon.jit
    def reduce_add_probe(src_desc, dst_desc):
        buf = gl.allocate_shared_memory(gl.float32, [64, 64], src_desc.layout)
        bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(bar, count=1)
        fence_async_shared()
        mbarrier.expect(bar, src_desc.block_type.nbytes)
        tma_load(src_desc, [0, 0], bar, buf)
        mbarrier.wait(bar, 0)
        tma_reduce_add(dst_desc, [0, 0], buf)
        tma.store_wait(0)

    return reduce_add_probe


def with_ptxas_warnings(build):
    """Run ``build()`` and return (its result, ptxas's warning lines, e.g. C7508 "wgmma
    serialized"; None where this Triton gives no log back). Triton prints the ptxas log to stdout when asked and drops it otherwise; a
    kernel found in Triton's cache runs no ptxas, so the cache is bypassed here."""
    import triton

    out = io.StringIO()
    knobs = triton.knobs
    old = knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile
    knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = True, True
    try:
        with contextlib.redirect_stdout(out):
            result = build()
    finally:
        knobs.nvidia.dump_ptxas_log, knobs.compilation.always_compile = old
    log = out.getvalue()
    if "ptxas info" not in log:
        return result, None  # this Triton does not hand the log back (3.9): unknown, not "none"
    return result, [line.strip() for line in log.splitlines() if "warning" in line.lower()]


def cuobjdump(cubin: bytes, flag: str) -> str:
    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, flag, f.name], capture_output=True, text=True, check=True).stdout


def resources(cubin: bytes) -> str:
    """cuobjdump's resource line: registers, stack, shared memory, spills."""
    text = cuobjdump(cubin, "-res-usage")
    return " ".join(line.strip() for line in text.splitlines() if "REG" in line)


def sass_mix(cubin: bytes) -> collections.Counter:
    text = cuobjdump(cubin, "-sass")
    ops = re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", text)
    return collections.Counter(op for op in ops)


def variants(kernel: str):
    """(label, build) for every compile ``--kernel kernel`` makes: "fwd", "dkdv", "dq" or "all"."""
    from kernels.gluon import dkdv, dq, forward

    grid = list(itertools.product((64, 128), (False, True), DTYPES))
    out = []
    if kernel in ("fwd", "all"):
        for (d, causal, dtype), schedule in itertools.product(grid, forward.SCHEDULES):
            if kernel == "fwd" and dtype == "bf16" and schedule != "serial":
                continue  # the report: bf16 once, the schedules at fp16
            out.append((f"fwd D={d} causal={causal!s:5} {dtype} {schedule:9}",
                        lambda d=d, c=causal, t=dtype, s=schedule: compile_variant(d, c, t, s)))
    if kernel in ("dkdv", "all"):
        for (d, causal, dtype), schedule in itertools.product(grid, dkdv.SCHEDULES):
            if kernel == "dkdv" and dtype == "bf16" and schedule != dkdv.DEFAULT_SCHEDULE:
                continue
            out.append((f"dkdv D={d} causal={causal!s:5} {dtype} {schedule:7} stages={dkdv.STAGES[d]}",
                        lambda d=d, c=causal, t=dtype, s=schedule: compile_bwd_variant(d, c, t, s)))
    if kernel in ("dq", "all"):
        for (d, causal, dtype), block_n, schedule in itertools.product(grid, (64, 128), dq.SCHEDULES):
            if kernel == "all" and (block_n, max_stages(d, block_n)) != dq.TILES[d] and schedule != dq.DEFAULT_SCHEDULE:
                continue  # all: every schedule at the default tile, the default schedule at the other
            if kernel == "dq" and dtype == "bf16" and schedule != dq.DEFAULT_SCHEDULE:
                continue
            stages = max_stages(d, block_n)
            default = " (default tile)" if (block_n, stages) == dq.TILES[d] else ""
            out.append((f"dq D={d} BLOCK_N={block_n:3} stages={stages} causal={causal!s:5} {dtype} {schedule:7}{default}",
                        lambda d=d, c=causal, t=dtype, b=block_n, st=stages, s=schedule:
                        compile_dq_variant(d, c, t, b, st, s)))
    if kernel == "all":
        out.append(("common.tma_load + tma_reduce_add probe", compile_reduce_add_probe))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sass", action="store_true", help="count SASS opcodes too")
    parser.add_argument("--kernel", choices=("all", "fwd", "dkdv", "bwd", "dq"), default="fwd",
                        help="fwd: kernels/gluon/forward.py; dkdv (or bwd): kernels/gluon/dkdv.py; "
                             "dq: kernels/gluon/dq.py; all: every variant of all three")
    parser.add_argument("--jobs", type=int, default=1, help="compile this many variants at once (processes)")
    args = parser.parse_args(argv)
    # Run as a script from anywhere, installed or not: the kernels package sits at the root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("run with TRITON_INTERPRET=0: the interpreter cannot compile Gluon kernels")
    import triton
    from kernels.gluon import common

    print(f"triton {triton.__version__}, target sm_90", flush=True)
    if common.GLUON_IMPORT_ERROR is not None:
        print(f"FAILED: no Gluon Hopper API: {common.GLUON_IMPORT_ERROR}")
        return 1
    kernel = "dkdv" if args.kernel == "bwd" else args.kernel
    jobs = range(len(variants(kernel)))
    failures = 0
    # Forked workers inherit the imported kernels; each compiles its variant and sends back text.
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork")) \
            if args.jobs > 1 else contextlib.nullcontext() as pool:
        run = pool.map if pool is not None else map
        for ok, text, tb in run(compile_report, itertools.repeat(kernel), jobs, itertools.repeat(args.sass)):
            failures += not ok
            print(text, flush=True)
            if tb:
                print(tb, file=sys.stderr, end="")
    print(f"{failures} failed" if failures else "all compiled", flush=True)
    return 1 if failures else 0


def compile_report(kernel: str, index: int, sass: bool) -> tuple[bool, str, str]:
    """Compile the ``index``-th variant of ``kernel``; returns (compiled, the report's lines,
    the traceback where it failed). Plain data, so a worker process can send it back."""
    label, build = variants(kernel)[index]
    try:
        k, warnings = with_ptxas_warnings(build)
    except Exception as exc:  # noqa: BLE001 - report every failure, then exit non-zero
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        return False, f"{label}: FAILED {type(exc).__name__}: {last}", traceback.format_exc()
    lines = [f"{label}: shared={k.metadata.shared} B; {resources(k.asm['cubin'])}; "
             f"highest register R{highest_register(k.asm['cubin'])}",
             "    ptxas warnings: " + ("not reported by this Triton" if warnings is None else str(warnings or "none"))]
    if sass:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            print_sass(k.asm["cubin"])
        lines.append(out.getvalue().rstrip("\n"))
    return True, "\n".join(lines), ""


def max_stages(head_dim: int, block_n: int, limit: int = 227 * 1024, most: int = 4) -> int:
    """The deepest (K, V) ring, at most ``most`` stages, that fits beside the resident Q and dO
    tiles (2 B elements; the mbarriers' few bytes fit in the margin)."""
    resident = 2 * 2 * 64 * head_dim * 2
    per_stage = 2 * block_n * head_dim * 2
    return min(most, (limit - resident - 1024) // per_stage)


def highest_register(cubin: bytes) -> int:
    """The highest general register the SASS names: with setmaxnreg, the consumers' real use (the
    resource line reports only the launch cap)."""
    return max(int(n) for n in re.findall(r"\bR(\d+)\b", cuobjdump(cubin, "-sass")))


def print_sass(cubin: bytes) -> None:
    """The instructions that tell whether a Gluon kernel came out as intended: tensor-core
    (HGMMA, WARPGROUP) and TMA (UTMALDG) work, barriers, exponentials (MUFU), local memory
    (LDL/STL: spills), global loads and stores, and the register hand-over (setmaxnreg)."""
    keep = {op: n for op, n in sass_mix(cubin).items()
            if re.match(r"HGMMA|MUFU|FFMA|LDL|STL|SYNCS|UTMALDG|USETMAXREG|WARPGROUP|BAR|STG|LDG", op)}
    print("   ", dict(sorted(keep.items())))
    print("    setmaxnreg:", setmaxnreg(cubin))


def setmaxnreg(cubin: bytes) -> dict[str, int]:
    """The distinct USETMAXREG forms in the SASS (dealloc/alloc, register count in hex) and how
    often each occurs."""
    text = cuobjdump(cubin, "-sass")
    forms = (re.sub(r"UP\d+, ", "", " ".join(m.split())) for m in re.findall(r"USETMAXREG[^;]*", text))
    return dict(sorted(collections.Counter(forms).items()))


if __name__ == "__main__":
    sys.exit(main())
