"""Orchestration: the ``mosaic`` command line and the demo.

The top layer. It may import every other package (stack, producers, consumers, matcher,
profiles, streams, schemas, mosaic); nothing imports it. See docs/architecture.md.
"""
