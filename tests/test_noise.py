"""The site's one noise rule (blog.noise): the band from a repeat, and the verdicts it gives."""

from __future__ import annotations

import math

import pytest

from blog import noise
from perfdata import schema

PROV = {"gpu": "NVIDIA H100 80GB HBM3", "gpu_uuid": "GPU-1", "sm_count": 132, "driver": "1", "cuda": "13",
        "torch": "2", "triton": "3", "git_commit": "c0ffee", "date": "2030-01-01T00:00:00Z", "mode": "test",
        "ceilings": {"copy_gbps": None, "matmul_fp16_tflops": None, "matmul_fp32_tflops": None}}


def rec(suite, provider, ms, rounds=None, case="float16/B4H16/N4096x4096/D128/full/fwd", status="ok"):
    r = {"suite": suite, "case": f"{suite}/{case}", "provider": provider, "direction": case.rsplit("/", 1)[1],
         "shape": {"B": 4, "H": 16, "Hkv": 16, "Nq": 4096, "Nk": 4096, "D": 128}, "dtype": "float16",
         "causal": False, "status": status, "unit": "ms"}
    if status == "ok":
        r.update(p20=ms * 0.99, p50=ms, p80=ms * 1.01, round_p50=rounds or [ms])
    else:
        r["reason"] = "test"
    return r


def doc(suite, records, **prov):
    return schema.validate({"schema": 1, "suite": suite, "provenance": {**PROV, **prov}, "records": records})


def test_band_is_the_largest_change_between_run_and_repeat():
    run = doc("production", [rec("production", "flash", 1.0), rec("production", "sdpa-cudnn", 2.0),
                             rec("production", "fa4", 3.0)])
    rep = doc("noise", [rec("noise", "flash", 1.02), rec("noise", "sdpa-cudnn", 1.9), rec("noise", "eager", 9.0)])
    b = noise.band(run, rep)
    assert b.pairs == 2  # eager has no twin, fa4 no repeat
    assert b.width == pytest.approx(2.0 / 1.9 - 1)  # a drop counts as much as a rise
    assert "sdpa-cudnn" in b.worst
    assert b.holds(1.05) and b.holds(1 / 1.05) and not b.holds(1.06)


@pytest.mark.parametrize("key, value", [("gpu_uuid", "GPU-2"), ("git_commit", "beef"), ("gpu", "NVIDIA H200")])
def test_band_refuses_a_repeat_of_another_card_or_commit(key, value):
    run = doc("production", [rec("production", "flash", 1.0)])
    rep = doc("noise", [rec("noise", "flash", 1.0)], **{key: value})
    with pytest.raises(ValueError, match=key):
        noise.band(run, rep)


def test_band_refuses_a_repeat_with_nothing_in_common():
    run = doc("production", [rec("production", "flash", 1.0)])
    rep = doc("noise", [rec("noise", "flash", 1.0, status="oom")])
    with pytest.raises(ValueError, match="no ok timing"):
        noise.band(run, rep)


def band(width):
    return noise.Band(width=width, typical=width / 2, pairs=10, worst="x", gpu="NVIDIA H100", commit="c")


def test_a_win_needs_both_separate_rounds_and_a_ratio_outside_the_band():
    ours = rec("production", "flash", 1.0, rounds=[0.99, 1.0, 1.01])
    far = rec("production", "sdpa-cudnn", 1.2, rounds=[1.19, 1.2, 1.21])
    overlapping = rec("production", "sdpa-cudnn", 1.2, rounds=[1.0, 1.2, 1.4])
    close = rec("production", "sdpa-cudnn", 1.03, rounds=[1.02, 1.03, 1.04])
    assert noise.verdict(ours, far, band(0.05)).call == "faster"
    assert noise.verdict(far, ours, band(0.05)).call == "slower"
    v = noise.verdict(ours, overlapping, band(0.05))
    assert (v.call, v.rounds_overlap, v.inside_band) == ("tie", True, False)
    v = noise.verdict(ours, close, band(0.05))  # rounds apart, but inside the run-to-run band
    assert (v.call, v.rounds_overlap, v.inside_band) == ("tie", False, True)
    assert noise.verdict(ours, far, band(0.25)).call == "tie"
    assert math.isclose(noise.verdict(ours, far, band(0.05)).ratio, 1.2)


def test_verdict_refuses_records_that_did_not_run():
    with pytest.raises(ValueError, match="did not run cleanly"):
        noise.verdict(rec("production", "flash", 1.0), rec("production", "fa4", 1.0, status="oom"), band(0.05))


def test_tally_and_phrases():
    ours = rec("production", "flash", 1.0, rounds=[1.0])
    vs = [noise.verdict(ours, rec("production", "p", ms, rounds=[ms]), band(0.05)) for ms in (2.0, 0.5, 1.01)]
    assert noise.tally(vs) == {"faster": 1, "slower": 1, "tie": 1}
    assert vs[0].phrase() == "2.00× (faster)" and vs[2].phrase() == "1.01×, a tie"
    with pytest.raises(ValueError):
        band(float("nan"))
