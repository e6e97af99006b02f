"""Serve the built site on 127.0.0.1 and drive it with Debian's Chromium through Playwright."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("SITE_DIR", ROOT / "site"))
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# CI sets this: there a missing browser is a failure, not a skip.
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"
VIEWPORTS = {"desktop": {"width": 1400, "height": 900}, "phone": {"width": 390, "height": 844}}
PAGES = {
    "home": "",
    "basic": "posts/01_basic_attention/",
    "vectorized": "posts/02_vectorized_attention/",
    "flash": "posts/03_flash_attention/",
    "optimizing": "posts/04_optimizing_flash/",
    "gluon": "posts/05_gluon_hopper/",
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def base_url():
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built site at {SITE}: run `mkdocs build --strict` first (make test does)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        message = (f"browser tests need Chromium at {CHROMIUM}: `sudo make chromium` installs Debian's, "
                   "or point CHROMIUM=/path/to/chromium at another")
        if REQUIRE_BROWSER:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            # No background traffic of Chromium's own: every request left is the page's.
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-default-apps"],
        )
        yield b
        b.close()


def new_page(browser, viewport):
    """A fresh context (no cache, no stored palette) whose page records its requests and errors."""
    # Not is_mobile: Chromium would then zoom out to fit a too-wide page, hiding the overflow tested for.
    ctx = browser.new_context(viewport=VIEWPORTS[viewport])
    pg = ctx.new_page()
    pg.viewport_name = viewport
    pg.requests, pg.errors = [], []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("console", lambda m: pg.errors.append(f"console: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    return ctx, pg


@pytest.fixture(scope="session")
def visited(browser, base_url):
    """Each (page, viewport) opened once and kept, for the checks that only read the page."""
    opened = {}

    def visit(name, viewport):
        if (name, viewport) not in opened:
            ctx, pg = new_page(browser, viewport)
            pg.goto(base_url + PAGES[name], wait_until="load")
            pg.wait_for_load_state("networkidle")  # late requests (search worker, index) count too
            # charts.js draws charts near the viewport first and the rest when idle: checks of
            # charts must see every one of them.
            if pg.locator(".plotly-chart").count():
                pg.wait_for_selector("html[data-charts='drawn']", state="attached", timeout=30_000)
            pg.mouse.move(0, 0)
            opened[name, viewport] = ctx, pg
        return opened[name, viewport][1]

    yield visit
    for ctx, _ in opened.values():
        ctx.close()


@pytest.fixture
def page(browser):
    """A desktop-sized page."""
    ctx, pg = new_page(browser, "desktop")
    yield pg
    ctx.close()
