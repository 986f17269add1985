"""End-to-end tests in a real browser (headless system Chromium driven by Playwright)."""
