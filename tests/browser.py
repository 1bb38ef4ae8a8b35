"""Headless Chromium for the ``otelflow ui`` tests: Debian's ``/usr/bin/chromium`` driven by Playwright for Python
(never a downloaded browser; ``scripts/test`` installs the package).

``page`` fails its test when the page logged an error, threw, or broke its Content-Security-Policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries Google's hosts at every start, refused by this closed
# network; the profile is a fresh temporary one (Playwright's launch makes it).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per test module. Not per session: Playwright's sync API runs an event loop in this thread
    while it is open, and code that picks sync or async by whether a loop is running (``Variable.set``, as in
    Prefect) would then pick async in every later test."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is not installed: scripts/test installs it (apt-get install chromium)"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class PageProblems(list[str]):
    """What went wrong on a page: console errors, uncaught exceptions, CSP violations."""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (its own context: no cache, no storage) at 1280x800; fails the test on any page problem."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems = PageProblems()
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    # Listen for CSP violations from the first script on: a violation means the page tried something it must not.
    page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")
    page.problems = problems
    yield page
    try:
        violations = page.evaluate("window.__violations || []") if not page.is_closed() else []
    finally:
        context.close()
    assert not problems, problems
    assert not violations, violations
