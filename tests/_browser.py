"""A real browser for the page tests: Debian's Chromium driven by Selenium through the system chromedriver.

Nothing is downloaded at run time: the Chromium binary and its driver come from the OS packages
(``apt-get install chromium chromium-driver``), Selenium from the ``dev`` extra. Where any of them is missing
the tests skip with a reason that says what to install (:data:`requires_browser`).
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find(names: tuple[str, ...], env: str) -> str | None:
    if os.environ.get(env):  # an explicit path: used when it is a file, else the browser counts as missing
        return os.environ[env] if os.path.isfile(os.environ[env]) else None
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    return None


CHROMIUM = _find(CHROMIUM_NAMES, "SAMR1_CHROMIUM")
CHROMEDRIVER = _find(("chromedriver",), "SAMR1_CHROMEDRIVER")
HAS_SELENIUM = importlib.util.find_spec("selenium") is not None


def _missing() -> str:
    gone = []
    if CHROMIUM is None:
        gone.append("Chromium (apt-get install chromium)")
    if CHROMEDRIVER is None:
        gone.append("its driver (apt-get install chromium-driver)")
    if not HAS_SELENIUM:
        gone.append("selenium (pip install 'samr1[dev]')")
    return "the page tests drive a real browser; missing here: " + ", ".join(gone)


requires_browser = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None or not HAS_SELENIUM,
                                      reason=_missing())


def chrome(width: int = 1280, height: int = 1000) -> Any:
    """A headless Chromium (device pixel ratio 1, so screenshot pixels are CSS pixels)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--lang=en-US"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (returned) or ``timeout`` seconds pass (fail, naming
    ``what``). Bounded: at most ``timeout / every`` polls."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    for _ in range(int(timeout / every) + 1):
        try:
            got = check()
            if got:
                return got
        except Exception as exc:  # noqa: BLE001 - an element not there yet; reported if it never comes
            last_exc = exc
        if time.monotonic() > deadline:
            break
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def screenshot_rgb(element: Any) -> np.ndarray:
    """An element's screenshot as an ``H x W x 3`` uint8 array (what the browser actually painted)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"))


def colour_pixels(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> int:
    """How many pixels of ``rgb`` are within ``tol`` of ``colour`` on every channel."""
    return int((np.abs(rgb.astype(np.int16) - np.asarray(colour, np.int16)) <= tol).all(axis=-1).sum())


def unlabelled_controls(driver: Any) -> list[str]:
    """Form controls with no accessible name: no <label for>, no wrapping <label>, no aria-label(ledby)."""
    return driver.execute_script("""
        const out = [];
        for (const e of document.querySelectorAll('input, select, textarea, button')) {
          if (e.type === 'hidden') continue;
          const byFor = e.id && document.querySelector('label[for="' + e.id + '"]');
          const named = byFor || e.closest('label') || e.getAttribute('aria-label') ||
                        e.getAttribute('aria-labelledby') || (e.tagName === 'BUTTON' && e.textContent.trim());
          if (!named) out.push(e.outerHTML.slice(0, 120));
        }
        return out;""")
