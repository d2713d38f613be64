"""The cycle report in a real headless browser (Playwright driving Debian's chromium, see
tests/pages.py): every plot of a cycle with unmatched users draws its marks, nothing errors
in the console, the page needs no network. The report of a real cycle on the real stack is
checked in tests/e2e/test_demo_cycle.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from app.ops.report import write_report
from tests.e2e.test_demo_cycle import PLOT_CHECK
from tests.pages import launch_chromium, open_page, png_pixels
from tests.unit.test_cycle_report import sample_cycle

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as running:
        yield running


def test_every_plot_draws_its_points_in_chromium(browser: Browser, tmp_path: Path) -> None:
    path = write_report(sample_cycle(), tmp_path / "report.html")
    with open_page(browser, path.as_uri()) as loaded:
        plots = {p["title"]: p for p in loaded.page.evaluate(PLOT_CHECK)}
        shot = loaded.page.screenshot()
        assert loaded.log.errors == [] and loaded.log.refused == []
    assert len(plots) == 7
    for plot in plots.values():
        assert plot["points"] > 0 and plot["marks"] > 0, plot
        assert plot["drawn"] == plot["marks"], plot  # every mark has a painted box
    assert plots["Unmatched users by reason"]["marks"] == 2
    assert plots["Score vs similarity"]["marks"] == 2
    pixels = png_pixels(shot)[:, :, :3].astype(int)
    assert len({tuple(p) for p in pixels[::7, ::7].reshape(-1, 3).tolist()}) > 20


def test_a_page_that_fetches_from_the_network_is_caught(browser: Browser,
                                                        tmp_path: Path) -> None:
    """The check itself can fail: an external script is refused (no network) and logged."""
    page_file = tmp_path / "cdn.html"
    page_file.write_text('<html><body><script src="https://cdn.example.com/x.js"></script>'
                         '<script>console.error("boom")</script></body></html>')
    with open_page(browser, page_file.as_uri()) as loaded:
        assert loaded.page.evaluate("document.title") == ""
        errors, refused = list(loaded.log.errors), list(loaded.log.refused)
    assert any("boom" in e for e in errors), errors
    assert refused == ["https://cdn.example.com/x.js"], refused
