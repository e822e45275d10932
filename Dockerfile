# URLhaus example connector (connector_batching), in the OpenCTI connector convention:
# python:3.12-alpine, the connector under /opt/opencti-connector-*, /entrypoint.sh.
# Build from the repository root:  docker build -t connector-urlhaus-batching:0.1.0 .
FROM python:3.12-alpine

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONNECTOR_TYPE=EXTERNAL_IMPORT \
    URLHAUS_DEAD_LETTER_PATH=/data/dead_letters.db

WORKDIR /opt/opencti-connector-urlhaus

# Build context: only what the package needs.
COPY pyproject.toml README.md ./
COPY connector_batching ./connector_batching
COPY example_connector ./example_connector
COPY entrypoint.sh /entrypoint.sh

# No compiler is installed: the dependencies install from musllinux (Alpine) wheels; one
# without such a wheel would make this step fail, not the image misbehave.
RUN pip install --no-cache-dir . \
    && adduser -D -H -u 10001 -s /sbin/nologin connector \
    && mkdir -p /data \
    && chown connector /data \
    && chmod 0755 /entrypoint.sh

# A config.yml mounted in the working directory is read; environment variables override it.
USER 10001

ENTRYPOINT ["/entrypoint.sh"]
