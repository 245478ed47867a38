"""Debian's Chromium for the browser tests, run inside a lab namespace.

Playwright launches it through a wrapper script that execs it under
``ip netns exec``, so the browser's sockets live in the lab and nothing is
added to the root namespace.  Playwright never downloads a browser here.
"""

from __future__ import annotations

import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edgectl.lab import fleet

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",  # root in a lab namespace only
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_MS = 15_000


@contextmanager
def lab_for_browser(kind: str) -> Iterator[fleet.Up]:
    """A lab (``edgectl lab up``) for one module's browser tests, always taken down."""
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: scripts/setup.sh installs Debian's chromium")
    name = f"{kind}-{secrets.token_hex(3)}"
    try:
        yield fleet.up(name)
    finally:
        fleet.down(name)


def chromium_in(ns: str, directory: Path) -> Path:
    """A wrapper that runs Chromium inside namespace ``ns`` (Playwright's executable)."""
    wrapper = directory / f"chromium-in-{ns}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def shot(page: Any, directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)
