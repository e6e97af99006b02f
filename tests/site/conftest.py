"""Serve the built site on 127.0.0.1 and drive it with Debian's Chromium through Playwright."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import threading
from pathlib import Path

import pytest

from site_helpers import CHROMIUM, PAGES, REQUIRE_BROWSER, SITE, new_page


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """The built site, gzipped where the browser asks for it, as any real static host serves it
    (the throttled first-chart test measures what a phone would download)."""

    COMPRESSED = (".html", ".js", ".css", ".json", ".svg", ".xml", ".txt")
    _cache: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        url_path = self.path.split("?", 1)[0].split("#", 1)[0]
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            if not url_path.endswith("/"):
                return super().do_GET()  # the redirect to the slashed URL
            path = path / "index.html"
        if "gzip" not in self.headers.get("Accept-Encoding", "") or path.suffix not in self.COMPRESSED or not path.is_file():
            return super().do_GET()
        key = (path, path.stat().st_mtime_ns)
        if key not in self._cache:
            self._cache[key] = gzip.compress(path.read_bytes(), compresslevel=6)
        body = self._cache[key]
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


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
            pg.wait_for_selector("html[data-math]", state="attached", timeout=30_000)  # site.js typesets after the first chart
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
