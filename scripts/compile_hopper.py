"""Compile the Gluon Hopper kernels for sm_90 on any machine, GPU or not, and print what the
compiler reports: registers, spills, shared memory, ptxas warnings, and (with --sass) the
instruction mix.

    TRITON_INTERPRET=0 python scripts/compile_hopper.py [--kernel fwd|bwd|dq] [--sass]

``--kernel fwd`` (the default) compiles the forward (kernels/hopper.py), ``--kernel bwd`` the
dK/dV kernel (kernels/hopper_bwd.py), ``--kernel dq`` the dQ kernel (kernels/hopper_dq.py) at
both key-tile sizes.

Needs the Triton that the GPU box runs (3.6); no GPU and no CUDA driver (Triton ships ptxas).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import re
import subprocess
import tempfile


def compile_variant(head_dim: int, causal: bool, dtype: str, schedule: str = "serial"):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.experimental.gluon import language as gl

    from kernels import hopper

    block_n, stages = hopper.TILES[head_dim]
    gl_dtype = {"fp16": gl.float16, "bf16": gl.bfloat16}[dtype]

    def desc(rows):
        layout = gl.NVMMASharedLayout.get_default_for([rows, head_dim], gl_dtype)
        return f"tensordesc<{dtype}[{rows}, {head_dim}],{layout!r}>".replace("NVMMASharedLayout(", "NVMMASharedLayout(")

    fn = hopper._hopper_fwd_kernel
    names = [p.name for p in fn.params]
    runtime = {"q_desc": desc(hopper.ROWS_PER_WARPGROUP), "k_desc": desc(block_n), "v_desc": desc(block_n),
               "o_ptr": f"*{dtype}", "lse_ptr": "*fp32", "stride_ob": "i32", "stride_oh": "i32",
               "stride_on": "i32", "H": "i32", "GROUP": "i32", "N_Q": "i32", "N_K": "i32", "qk_scale": "fp32"}
    constexprs = {"IS_CAUSAL": causal, "BLOCK_N": block_n, "STAGES": stages,
                  "CONSUMER_REGS": hopper.CONSUMER_REGS, "PRODUCER_REGS": hopper.PRODUCER_REGS,
                  "SCHEDULE": schedule, "LPT": True}
    signature = {n: runtime.get(n, "constexpr") for n in names}
    src = GluonASTSource(fn, signature, {(names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": 4, "maxnreg": hopper.MAXNREG})


def compile_bwd_variant(head_dim: int, causal: bool, dtype: str, schedule: str = "overlap",
                        stages: int | None = None, dq_atomic: bool = False):
    """The Gluon dK/dV kernel for one head dim, mask mode and dtype, as the launcher builds it;
    ``dq_atomic``: the variant that also adds dQ into an fp32 buffer (``hopper_dkdv_dq``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.experimental.gluon import language as gl

    from kernels import hopper_bwd

    gl_dtype = {"fp16": gl.float16, "bf16": gl.bfloat16}[dtype]
    layout = gl.NVMMASharedLayout.get_default_for([hopper_bwd.ROWS, head_dim], gl_dtype)
    desc = f"tensordesc<{dtype}[{hopper_bwd.ROWS}, {head_dim}],{layout!r}>"
    fn = hopper_bwd._hopper_dkdv_kernel
    names = [p.name for p in fn.params]
    row_layout = gl.NVMMASharedLayout.get_default_for([hopper_bwd.ROWS], gl.float32)
    row_desc = f"tensordesc<fp32[{hopper_bwd.ROWS}],{row_layout!r}>"
    runtime = {"q_desc": desc, "k_desc": desc, "v_desc": desc, "do_desc": desc,
               "lse_desc": row_desc, "delta_desc": row_desc, "dk_ptr": f"*{dtype}", "dv_ptr": f"*{dtype}",
               "H": "i32", "H_KV": "i32",
               "N_Q": "i32", "N_K": "i32", "STAT_STRIDE": "i32", "qk_scale": "fp32", "scale": "fp32"}
    constexprs = {"IS_CAUSAL": causal, "STAGES": stages or hopper_bwd.STAGES[head_dim],
                  "CONSUMER_REGS": hopper_bwd.CONSUMER_REGS, "PRODUCER_REGS": hopper_bwd.PRODUCER_REGS,
                  "SCHEDULE": schedule, "DQ_ATOMIC": dq_atomic}
    if dq_atomic:
        dq_layout = gl.NVMMASharedLayout.get_default_for([hopper_bwd.ROWS, head_dim // 2], gl.float32)
        runtime["dq_desc"] = f"tensordesc<fp32[{hopper_bwd.ROWS}, {head_dim // 2}],{dq_layout!r}>"
    else:
        constexprs["dq_desc"] = None  # the launcher passes None: a constexpr, no kernel argument
    signature = {n: runtime.get(n, "constexpr") for n in names}
    src = GluonASTSource(fn, signature, {(names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": 4, "maxnreg": hopper_bwd.MAXNREG})


def compile_dq_variant(head_dim: int, causal: bool, dtype: str, block_n: int | None = None,
                       stages: int | None = None, schedule: str | None = None):
    """The Gluon dQ kernel for one head dim, mask mode, dtype, key tile and schedule, as the
    launcher builds it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.experimental.gluon import language as gl

    from kernels import hopper_dq

    default_block_n, default_stages = hopper_dq.TILES[head_dim]
    block_n = block_n or default_block_n
    gl_dtype = {"fp16": gl.float16, "bf16": gl.bfloat16}[dtype]

    def desc(rows):
        layout = gl.NVMMASharedLayout.get_default_for([rows, head_dim], gl_dtype)
        return f"tensordesc<{dtype}[{rows}, {head_dim}],{layout!r}>"

    fn = hopper_dq._hopper_dq_kernel
    names = [p.name for p in fn.params]
    runtime = {"q_desc": desc(hopper_dq.ROWS), "do_desc": desc(hopper_dq.ROWS), "k_desc": desc(block_n),
               "v_desc": desc(block_n), "dq_ptr": f"*{dtype}", "lse_ptr": "*fp32", "delta_ptr": "*fp32",
               "H": "i32", "H_KV": "i32", "N_Q": "i32", "N_K": "i32", "qk_scale": "fp32", "scale": "fp32"}
    constexprs = {"IS_CAUSAL": causal, "BLOCK_N": block_n, "STAGES": stages or default_stages,
                  "CONSUMER_REGS": hopper_dq.CONSUMER_REGS, "PRODUCER_REGS": hopper_dq.PRODUCER_REGS,
                  "SCHEDULE": schedule or hopper_dq.DEFAULT_SCHEDULE}
    signature = {n: runtime.get(n, "constexpr") for n in names}
    src = GluonASTSource(fn, signature, {(names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": 4, "maxnreg": hopper_dq.MAXNREG})


def with_ptxas_warnings(build):
    """Run ``build()`` and return (its result, ptxas's warning lines, e.g. C7508 "wgmma
    serialized"). Triton prints the ptxas log to stdout when asked and drops it otherwise; a
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
        raise RuntimeError("no ptxas log came back: cannot tell whether ptxas warned")
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sass", action="store_true", help="count SASS opcodes too")
    parser.add_argument("--kernel", choices=("fwd", "bwd", "dq"), default="fwd",
                        help="fwd: kernels/hopper.py; bwd: the dK/dV kernel in kernels/hopper_bwd.py; "
                             "dq: the dQ kernel in kernels/hopper_dq.py")
    args = parser.parse_args(argv)
    if args.kernel == "bwd":
        return report_bwd(args.sass)
    if args.kernel == "dq":
        return report_dq(args.sass)
    for head_dim in (64, 128):
        for causal in (False, True):
            for dtype, schedule in (("fp16", "serial"), ("bf16", "serial"), ("fp16", "pipelined"),
                                    ("fp16", "pingpong")):
                k = compile_variant(head_dim, causal, dtype, schedule)
                print(f"D={head_dim} causal={causal!s:5} {dtype} {schedule:9}: shared={k.metadata.shared} B; "
                      f"{resources(k.asm['cubin'])}", flush=True)
                if args.sass:
                    print_sass(k.asm["cubin"])


def report_bwd(sass: bool):
    from kernels import hopper_bwd

    for head_dim in (64, 128):
        for causal in (False, True):
            for dtype, schedule in (("fp16", "overlap"), ("bf16", "overlap"), ("fp16", "serial")):
                k, warnings = with_ptxas_warnings(lambda: compile_bwd_variant(head_dim, causal, dtype, schedule))
                print(f"dkdv D={head_dim} causal={causal!s:5} {dtype} {schedule:7} "
                      f"stages={hopper_bwd.STAGES[head_dim]}: shared={k.metadata.shared} B; "
                      f"{resources(k.asm['cubin'])}", flush=True)
                print("    ptxas warnings:", warnings or "none")
                if sass:
                    print_sass(k.asm["cubin"])


def report_dq(sass: bool):
    """Every dQ variant at both key tiles (BLOCK_N 64 and 128, each with the deepest ring that fits
    227 KB of shared memory at that head dim) and both schedules (the other at fp16 only): the
    data ``hopper_dq.TILES`` was chosen from."""
    from kernels import hopper_dq

    other = next(s for s in hopper_dq.SCHEDULES if s != hopper_dq.DEFAULT_SCHEDULE)
    for head_dim in (64, 128):
        for block_n in (64, 128):
            stages = max_stages(head_dim, block_n)
            for causal in (False, True):
                for dtype, schedule in (("fp16", hopper_dq.DEFAULT_SCHEDULE), ("bf16", hopper_dq.DEFAULT_SCHEDULE),
                                        ("fp16", other)):
                    k, warnings = with_ptxas_warnings(
                        lambda: compile_dq_variant(head_dim, causal, dtype, block_n, stages, schedule))
                    default = (block_n, stages) == hopper_dq.TILES[head_dim]
                    print(f"dq D={head_dim} BLOCK_N={block_n:3} stages={stages} causal={causal!s:5} {dtype} "
                          f"{schedule:7}{' (default tile)' if default else ''}: shared={k.metadata.shared} B; "
                          f"{resources(k.asm['cubin'])}; highest register R{highest_register(k.asm['cubin'])}",
                          flush=True)
                    print("    ptxas warnings:", warnings or "none")
                    if sass:
                        print_sass(k.asm["cubin"])


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
    main()
