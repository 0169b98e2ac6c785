"""Headless Chromium for the tests marked ``browser`` (Debian package ``chromium``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(profile: Path) -> list[str]:
    """The browser command with a fresh profile; fails the test (not skips) when it is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is not installed; run: make test-browser (it installs it)")
    return [browser, *FLAGS, f"--user-data-dir={profile}"]


def screenshots_dir(fallback: Path) -> Path:
    """``$ARFLARE_SCREENSHOTS`` (make test-browser points it at docs/), else a temp folder."""
    folder = Path(os.environ.get("ARFLARE_SCREENSHOTS", fallback))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(command: list[str], url: str, path: Path, *, size: str = "1600,900", wait_ms: int = 0) -> np.ndarray:
    """Render ``url``, save the PNG, return it as a grey-level array."""
    from PIL import Image

    extra = [f"--virtual-time-budget={wait_ms}"] if wait_ms else []
    subprocess.run([*command, *extra, f"--screenshot={path}", f"--window-size={size}", url],
                   capture_output=True, timeout=180, check=True)
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def dom(command: list[str], url: str, *, wait_ms: int = 0) -> str:
    """The page's DOM after its scripts ran (for ``wait_ms`` of virtual time)."""
    extra = [f"--virtual-time-budget={wait_ms}"] if wait_ms else []
    return subprocess.run([*command, *extra, "--window-size=1600,900", "--dump-dom", url], capture_output=True,
                          text=True, timeout=180).stdout
