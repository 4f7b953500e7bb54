"""Debian's Chromium driven by Playwright: the flags this machine needs, and screenshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
WIDTHS = (375, 1280)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def snap(page: Any, directory: Path, name: str) -> None:
    """Full-page screenshots at each width; also: nothing may scroll sideways at 375 px."""
    directory.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at {width}px"
        page.screenshot(path=str(directory / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 812})
