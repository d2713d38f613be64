"""``mosaic index create|status``: the Pinecone serverless index the vector index uses.

``create`` makes it from settings (``vector_index.pinecone_index_name``, ``_metric``,
``_cloud``, ``_region``; the dimension is the embedder's) and waits until it is ready;
an existing index of the same shape is left alone. Both print one JSON object, whose
``host`` goes to ``MOSAIC_VECTOR_INDEX__PINECONE_HOST``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def register(subparsers: Any) -> None:
    index = subparsers.add_parser("index", help="the Pinecone index of the profile vectors")
    sub = index.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create the serverless index from settings "
                                           "(nothing if it exists with the same shape)")
    create.add_argument("--wait-seconds", type=int, default=300, metavar="SECONDS",
                        help="longest wait for the new index to be ready")
    create.set_defaults(func=_create)
    status = sub.add_parser("status", help="describe the index (exit 1 when it is missing "
                                           "or not ready)")
    status.set_defaults(func=_status)


def _create(args: argparse.Namespace) -> int:
    from mosaic.errors import ConfigError
    from mosaic.settings import Settings
    from profiles.embedders import embedder_dim
    from profiles.pinecone_index import create_index

    settings = Settings()
    try:
        info = create_index(settings.vector_index, dim=embedder_dim(settings.embedding),
                            timeout_seconds=args.wait_seconds)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps(asdict(info)))
    return 0 if info.ready else 1


def _status(_args: argparse.Namespace) -> int:
    from mosaic.settings import Settings
    from profiles.pinecone_index import index_status

    info = index_status(Settings().vector_index)
    print(json.dumps(asdict(info)))
    return 0 if info.ready else 1
