"""``mosaic match-file``: match an offline pool file (kept stable: other tools call it)."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

_DEFAULT_SATURATION = 7 * 24 * 3600.0


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "match-file",
        help="pair the users of a .npz pool file and write PAIRS.csv",
        description=(
            "POOL.npz holds ids (str), vectors (n x d, any norm), wait_seconds, optional "
            "missed_cycles (int) and optional forbidden (m x 2 row indices)."
        ),
    )
    cmd.add_argument("pool", type=Path, metavar="POOL.npz", help="the pool file (see above)")
    cmd.add_argument("--out", type=Path, required=True, metavar="PAIRS.csv",
                     help="where to write the pairs")
    cmd.add_argument("--wait-boost", type=float, default=0.1,
                     help="added to the score of a pair whose users both waited "
                          "--wait-saturation-seconds (less, pro rata, below)")
    cmd.add_argument("--wait-saturation-seconds", type=float, default=_DEFAULT_SATURATION,
                     help="wait after which the boost stops growing")
    cmd.add_argument("--min-similarity", type=float, default=None,
                     help="never pair below this similarity (default: no floor)")
    cmd.add_argument(
        "--standardize",
        action="store_true",
        help="similarity = z-score of the cosine over the pool (portable across embedders)",
    )
    cmd.add_argument(
        "--recall-target",
        type=float,
        default=0.95,
        help="candidate recall@10 the index must reach; below it the search is widened",
    )
    cmd.set_defaults(func=match_file)


def match_file(args: argparse.Namespace) -> int:
    from matcher.ann import FaissIvfSearch
    from matcher.core import MatchParams, match_pool
    from matcher.pool_file import load_pool, write_pairs

    started = time.perf_counter()
    pool, constraints = load_pool(args.pool)
    params = MatchParams(
        wait_boost=args.wait_boost,
        wait_saturation_seconds=args.wait_saturation_seconds,
        min_similarity=args.min_similarity,
        standardize=args.standardize,
        recall_target=args.recall_target,
    )
    result = match_pool(pool, constraints, params, search=FaissIvfSearch())
    write_pairs(args.out, result.pairs)
    elapsed = time.perf_counter() - started
    print(summary(result, elapsed, _peak_rss_bytes(), args.out))
    return 0


def summary(result: Any, elapsed_seconds: float, peak_rss_bytes: int, out: Path) -> str:
    stats = result.stats
    lines = [
        f"users        {stats.users}",
        f"pairs        {stats.pairs}  -> {out}",
        f"unmatched    {len(result.unmatched)}"
        + "".join(
            f"\n  {reason:<22} {count}" for reason, count in stats.unmatched_by_reason.items()
        ),
        f"score        mean {stats.mean_score:.4f}  min {stats.min_score:.4f}"
        f"  total {stats.total_score:.3f}",
        f"candidates   {stats.candidate_method}, k={stats.candidates_k},"
        f" {stats.candidate_edges} edges, {stats.forbidden_pairs} forbidden pairs",
        f"search       greedy {stats.greedy_pairs}, fallback {stats.fallback_pairs},"
        f" augmentations {stats.augmentations}, priority swaps {stats.priority_swaps},"
        f" local moves {stats.improve_moves} (+{stats.improve_gain:.3f})",
        _recall_line(stats),
        f"time         {elapsed_seconds:.2f} s",
        f"memory       peak RSS {peak_rss_bytes / 2**20:.0f} MiB",
    ]
    return "\n".join(lines)


def _recall_line(stats: Any) -> str:
    if stats.candidate_recall is None:
        return f"recall       exact candidates ({stats.candidate_method})"
    line = (f"recall       candidate recall@10 {stats.candidate_recall:.3f} on"
            f" {stats.recall_sample} sampled users (target {stats.recall_target:.2f},"
            f" {'met' if stats.recall_target_met else 'MISSED'})")
    if len(stats.candidate_widening) > 1:
        line += "\n  widened: " + " -> ".join(stats.candidate_widening)
    if not stats.recall_target_met and stats.candidate_chance_share:
        line += (f"\n  {stats.candidate_chance_share:.1%} of the sampled exact neighbours are"
                 " at chance level (no index finds those)")
    return line


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
