"""Headless Chromium for the tests that open our self-contained HTML pages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str | None:
    """The first Chromium or Chrome on PATH, or None."""
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def load(page: Path, scratch: Path) -> subprocess.CompletedProcess:
    """Open ``page`` the way a user does and return the run: its stdout is the DOM
    after load, its stderr the console."""
    cmd = [
        browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={scratch / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=10000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(scratch)}
    )


def images_decoded(dom: str) -> tuple[int, int] | None:
    """(images decoded, images) as the page's load handler recorded them, or None
    when the handler did not run."""
    found = re.search(r'data-images-ok="(\d+)/(\d+)"', dom)
    return tuple(map(int, found.groups())) if found else None
