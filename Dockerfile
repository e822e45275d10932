# URLhaus example connector (connector_batching), in the OpenCTI connector convention:
# python:3.12-alpine, the connector under /opt/opencti-connector-*, /entrypoint.sh.
# Build from the repository root:  docker build -t connector-urlhaus-batching:0.1.0 .
FROM python:3.12-alpine

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONNECTOR_TYPE=EXTERNAL_IMPORT \
    URLHAUS_DEAD_LETTER_PATH=/data/dead_letters.db

# The library, from its source laid out as in the repository, with the example's
# requirements: the same command as from a checkout.  No compiler is installed: the
# dependencies install from musllinux (Alpine) wheels; one without such a wheel would
# make this step fail, not the image misbehave.
WORKDIR /usr/src/connector-batching
COPY pyproject.toml README.md ./
COPY connector_batching ./connector_batching
COPY example_connector/requirements.txt ./example_connector/requirements.txt
RUN pip install --no-cache-dir . -r example_connector/requirements.txt

# The connector itself is not installed: `python -m example_connector` runs it from the
# working directory, where a mounted config.yml is read too.
WORKDIR /opt/opencti-connector-urlhaus
COPY example_connector ./example_connector
COPY entrypoint.sh /entrypoint.sh
RUN adduser -D -H -u 10001 -s /sbin/nologin connector \
    && mkdir -p /data \
    && chown connector /data \
    && chmod 0755 /entrypoint.sh

# Environment variables override config.yml.
USER 10001

ENTRYPOINT ["/entrypoint.sh"]
