"""Benchmark the matcher against the seed plan's algorithm and the exact optimum.

Builds clustered random pools, runs ``match_pool`` and ``seed_baseline`` side by side in
the same run and prints, per size: time, peak memory (RSS above the level before the call,
sampled every 10 ms) and its ratio to the vectors' size, quality against the networkx
optimum (n <= --optimum-max), quality and time ratios ours/baseline, and the ANN recall.

    python bench/matcher_bench.py                # 1,000 (with optimum), 100,000 x 768,
                                                 # 1,000,000 x 256
    python bench/matcher_bench.py --quick        # 400 (with optimum) and 30,000 x 256
    python bench/matcher_bench.py --sizes 1000x64,50000x384
    python bench/matcher_bench.py --hard         # hard pools: 100,000 x 768 and 1,000,000 x 256
    python bench/matcher_bench.py --hard --sizes 30000x768

``--hard`` pools (``matcher.synthetic.hard_pool``: groups of 10-30 users buried in
isotropic noise, within-group cosine 0.2-0.6, about 0 between groups) compare, in one run
and on the same pool: the index alone (recall@10 against exact search on a sample of
1,000 queries), our matcher with the index and its recall self-check, and the same
matcher with exact candidates (pools up to --exact-max users). Pair quality is the share
of pairs inside one group and the total score.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matcher.ann import FaissIvfSearch, recall
from matcher.baseline import seed_baseline
from matcher.core import ExactSearch, MatchParams, PoolSnapshot, match_pool
from matcher.core.model import Constraints, MatchResult
from matcher.core.prepare import prepare
from matcher.synthetic import clustered_pool, hard_pool

DEFAULT_SIZES = "1000x64,100000x768,1000000x256"
QUICK_SIZES = "400x64,30000x256"
HARD_SIZES = "100000x768,1000000x256"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Measured:
    value: Any
    seconds: float
    peak_bytes: int


def measure(func: Callable[[], Any]) -> Measured:
    """Run ``func``; wall time and peak RSS above the level just before it."""
    gc.collect()
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    value = func()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss_bytes())
    return Measured(value, seconds, peak[0] - base)


def optimum_total(pool: PoolSnapshot, params: MatchParams) -> tuple[int, float]:
    """networkx maximum-weight matching among maximum-cardinality ones (complete graph);
    in an odd pool without the shortest-waiting user (the rule our matcher follows)."""
    import networkx as nx

    prep = prepare(pool, Constraints(), params)
    keep = np.arange(prep.n)
    if prep.n % 2:
        keep = keep[keep != np.lexsort((-prep.rank, prep.wait))[0]]
    x = prep.x[keep]
    sims = x @ x.T
    iu, ju = np.triu_indices(len(keep), 1)
    weights = sims[iu, ju] + prep.boost[keep][iu] + prep.boost[keep][ju]
    graph = nx.Graph()
    graph.add_weighted_edges_from(zip(iu.tolist(), ju.tolist(), weights.tolist(), strict=True))
    best = nx.max_weight_matching(graph, maxcardinality=True)
    return len(best), float(sum(graph[a][b]["weight"] for a, b in best))


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        n, _, dim = item.strip().partition("x")
        out.append((int(float(n)), int(dim or 64)))
    return out


def run_size(n: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    pool = clustered_pool(n, dim, args.seed)
    vectors = pool.vectors
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit rows: no copy in the core
    params = MatchParams()
    search = FaissIvfSearch(nprobe=args.nprobe)
    ours = measure(lambda: match_pool(pool, params=params, search=search))
    base = measure(lambda: seed_baseline(pool, params=params, search=search))
    row: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "vectors_mib": vectors.nbytes / 2**20,
        "ours": ours,
        "base": base,
        "method": ours.value.stats.candidate_method,
    }
    if n > params.exact_max_users:
        found = measure(lambda: search.search(vectors, 20))
        row["recall"] = recall(vectors, found.value[0], 10)
        row["search_s"] = found.seconds
    if n <= args.optimum_max:
        opt = measure(lambda: optimum_total(pool, params))
        row["opt_pairs"], row["opt_total"] = opt.value
        row["opt_s"] = opt.seconds
    return row


def report(row: dict[str, Any]) -> str:
    ours, base = row["ours"], row["base"]
    stats = ours.value.stats
    vec = row["vectors_mib"]
    lines = [
        f"== n={row['n']:,} dim={row['dim']} vectors={vec:.0f} MiB candidates={row['method']}",
        f"  ours     {ours.seconds:8.2f} s  peak +{ours.peak_bytes / 2**20:7.0f} MiB"
        f" ({ours.peak_bytes / 2**20 / vec:4.2f}x vectors)  pairs {stats.pairs:,}"
        f"  unmatched {stats.users - 2 * stats.pairs:,}  total {stats.total_score:,.3f}",
        f"  baseline {base.seconds:8.2f} s  peak +{base.peak_bytes / 2**20:7.0f} MiB"
        f" ({base.peak_bytes / 2**20 / vec:4.2f}x vectors)  pairs {len(base.value.pairs):,}"
        f"  unmatched {len(base.value.unmatched):,}  total {base.value.total_score:,.3f}",
        f"  ours/baseline: quality {stats.total_score / base.value.total_score:.4f}"
        f"  time {ours.seconds / base.seconds:.2f}",
    ]
    if "recall" in row:
        lines.append(f"  ANN recall@10 {row['recall']:.4f} (search alone {row['search_s']:.2f} s)")
    if "opt_total" in row:
        best = row["opt_total"]
        lines.append(
            f"  optimum (networkx, {row['opt_s']:.1f} s): pairs {row['opt_pairs']:,}"
            f"  total {best:,.3f}  ours/optimum {stats.total_score / best:.5f}"
            f"  baseline/optimum {base.value.total_score / best:.5f}"
        )
    return "\n".join(lines)


def within_group(result: MatchResult, pool: PoolSnapshot, labels: np.ndarray) -> float:
    index = {u: i for i, u in enumerate(pool.user_ids)}
    a = np.asarray([index[p.user_a] for p in result.pairs], dtype=np.int64)
    b = np.asarray([index[p.user_b] for p in result.pairs], dtype=np.int64)
    return float(np.mean(labels[a] == labels[b])) if len(a) else 0.0


def run_hard(n: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    pool, labels = hard_pool(n, dim, args.seed)
    vectors = pool.vectors
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = MatchParams(exact_max_users=args.exact_max_users)
    search = FaissIvfSearch(nprobe=args.nprobe)
    row: dict[str, Any] = {"n": n, "dim": dim, "vectors_mib": vectors.nbytes / 2**20}
    found = measure(lambda: search.search(vectors, 21))
    sample = measure(lambda: _exact_sample(vectors, labels, args.recall_queries))
    truth, in_group = sample.value
    row["index_s"], row["exact_sample_s"] = found.seconds, sample.seconds
    row["index_recall"] = _recall(found.value[0], truth)
    row["truth_in_group"] = in_group
    del found
    row["ours"] = measure(lambda: match_pool(pool, params=params, search=search))
    row["ours_within"] = within_group(row["ours"].value, pool, labels)
    if n <= args.exact_max:
        row["exact"] = measure(lambda: match_pool(pool, params=params, search=ExactSearch()))
        row["exact_within"] = within_group(row["exact"].value, pool, labels)
    return row


def _exact_sample(
    x: np.ndarray, labels: np.ndarray, queries: int
) -> tuple[dict[int, set[int]], float]:
    """Exact top-10 of ``queries`` rows (seed 7, another sample than the core's), and the
    share of those neighbours that are in the query's own group."""
    rng = np.random.default_rng(7)
    rows = np.sort(rng.choice(len(x), size=min(queries, len(x)), replace=False))
    truth: dict[int, set[int]] = {}
    same = 0
    for start in range(0, len(rows), 64):
        block = rows[start : start + 64]
        scores = x[block] @ x.T
        scores[np.arange(len(block)), block] = -np.inf
        top = np.argpartition(-scores, 9, axis=1)[:, :10]
        same += int((labels[top] == labels[block][:, None]).sum())
        for i, r in enumerate(block.tolist()):
            truth[r] = set(top[i].tolist())
    return truth, same / (10.0 * len(rows))


def _recall(found: np.ndarray, truth: dict[int, set[int]]) -> float:
    hits = sum(len(t.intersection(found[r, :10].tolist())) for r, t in truth.items())
    return hits / (10.0 * len(truth))


def report_hard(row: dict[str, Any]) -> str:
    vec = row["vectors_mib"]
    ours = row["ours"]
    stats = ours.value.stats
    lines = [
        f"== HARD n={row['n']:,} dim={row['dim']} vectors={vec:.0f} MiB"
        f"  (exact top-10 inside the query's group: {row['truth_in_group']:.3f})",
        f"  index alone  {row['index_s']:8.2f} s  recall@10 {row['index_recall']:.3f}"
        f"  (exact sample of queries {row['exact_sample_s']:.1f} s)",
        f"  ours         {ours.seconds:8.2f} s  peak +{ours.peak_bytes / 2**20:7.0f} MiB"
        f" ({ours.peak_bytes / 2**20 / vec:4.2f}x vectors)  pairs {stats.pairs:,}"
        f"  within-group {row['ours_within']:.4f}  total {stats.total_score:,.3f}",
        f"               recall self-check {stats.candidate_recall or 1.0:.3f} (target"
        f" {stats.recall_target:.2f}, {'met' if stats.recall_target_met else 'MISSED'}):"
        f" {' -> '.join(stats.candidate_widening)}",
        f"               chance-level share of the core's sampled exact neighbours"
        f" {stats.candidate_chance_share or 0.0:.3f}",
    ]
    if "exact" in row:
        ex = row["exact"]
        es = ex.value.stats
        lines += [
            f"  exact cands  {ex.seconds:8.2f} s  peak +{ex.peak_bytes / 2**20:7.0f} MiB"
            f" ({ex.peak_bytes / 2**20 / vec:4.2f}x vectors)  pairs {es.pairs:,}"
            f"  within-group {row['exact_within']:.4f}  total {es.total_score:,.3f}",
            f"  ours/exact: total {stats.total_score / es.total_score:.5f}"
            f"  time {ours.seconds / ex.seconds:.3f}",
        ]
    else:
        lines.append("  exact cands  skipped (above --exact-max)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help=f"NxDIM,... (default {DEFAULT_SIZES})")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nprobe", type=int, default=FaissIvfSearch.nprobe)
    parser.add_argument("--optimum-max", type=int, default=1000)
    parser.add_argument("--hard", action="store_true", help=f"hard pools (default {HARD_SIZES})")
    parser.add_argument("--exact-max", type=int, default=200_000,
                        help="largest hard pool also matched with exact candidates")
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--exact-max-users", type=int, default=MatchParams.exact_max_users,
                        help="hard pools: the core's threshold for using the index")
    args = parser.parse_args(argv)
    default = HARD_SIZES if args.hard else QUICK_SIZES if args.quick else DEFAULT_SIZES
    sizes = parse_sizes(args.sizes or default)
    for n, dim in sizes:
        if args.hard:
            print(report_hard(run_hard(n, dim, args)), flush=True)
        else:
            print(report(run_size(n, dim, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
