"""Debian's Chromium driven through Playwright: shared by the browser tests of the course and of the review page.

Playwright's own browser downloads are never used; without Chromium or Playwright the tests
that need them are skipped (each module says so in its ``pytestmark``).
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the browser tests are skipped
    sync_playwright = None
