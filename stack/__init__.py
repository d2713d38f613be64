"""The real local stack: Kafka, Cassandra, PostgreSQL + Nakama and an S3 endpoint.

Installed from public registries on first use, cached, started and health-checked by
this package; see ``mosaic stack --help``.
"""
