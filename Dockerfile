# URLhaus example connector (connector_batching), OpenCTI external-import convention.
# Build from the repository root:  docker build -t connector-batching-urlhaus .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    URLHAUS_OFFLINE_DIRECTORY=/data \
    URLHAUS_DEAD_LETTER_PATH=/data/dead_letters.db

WORKDIR /opt/opencti-connector-urlhaus

# Build context: only what the package needs.
COPY pyproject.toml README.md ./
COPY connector_batching ./connector_batching
COPY example_connector ./example_connector

RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin connector \
    && mkdir -p /data \
    && chown connector /data

# A config.yml mounted here is read; environment variables override it.
USER 10001

ENTRYPOINT ["python", "-m", "example_connector"]
