"""The main job, end to end on the real stack: ``mosaic demo`` with a small pool must
pass every one of its own checks (seekers, rooms, single notifications, block honoured,
status RPC) — and the checks must be able to fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from app.demo_report import DemoReport
from app.demo_run import run_demo
from mosaic.settings import Settings
from tests.pages import launch_chromium, open_page, png_pixels

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def report(kafka_stack: object, cassandra_stack: object, nakama_stack: object,
           s3_stack: object) -> DemoReport:
    return run_demo(Settings(), users=10, seed=11, timeout_seconds=300)


def test_demo_cycle_passes_all_checks(report: DemoReport) -> None:
    names = [name for name, _, _ in report.checks]
    assert len(names) == 7, names
    assert report.ok, report.render()
    # 10 users, one blocked pair inside a cluster: the matcher still pairs everyone.
    assert len(report.pairs) == report.expected_pairs == 5
    assert "RESULT: all checks passed" in report.render()


def test_report_fails_when_a_check_fails(report: DemoReport) -> None:
    broken = DemoReport(pool=report.pool, personas=report.personas, checks=list(report.checks))
    broken.check("a deliberately failing check", False, "detail")
    assert not broken.ok
    assert "[FAIL] a deliberately failing check" in broken.render()


# Every plot of the cycle report, what it measures and how many points the demo gives it
# (10 users, 5 pairs, everyone matched: the unmatched-reasons chart says so instead).
PLOT_CHECK = """(() => [...document.querySelectorAll('svg.plot')].map(svg => {
  const marks = [...svg.querySelectorAll('.mark')];
  const box = svg.getBoundingClientRect();
  return {title: svg.getAttribute('aria-label'), points: Number(svg.dataset.points),
          marks: marks.length, width: box.width, height: box.height,
          drawn: marks.filter(m => { const b = m.getBBox(); return b.width > 0 && b.height > 0; })
                      .length};
}))()"""


def test_cycle_report_renders_in_a_real_browser(report: DemoReport) -> None:
    """The demo writes the cycle's HTML report; headless Chromium (no network) draws every
    plot from the cycle's real records, with no console error, and the page is not blank."""
    assert report.report_path and Path(report.report_path).is_file(), report.render()
    assert f"cycle report (plots, opens offline): {report.report_path}" in report.render()
    html = Path(report.report_path).read_text()
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    with launch_chromium() as browser, \
            open_page(browser, Path(report.report_path).as_uri()) as loaded:
        plots = {p["title"]: p for p in loaded.page.evaluate(PLOT_CHECK)}
        shot = loaded.page.screenshot()
        assert loaded.log.errors == [] and loaded.log.refused == []
    expected = {"Pair score": 5, "Pair similarity": 5, "Score vs similarity": 5,
                "Wait at the tick (seconds)": 10, "Unmatched users by reason": 0,
                "Cycle timeline": None, "Match to notification (seconds)": 10}
    assert set(plots) == set(expected), plots
    for title, points in expected.items():
        plot = plots[title]
        assert plot["width"] > 100 and plot["height"] > 100, plot
        if points is None:  # tick wait, matcher phases, rooms, notifications
            assert plot["points"] >= 5, plot
        else:
            assert plot["points"] == points, plot
        assert plot["drawn"] == plot["marks"] and (plot["marks"] > 0) == (plot["points"] > 0)
    pixels = png_pixels(shot)[:, :, :3].astype(int)
    background = (pixels == 250).all(axis=2) | (pixels == 255).all(axis=2)
    assert (~background).mean() > 0.02  # text, axes and bars, not an empty page
    bar_blue = (abs(pixels - (59, 111, 182)).sum(axis=2) < 30).sum()
    assert bar_blue > 500  # the histograms' bars are really painted


def test_report_command_writes_the_same_cycle(report: DemoReport, tmp_path: Path) -> None:
    out = tmp_path / "cycle.html"
    assert main(["report", report.cycle_id, "--out", str(out)]) == 0
    html = out.read_text()
    assert report.cycle_id in html and html.count('class="mark point"') == 5
    assert main(["report", "no-such-cycle:20000101T000000Z", "--out", str(out)]) == 1
