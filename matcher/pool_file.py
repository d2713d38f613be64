"""Offline pool files: read a ``.npz`` snapshot, write pairs as CSV (I/O, outside the core)."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np

from matcher.core.model import Constraints, Pair, PoolSnapshot
from matcher.core.prepare import normalise_in_place
from mosaic.errors import ValidationError

CSV_HEADER = ("user_a", "user_b", "score")


def load_pool(path: Path) -> tuple[PoolSnapshot, Constraints]:
    """Read ``ids``, ``vectors``, ``wait_seconds`` and optional ``missed_cycles`` and
    ``forbidden`` (m x 2 row indices). Vectors are normalised in place (the file's copy)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError as exc:
        raise ValidationError(f"{path}: no such file") from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValidationError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [k for k in ("ids", "vectors", "wait_seconds") if k not in arrays]
    if missing:
        raise ValidationError(f"{path}: missing arrays: {', '.join(missing)}")
    ids = arrays["ids"]
    if ids.ndim != 1 or ids.dtype.kind not in "US":
        raise ValidationError(f"{path}: 'ids' must be a 1-d string array, got {ids.dtype}")
    vectors = _vectors(arrays["vectors"], path)
    if ids.dtype.kind == "S":
        ids = np.char.decode(ids, "utf-8", errors="replace")
    snapshot = PoolSnapshot(
        tuple(str(u) for u in ids.tolist()),
        vectors,
        np.asarray(arrays["wait_seconds"], dtype=np.float64),
        arrays.get("missed_cycles"),
    )
    forbidden = arrays.get("forbidden")
    if forbidden is not None and (forbidden.ndim != 2 or forbidden.shape[1:] != (2,)):
        raise ValidationError(f"{path}: 'forbidden' must have shape (m, 2)")
    return snapshot, Constraints(forbidden_indices=forbidden)


def _vectors(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.ndim != 2 or raw.dtype.kind not in "fiu":
        raise ValidationError(f"{path}: 'vectors' must be a 2-d numeric array")
    vectors = np.require(raw, dtype=np.float32, requirements=["C", "W"])
    try:
        return normalise_in_place(vectors)
    except ValidationError as exc:
        raise ValidationError(f"{path}: {exc}") from exc


def pairs_csv(pairs: tuple[Pair, ...]) -> str:
    """The CSV text: header ``user_a,user_b,score``, one row per pair, 6 decimals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for p in pairs:
        writer.writerow((p.user_a, p.user_b, f"{p.score:.6f}"))
    return out.getvalue()


def write_pairs(path: Path, pairs: tuple[Pair, ...]) -> None:
    try:
        path.write_text(pairs_csv(pairs), encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"{path}: cannot write ({exc.strerror or exc})") from exc
