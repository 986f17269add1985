"""Helpers shared by the browser tests: screenshots on request, signing in with a prepared key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.console_fixtures import Live


def shot(page: Any, name: str, full_page: bool = False) -> None:
    """Save a PNG of ``page`` under ``$MODELFAB_SCREENSHOTS`` (only when set: CI never writes into the checkout)."""
    folder = os.environ.get("MODELFAB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=full_page)


def sign_in(page: Any, live: Live, role: str, screenshot: str | None = None) -> None:
    """Open the console and sign in with the prepared key of ``role``; wait for the tabs and the name."""
    from playwright.sync_api import expect

    page.goto(f"{live.url}/console/")
    page.fill("#key", live.prepared.keys[role])
    if screenshot:
        shot(page, screenshot)
    page.click("#signin button[type=submit]")
    expect(page.locator("#tabs")).to_be_visible()
    expect(page.locator("#who")).to_contain_text(live.prepared.names.get(role, role))
