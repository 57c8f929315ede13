# syntax=docker/dockerfile:1
# adoptstream worker image. Build: docker build -t adoptstream:0.1.0 .
# Run:   docker run --rm -p 127.0.0.1:6066:6066 -v adoptstream-data:/var/lib/adoptstream \
#          -e ADOPTSTREAM_BROKER=kafka://BROKER:9092 adoptstream:0.1.0
# Every worker flag can come from its ADOPTSTREAM_* variable (ADOPTSTREAM_TOPIC, _APP_ID, _PARTITIONS,
# _STORE, ...), so the same image serves docker-compose.yml and deploy/k8s/ without extra arguments.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/adoptstream
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/adoptstream/bin/pip install . && /opt/adoptstream/bin/adoptstream --version

FROM python:${PYTHON_VERSION}-slim
# tini as PID 1 forwards SIGTERM to the worker (which then stops its consumers, leaving the consumer
# groups unless it is a static member with ADOPTSTREAM_INSTANCE_ID, and flushes its RocksDB state) and
# reaps children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 adoptstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/adoptstream --no-create-home \
      --shell /usr/sbin/nologin adoptstream \
 && mkdir -p /var/lib/adoptstream \
 && chown 10001:10001 /var/lib/adoptstream
COPY --from=build /opt/adoptstream /opt/adoptstream
# ADOPTSTREAM_WEB_HOST=0.0.0.0: the worker's default is loopback, which inside the container's own
# network namespace nobody else (Prometheus, probes, the Docker port mapping) can reach. What is
# reachable from outside is decided by the port publishing (127.0.0.1:... in docker-compose.yml).
ENV PATH=/opt/adoptstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ADOPTSTREAM_WEB_HOST=0.0.0.0 \
    ADOPTSTREAM_WEB_PORT=6066 \
    ADOPTSTREAM_DATA_DIR=/var/lib/adoptstream \
    ADOPTSTREAM_STORE=rocksdb
USER 10001:10001
WORKDIR /var/lib/adoptstream
# RocksDB state (rebuilt from the changelog topic when lost, but a kept volume makes restarts fast).
VOLUME ["/var/lib/adoptstream"]
EXPOSE 6066
# /healthz needs no credentials; a web config file (ADOPTSTREAM_WEB_CONFIG_FILE) may make it TLS only, so
# the check tries plain HTTP, then TLS to its own loopback port without verifying the certificate.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request as u\nport = os.environ.get('ADOPTSTREAM_WEB_PORT', '6066')\ntry: u.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)\nexcept OSError: u.urlopen(f'https://127.0.0.1:{port}/healthz', timeout=2, context=ssl._create_unverified_context())"]
ENTRYPOINT ["tini", "--", "adoptstream"]
CMD ["worker"]
