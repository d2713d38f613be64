"""Operating Mosaic Match: the process supervisor (``mosaic run``), dead-letter tools,
consumer-lag metrics, logging setup and the ports every process serves /metrics on."""
