"""Every Gluon kernel compiles for sm_90 under the installed Triton, on any machine.

``scripts/compile_hopper.py --kernel all`` compiles the forward with each consumer schedule, the
dK/dV and dQ kernels with theirs, at D 64 and 128, fp16 and bf16, causal and not, plus the
version layer's TMA reduce-add, with Triton's own ptxas and no GPU. This test is how CI fails
the day a Triton release breaks a kernel (Triton 3.9 removed the TMA copy the forward used).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_gluon_kernel_compiles_for_sm90(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "scripts/compile_hopper.py", "--kernel", "all"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    failed = [line for line in res.stdout.splitlines() if "FAILED" in line]
    assert res.returncode == 0 and not failed, "\n".join(failed) + res.stderr[-3000:]
    assert res.stdout.rstrip().endswith("all compiled")
    compiled = [line for line in res.stdout.splitlines() if ": shared=" in line]
    # 2 head dims x 2 masks x 2 dtypes x (3 forward + 2 dK/dV + 3 dQ variants), and the probe.
    assert len(compiled) == 8 * (3 + 2 + 3) + 1, res.stdout
    assert not any("LOCAL:0" not in line for line in compiled if line.startswith("fwd")), "a forward spills"


def test_the_script_refuses_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "scripts/compile_hopper.py", "--kernel", "fwd"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "TRITON_INTERPRET=0" in res.stderr
