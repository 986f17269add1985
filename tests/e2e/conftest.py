"""Browser fixtures: the system Chromium driven by Playwright (``playwright install`` cannot download
browsers here). Locally the tests skip when Chromium or Playwright is missing; in CI (``CI`` set) that
is a failure, so they can never silently skip there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 30_000  # the machine is shared: allow slow renders


def _require_browser() -> Any:
    missing = [] if CHROMIUM.exists() else [f"{CHROMIUM} (apt-get install chromium; `make test` does it as root)"]
    try:
        from playwright import sync_api
    except ImportError:  # the dev extra installs it
        missing.append("the playwright package")
        sync_api = None
    if missing:
        message = f"browser tests need {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; .ci/run must install them", pytrace=False)
        pytest.skip(message)
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    return sync_api


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module: Playwright's sync API holds an event loop on this thread
    while it runs, so it must be closed before other modules' tests call ``asyncio.run``."""
    sync_api = _require_browser()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless=new"])
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (1280x900) that accepts confirm() dialogs and fails the test on JavaScript errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    p.on("dialog", lambda d: d.accept())  # confirm() of promote / approve
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert not errors, f"JavaScript errors: {errors}"
