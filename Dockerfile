# syntax=docker/dockerfile:1
# denokv: a KV Connect server on SQLite.
#
#   docker build -t denokv .
#   docker run --read-only --tmpfs /tmp -v denokv-data:/data -p 4512:4512 \
#     -e DENO_KV_ACCESS_TOKEN=... denokv
#
# The root filesystem may be read-only: the database lives in the /data
# volume, bytecode is compiled at build time, and /tmp only needs a tmpfs.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the package and its dependencies into a virtualenv -------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/denokv
WORKDIR /src
# .dockerignore lets in only pyproject.toml, README.md and the packages.
COPY . .
RUN /opt/denokv/bin/pip install . \
    && /opt/denokv/bin/python -m compileall -q /opt/denokv/lib \
    && /opt/denokv/bin/denokv --help > /dev/null

# --- runtime: the virtualenv on the same base, run as uid 10001 ---------------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/denokv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DENO_KV_SQLITE_PATH=/data/denokv.sqlite
RUN groupadd --system --gid 10001 denokv \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin denokv \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0750 /data
COPY --from=build /opt/denokv /opt/denokv
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 4512
# No curl in the image: the healthcheck is the interpreter that is there anyway.
# DENO_KV_HEALTHCHECK_URL overrides the URL when --addr is changed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = os.environ.get('DENO_KV_HEALTHCHECK_URL', 'http://127.0.0.1:4512/healthz'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]
ENTRYPOINT ["denokv"]
CMD ["--sqlite-path", "/data/denokv.sqlite", "serve", "--addr", "0.0.0.0:4512"]
