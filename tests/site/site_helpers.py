"""What the site tests share: where the built site is, the pages, the viewports, a fresh page."""

from __future__ import annotations

import os
from pathlib import Path

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
    "variants": "posts/06_attention_variants/",
}


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
