"""Shared set-up: one suite, two modes, and the markers.

On a machine without a CUDA GPU the suite runs through Triton's CPU interpreter (fp32 and fp16,
small shapes); with a GPU it runs everything, bf16 included. Markers (pytest.ini): ``gpu`` and
``hopper`` tests are skipped where there is no such device, ``browser`` marks tests/site,
``slow`` the long ones; ``pytest -m "not browser"`` runs the kernel tests alone.
Helpers live in ``tests/helpers.py`` (``from helpers import ...``).
"""

from __future__ import annotations

from pathlib import Path

import helpers  # first: sets KERNELS_POISON_OUTPUTS before kernels is imported
import pytest
import torch

import kernels
from kernels import runtime

SITE_TESTS = Path(__file__).parent / "site"


def pytest_report_header(config):
    assert runtime.POISON_OUTPUTS, "kernels was imported before conftest could set KERNELS_POISON_OUTPUTS"
    return f"kernels mode: {kernels.mode_description()}"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (this run uses Triton's CPU interpreter)")
    skip_hopper = pytest.mark.skip(reason="needs an sm90 GPU and Triton's Gluon Hopper API")
    for item in items:
        if SITE_TESTS in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.xdist_group("browser"))  # one worker, one browser, under --dist loadgroup
        if "gpu" in item.keywords and helpers.INTERPRET:
            item.add_marker(skip_gpu)
        if "hopper" in item.keywords and not helpers.ON_HOPPER:
            item.add_marker(skip_hopper)


@pytest.fixture(autouse=True)
def fresh_seed(request):
    # Fresh inputs per test, seeded from the test id so a failure replays with the same inputs.
    torch.manual_seed(helpers.seed_of(request.node.nodeid))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.failed:
        report.sections.append(("inputs", f"torch.manual_seed({helpers.seed_of(item.nodeid)}) (crc32 of the test id)"))
