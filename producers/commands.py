"""``mosaic ingress serve|openapi``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    ingress = subparsers.add_parser("ingress", help="the signed HTTP ingress for Nakama RPCs")
    sub = ingress.add_subparsers(dest="ingress_command", metavar="ACTION", required=True)

    serve = sub.add_parser("serve", help="serve the ingress (Kafka + state store from settings)")
    serve.add_argument("--host", help="default: settings.ingress.host")
    serve.add_argument("--port", type=int, help="default: settings.ingress.port")
    serve.set_defaults(func=_serve)

    openapi = sub.add_parser("openapi", help="print the OpenAPI document")
    openapi.set_defaults(func=_openapi)


def _serve(args: argparse.Namespace) -> int:
    from mosaic.settings import Settings
    from producers.bootstrap import build_production_app, serve

    settings = Settings()
    app = build_production_app(settings)
    serve(app, args.host or settings.ingress.host, args.port or settings.ingress.port)
    return 0


def _openapi(_: argparse.Namespace) -> int:
    from mosaic.settings import Settings
    from mosaic.user_state import InMemoryUserStateStore
    from producers.bootstrap import build_app
    from producers.publisher import InMemoryPublisher

    app = build_app(Settings(), publisher=InMemoryPublisher(), store=InMemoryUserStateStore())
    print(json.dumps(app.openapi(), indent=2))
    return 0
