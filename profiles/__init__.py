"""Profile adapters for the embedding pipeline: insights -> trait text -> vector -> index.

Public API (see docs/profiles.md):

- insights: ``InsightStore`` (``S3InsightStore``, ``InMemoryInsightStore``)
- traits: ``TraitsService`` over a ``TraitsCache`` (``S3TraitsCache``, ``InMemoryTraitsCache``)
- embedders: ``Embedder`` (``LocalE5Embedder``, ``VertexEmbedder``)
- index: ``VectorIndex`` (``PineconeVectorIndex``, ``CassandraVectorIndex``)
- the test fakes (``FakeEmbedder``, ``InMemoryVectorIndex``) live in ``tests/fakes.py``.
- ``profiles.bootstrap`` builds them from ``mosaic.settings.Settings``.

Nothing here connects at import time.
"""
