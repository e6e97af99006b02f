"""Bad input gets a ValueError or TypeError that names the problem."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import kernels
from helpers import DEVICE, INTERPRET, rand

FNS = {**kernels.KERNELS, "reference": kernels.reference_attention}


def ok(*shape, dtype=torch.float32):
    return rand(*shape, dtype=dtype)


BAD = [
    ("leading dims", lambda: (ok(2, 3, 8, 16), ok(2, 4, 8, 16), ok(2, 4, 8, 16)), {}, ValueError, r"(?i)leading|match"),
    ("batch dims", lambda: (ok(2, 8, 16), ok(3, 8, 16), ok(3, 8, 16)), {}, ValueError, r"(?i)leading|match"),
    ("head dims", lambda: (ok(8, 16), ok(8, 32), ok(8, 32)), {}, ValueError, r"(?i)head dim|D"),
    ("v head dim", lambda: (ok(8, 16), ok(8, 16), ok(8, 32)), {}, ValueError, r"(?i)head dim|D"),
    ("k/v length", lambda: (ok(8, 16), ok(8, 16), ok(9, 16)), {}, ValueError, r"(?i)length|shapes differ|Nk"),
    ("integer dtype", lambda: (torch.ones(8, 16, dtype=torch.int32), ok(8, 16), ok(8, 16)), {}, TypeError, r"(?i)float"),
    ("mixed dtypes", lambda: (ok(8, 16), ok(8, 16, dtype=torch.float16), ok(8, 16)), {}, TypeError, r"(?i)dtype"),
    ("1-d input", lambda: (ok(16), ok(8, 16), ok(8, 16)), {}, ValueError, r"(?i)2 dims"),
    ("D = 0", lambda: (ok(8, 0), ok(8, 0), ok(8, 0)), {}, ValueError, r"(?i)head dim"),
    ("D too large", lambda: (ok(2, 257), ok(2, 257), ok(2, 257)), {}, ValueError, r"(?i)head dim.*257|257"),
    ("Nk = 0", lambda: (ok(8, 16), ok(0, 16), ok(0, 16)), {}, ValueError, r"(?i)Nk=0|no keys"),
    ("not a tensor", lambda: ([[1.0]], ok(8, 16), ok(8, 16)), {}, TypeError, r"(?i)tensor"),
    ("scale type", lambda: (ok(8, 16), ok(8, 16), ok(8, 16)), {"scale": "0.1"}, TypeError, r"(?i)scale"),
    ("scale nan", lambda: (ok(8, 16), ok(8, 16), ok(8, 16)), {"scale": float("nan")}, ValueError, r"(?i)scale"),
    ("causal type", lambda: (ok(8, 16), ok(8, 16), ok(8, 16)), {"causal": "yes"}, TypeError, r"(?i)causal"),
]


@pytest.mark.parametrize("name", list(kernels.KERNELS))
@pytest.mark.parametrize("case,make,kw,exc,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, case, make, kw, exc, msg):
    q, k, v = make()
    with pytest.raises(exc, match=msg):
        FNS[name](q, k, v, **kw)


@pytest.mark.parametrize("case,make,kw,exc,msg", [b for b in BAD if b[0] not in ("scale type", "scale nan", "causal type")],
                         ids=[b[0] for b in BAD if b[0] not in ("scale type", "scale nan", "causal type")])
def test_reference_bad_input(case, make, kw, exc, msg):
    q, k, v = make()
    with pytest.raises(exc):
        kernels.reference_attention(q, k, v, **kw)


@pytest.mark.parametrize("name", list(kernels.KERNELS))
def test_error_names_the_function(name):
    with pytest.raises(ValueError, match=name):
        kernels.KERNELS[name](ok(8, 16), ok(8, 16), ok(9, 16))


@pytest.mark.parametrize("name", list(kernels.KERNELS))
def test_float64_is_rejected(name):
    with pytest.raises(TypeError, match=r"float64.*not supported"):
        kernels.KERNELS[name](ok(8, 16, dtype=torch.float64), ok(8, 16, dtype=torch.float64), ok(8, 16, dtype=torch.float64))


@pytest.mark.skipif(not INTERPRET, reason="bf16 is refused only under the interpreter")
@pytest.mark.parametrize("name", list(kernels.KERNELS))
def test_bf16_refused_under_interpreter(name):
    x = ok(8, 16, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"bfloat16.*interpreter"):
        kernels.KERNELS[name](x, x, x)


@pytest.mark.skipif(DEVICE != "cuda", reason="needs a GPU")
@pytest.mark.parametrize("name", list(kernels.KERNELS))
def test_cpu_tensor_without_interpreter(name):
    x = torch.randn(8, 16)
    with pytest.raises(ValueError, match=r"(?i)cpu.*TRITON_INTERPRET"):
        kernels.KERNELS[name](x, x, x)


@pytest.mark.skipif(DEVICE != "cuda", reason="needs a GPU")
@pytest.mark.parametrize("name", list(kernels.KERNELS))
def test_mixed_devices(name):
    x = torch.randn(8, 16, device="cuda")
    with pytest.raises(ValueError, match=r"(?i)device"):
        kernels.KERNELS[name](x, x.cpu(), x)


def test_gqa_needs_divisible_heads():
    q, k = ok(2, 4, 8, 16), ok(2, 3, 8, 16)
    with pytest.raises(ValueError, match=r"(?i)multiple"):
        kernels.flash_attention(q, k, k)
    with pytest.raises(ValueError, match=r"(?i)leading"):
        kernels.vectorized_attention(ok(2, 4, 8, 16), ok(2, 2, 8, 16), ok(2, 2, 8, 16))


def test_slice_span_must_fit_int32():
    from kernels import runtime

    big = torch.empty(1, device="meta").as_strided((2, 70000, 128), (1, 32768, 1))  # (N - 1) * 32768 > 2**31
    with pytest.raises(ValueError, match=r"slice of k spans 2293727360 elements.*at most 2\*\*31"):
        runtime.check_slice_spans("flash_attention", q=big[:, :10], k=big)
    runtime.check_slice_spans("flash_attention", q=big[:, :65536])  # 65535 * 32768 + 127 < 2**31


def test_too_many_batch_heads_for_one_grid():
    x = torch.zeros(1, device=DEVICE).expand(300, 300, 4, 16)  # no memory behind the 90000 slices
    for name in kernels.KERNELS:
        with pytest.raises(ValueError, match=r"90000 \(batch, head\) slices.*at most 65535"):
            kernels.KERNELS[name](x, x, x)


def test_flash_precision_option_checked():
    with pytest.raises(ValueError, match="precision"):
        kernels.flash_attention(ok(8, 16), ok(8, 16), ok(8, 16), precision="fast")


@pytest.mark.skipif(not INTERPRET, reason="checks the no-GPU start-up")
def test_import_selects_interpreter_without_env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    code = "import kernels, torch; x = torch.randn(4, 16); print(kernels.INTERPRET, kernels.flash_attention(x, x, x).shape)"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True torch.Size([4, 16])"
    assert res.stderr.count("interpreter") == 1  # says so, once


def test_interpreter_version_guard(monkeypatch):
    import numpy
    import triton

    from kernels import runtime

    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(numpy, "__version__", "2.4.1")
    assert "triton>=3.9 or numpy<2.4" in runtime.interpreter_problem()
    monkeypatch.setattr(numpy, "__version__", "2.3.5")
    assert runtime.interpreter_problem() is None
    monkeypatch.setattr(triton, "__version__", "3.9.0")
    monkeypatch.setattr(numpy, "__version__", "2.4.1")
    assert runtime.interpreter_problem() is None
