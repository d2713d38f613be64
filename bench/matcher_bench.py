"""Benchmark the matcher against the seed plan's algorithm and the exact optimum.

Builds clustered random pools, runs ``match_pool`` and ``seed_baseline`` side by side in
the same run and prints, per size: time, peak memory (RSS above the level before the call,
sampled every 10 ms) and its ratio to the vectors' size, quality against the networkx
optimum (n <= --optimum-max), quality and time ratios ours/baseline, and the ANN recall.

    python bench/matcher_bench.py                # 1,000 (with optimum), 100,000 x 768,
                                                 # 1,000,000 x 256
    python bench/matcher_bench.py --quick        # 400 (with optimum) and 30,000 x 256
    python bench/matcher_bench.py --sizes 1000x64,50000x384
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
from matcher.core import MatchParams, PoolSnapshot, match_pool
from matcher.core.model import Constraints
from matcher.core.prepare import prepare
from matcher.synthetic import clustered_pool

DEFAULT_SIZES = "1000x64,100000x768,1000000x256"
QUICK_SIZES = "400x64,30000x256"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help=f"NxDIM,... (default {DEFAULT_SIZES})")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nprobe", type=int, default=FaissIvfSearch.nprobe)
    parser.add_argument("--optimum-max", type=int, default=1000)
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    for n, dim in sizes:
        print(report(run_size(n, dim, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
