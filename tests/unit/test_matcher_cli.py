"""``mosaic match-file``: CSV output, determinism and clean errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from matcher.synthetic import clustered_pool

pytestmark = pytest.mark.unit


def write_pool(path: Path, n: int = 101, **extra: np.ndarray) -> Path:
    pool = clustered_pool(n, 16, seed=5)
    arrays = {
        "ids": np.asarray(pool.user_ids),
        "vectors": pool.vectors * 4.0,  # any norm
        "wait_seconds": pool.wait_seconds,
        "missed_cycles": pool.missed_cycles,
        **extra,
    }
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_writes_pairs_csv_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = write_pool(tmp_path / "pool.npz", forbidden=np.asarray([[0, 1], [2, 3]]))
    out = tmp_path / "pairs.csv"
    assert main(["match-file", str(pool), "--out", str(out), "--standardize"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "user_a,user_b,score"
    assert len(lines) == 1 + 50
    printed = capsys.readouterr().out
    for word in ("pairs", "odd_one_out", "mean", "time", "peak RSS"):
        assert word in printed


def test_same_file_twice_gives_identical_csv_bytes(tmp_path: Path) -> None:
    pool = write_pool(tmp_path / "pool.npz", n=300)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert main(["match-file", str(pool), "--out", str(one)]) == 0
    assert main(["match-file", str(pool), "--out", str(two)]) == 0
    assert one.read_bytes() == two.read_bytes()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        pytest.param({"ids": np.asarray(["a", "a"])}, "duplicate", id="duplicate-ids"),
        pytest.param(
            {"vectors": np.asarray([[1.0, 0.0], [np.nan, 0.0]], np.float32)}, "NaN", id="nan"
        ),
        pytest.param({"vectors": np.zeros((2, 2), np.float32)}, "all-zero", id="zero-vector"),
        pytest.param({"wait_seconds": None}, "missing arrays", id="missing-array"),
        pytest.param({"forbidden": np.asarray([[0, 5]])}, "forbidden", id="bad-forbidden"),
    ],
)
def test_bad_file_exits_1_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arrays: dict[str, object], message: str
) -> None:
    base: dict[str, object] = {
        "ids": np.asarray(["a", "b"]),
        "vectors": np.asarray([[1.0, 0.0], [0.0, 1.0]], np.float32),
        "wait_seconds": np.zeros(2),
    }
    base.update(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in base.items() if v is not None})  # type: ignore[arg-type]
    assert main(["match-file", str(path), "--out", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unreadable_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    assert main(["match-file", str(path), "--out", str(tmp_path / "x.csv")]) == 1
    assert "error:" in capsys.readouterr().err


def test_unwritable_output_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = write_pool(tmp_path / "pool.npz", n=10)
    out = tmp_path / "missing-dir" / "pairs.csv"
    assert main(["match-file", str(pool), "--out", str(out)]) == 1
    assert "cannot write" in capsys.readouterr().err
