"""The embedding agent: opt-in topic -> profile traits -> embeddings -> seekers topic.

- ``pipeline``: one batch's work (decode, order, embed, index, publish), no Kafka client;
- ``agent``: the faust app and agent that consume the opt-in topic and hand batches over;
- ``worker``: builds every adapter from settings and runs the agent;
- ``outputs``: the seekers sink, the dead-letter protocol and the retry of a stage;
- ``traits``: a batch's trait texts fetched on a thread pool;
- ``metrics``: Prometheus metrics and the timing wrappers around the adapters.

docs/embedding-pipeline.md describes the whole.
"""
