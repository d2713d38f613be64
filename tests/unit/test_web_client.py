"""The web client's own checks, run from the Python suite so `./dev test` fails with them:
its node unit tests (pure state logic: de-duplication, button state machine, error mapping,
status text), its TypeScript type check, and the page's JavaScript size budget."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

WEB = Path(__file__).resolve().parents[2] / "web"
BUDGET_GZIP_BYTES = 150 * 1024  # issue 17: the page's JavaScript stays under 150 KB gzipped


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not on PATH: install Node.js 20+ (./dev needs it to build web/)")
    if not (WEB / "node_modules" / "esbuild").is_dir():
        pytest.fail("web/node_modules is missing: run ./dev once (its set-up runs npm ci)")
    return subprocess.run([npm, *args], cwd=WEB, capture_output=True, text=True, timeout=300,
                          check=False)


def test_node_unit_tests_pass() -> None:
    run = _npm("test", "--silent")
    assert run.returncode == 0, f"node --test failed:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
    assert "# fail 0" in run.stdout and "# pass " in run.stdout, run.stdout[-2000:]


def test_typescript_type_checks() -> None:
    run = _npm("run", "--silent", "check")
    assert run.returncode == 0, f"tsc found errors:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"


def test_page_javascript_stays_within_the_budget(tmp_path: Path) -> None:
    run = _npm("run", "--silent", "build", "--", "--outdir", str(tmp_path))
    assert run.returncode == 0, run.stderr[-2000:]
    size = len(gzip.compress((tmp_path / "app.js").read_bytes(), compresslevel=9))
    assert 10_000 < size < BUDGET_GZIP_BYTES, f"app.js is {size} bytes gzipped"
    assert {"index.html", "app.css", "app.js"} <= {p.name for p in tmp_path.iterdir()}
