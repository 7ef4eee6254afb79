"""Driving ``d2im app``'s page in Debian's chromium with Playwright (its own browser download does not
work offline, so it is pointed at the system's), for the browser tests and the documentation's
screenshot.

As a script, it serves the bundled model (or ``--model``), opens the page at 1280×800 and at phone
width (390×844), reconstructs an example in each and writes both views side by side::

    python tests/app_browser.py --out docs/images/app.png
"""

import io
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BACKGROUND = np.array([244, 245, 247])  # the viewer's clear colour (static/app.js)
DESKTOP, PHONE = (1280, 800), (390, 844)
# Headless chromium without a GPU renders WebGL with SwiftShader; running as root needs --no-sandbox.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-gpu-sandbox"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The browser's path; outside CI a missing browser skips the test with the reason, in CI
    (``CI=true``) it fails: CI installs it (.ci/run) and must not skip the browser tests."""
    import pytest

    path = chromium_path()
    if path is None:
        reason = "Debian's chromium is not installed (apt-get install chromium); the browser tests drive it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@contextmanager
def browser(executable: str | None = None):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable or chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def open_page(instance, url: str, size=DESKTOP):
    """A page of ``url`` at ``size`` with ``page.requested`` (every URL it asked for) and ``page.problems``
    (console errors and uncaught exceptions), once the page has read the health and the examples."""
    page = instance.new_page(viewport={"width": size[0], "height": size[1]}, accept_downloads=True)
    page.requested, page.problems = [], []
    page.on("request", lambda request: page.requested.append(request.url))
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    return page


def reconstruct_example(page, index: int = 1, timeout_ms: int = 120_000) -> None:
    """Click example ``index`` and wait until its mesh is shown (or the page reports an error)."""
    page.locator(".example").nth(index).click()
    page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=timeout_ms)
    if page.get_attribute("body", "data-state") == "error":
        raise AssertionError(f"the page reported: {page.text_content('#message')}")


def canvas_pixels(page) -> np.ndarray:
    """The viewer's canvas as shown, uint8 ``[H, W, 3]``."""
    return np.asarray(Image.open(io.BytesIO(page.locator("#viewer canvas").screenshot())).convert("RGB"))


def mesh_fraction(pixels: np.ndarray) -> float:
    """Fraction of pixels that are not the viewer's background."""
    return float((np.abs(pixels.astype(int) - BACKGROUND).max(axis=-1) > 30).mean())


def screenshots(url: str, out: Path, example: int = 1) -> None:
    """The page at 1280×800 and at phone width (whole page, scaled to the same height) side by side."""
    with browser() as instance:
        shots = []
        for size, full_page in ((DESKTOP, False), (PHONE, True)):
            page = open_page(instance, url, size)
            reconstruct_example(page, example)
            page.wait_for_timeout(300)  # the orbit controls' damping settles
            shots.append(Image.open(io.BytesIO(page.screenshot(full_page=full_page))).convert("RGB"))
            if page.problems:
                raise AssertionError(f"the page reported problems: {page.problems}")
            page.close()
    desktop, phone = shots
    phone = phone.resize((round(phone.width * desktop.height / phone.height), desktop.height), Image.LANCZOS)
    gap = 24
    sheet = Image.new("RGB", (desktop.width + gap + phone.width, desktop.height), (200, 204, 212))
    sheet.paste(desktop, (0, 0))
    sheet.paste(phone, (desktop.width + gap, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main(argv=None) -> int:
    import argparse

    sys.path.insert(0, str(ROOT / "tests"))
    from d2im_tf.commands.reconstruct import BUNDLED_MODEL

    from app_server import served

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "app.png")
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--example", type=int, default=1, help="which example to click (default 1, the chair)")
    args = parser.parse_args(argv)
    with served(args.model) as (url, service, _):
        service.warm_up()
        screenshots(url, args.out, args.example)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
