"""Real pages in a real browser: Playwright for Python driving Debian's ``chromium``.

``./dev`` installs the ``chromium`` package with apt when it is missing (Playwright's own
browser download cannot work here: no network but the package registries), and the lock
pins Playwright. ``launch_chromium()`` starts it headless with no network but loopback and
files: any other request is aborted and recorded. ``watch()`` collects a page's console
errors, uncaught exceptions and refused requests; ``png_pixels()`` decodes a screenshot so
a test can check it is not blank without trusting the browser's own report.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Route,
    sync_playwright,
)

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def chromium_path() -> str:
    """Debian's chromium; ``./dev`` installs it (apt-get install chromium) when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("no chromium on PATH: run ./dev (it installs Debian's 'chromium' "
                           "package with apt-get) or apt-get install chromium")
    return found


@dataclass
class PageLog:
    """What went wrong in the pages of one context: console errors, uncaught exceptions,
    requests to anything but loopback or files (refused)."""

    errors: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"exception: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            self.errors.append(f"console.{message.type}: {message.text}")

    def route(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("file", "data", "blob") or url.hostname in LOOPBACK:
            route.continue_()
            return
        self.refused.append(route.request.url)
        route.abort("blockedbyclient")


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Headless Debian chromium under Playwright; closed on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True,
            # Direct connections (a machine's proxy settings never apply); the context's
            # route (watch) refuses everything but loopback and files.
            args=["--no-sandbox", "--disable-gpu", "--mute-audio", "--no-proxy-server"])
        try:
            yield browser
        finally:
            browser.close()


def watch(context: BrowserContext) -> PageLog:
    """Record every page's errors in ``context`` and refuse requests off this machine."""
    log = PageLog()
    context.route("**/*", log.route)
    context.on("page", log.attach)
    return log


@dataclass
class Loaded:
    page: Page
    log: PageLog


@contextmanager
def open_page(browser: Browser, url: str, *, width: int = 1280,
              height: int = 1600) -> Iterator[Loaded]:
    """``url`` loaded in a fresh context of ``browser`` (nothing shared with other pages)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        log = watch(context)
        page = context.new_page()
        page.goto(url, wait_until="load")
        yield Loaded(page, log)
    finally:
        context.close()


def png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) to an array."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, color, _, _, interlace = header
    channels = {2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, color type {color})")
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    prior = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        row_filter, line = int(rows[y, 0]), rows[y, 1:].astype(np.int32)
        if row_filter == 0:
            cur = line
        elif row_filter == 1:
            cur = np.cumsum(line.reshape(width, channels), axis=0).reshape(stride) % 256
        elif row_filter == 2:
            cur = (line + prior) % 256
        else:
            cur = _sequential(row_filter, line.tolist(), prior.tolist(), channels)
        out[y] = cur
        prior = cur
    return out.reshape(height, width, channels).astype(np.uint8)


def _sequential(kind: int, line: list[int], prior: list[int], bpp: int) -> np.ndarray:
    cur = [0] * len(line)
    for i, value in enumerate(line):
        left = cur[i - bpp] if i >= bpp else 0
        up = prior[i]
        if kind == 3:
            cur[i] = (value + (left + up) // 2) & 0xFF
        else:  # Paeth
            corner = prior[i - bpp] if i >= bpp else 0
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            guess = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
            cur[i] = (value + guess) & 0xFF
    return np.array(cur, dtype=np.int32)
