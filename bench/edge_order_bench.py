"""The greedy order of a pool's candidate edges, side by side: the three sort keys
(score, then both ends' user-id ranks) against one stable sort by score, which gives the
same order when the edges are sorted by pair and the rows are in user-id order (the
matcher service's snapshot). Prints time and the peak of numpy's allocations
(tracemalloc) for each, their ratios, and whether the orders are equal.

    python bench/edge_order_bench.py                  # 12,000,000 edges on 1,000,000 users
    python bench/edge_order_bench.py --edges 2000000 --users 100000
    python bench/edge_order_bench.py --continuous     # scores with (almost) no ties

By default the scores have few distinct values (two decimals plus one of three boosts),
so ties, which the user-id order decides, are everywhere; ``--continuous`` draws them
from a continuous range, where the stable sort has no runs of equal keys to profit from.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from matcher.core.graph import unique_edges
from matcher.core.greedy import edge_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=12_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--continuous", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, args.users, args.edges), rng.integers(0, args.users, args.edges)
    keep = a != b
    cos = rng.random(int(keep.sum()))
    edges = unique_edges(a[keep], b[keep], cos if args.continuous else np.round(cos, 2),
                         args.users)
    del a, b, keep, cos
    score = edges.cos + (rng.random(len(edges)) / 10 if args.continuous
                         else rng.integers(0, 3, len(edges)) / 20)
    rank = np.arange(args.users)
    print(f"== {len(edges):,} edges on {args.users:,} users, "
          f"{len(np.unique(score)):,} distinct scores", flush=True)
    best: dict[bool, tuple[float, int]] = {}
    orders: dict[bool, np.ndarray] = {}
    for _ in range(args.repeat):
        for by_pair in (False, True):
            orders.pop(by_pair, None)
            tracemalloc.start()
            started = time.perf_counter()
            orders[by_pair] = edge_order(score, edges.u, edges.v, rank, by_pair=by_pair)
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            way = "one stable sort" if by_pair else "three sort keys"
            print(f"   {way}: {seconds:.2f} s, allocations peak {peak / 2**20:.0f} MiB",
                  flush=True)
            old = best.get(by_pair, (float("inf"), 0))
            best[by_pair] = (min(old[0], seconds), max(old[1], peak))
    (slow, slow_peak), (fast, fast_peak) = best[False], best[True]
    same = bool(np.array_equal(orders[False], orders[True]))
    print(f"== best of {args.repeat}: {slow / fast:.1f}x faster, "
          f"{slow_peak / fast_peak:.2f}x less allocated at the peak, same order: {same}")
    if not same:
        raise SystemExit("the two orders differ")


if __name__ == "__main__":
    main()
