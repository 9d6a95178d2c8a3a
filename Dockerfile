# syntax=docker/dockerfile:1
#
# One image for every carehub service; the command picks the service:
#   docker run IMAGE ingest          (default)
#   docker run IMAGE topics          (create carehub's topics, then exit)
#   docker run IMAGE demo-feed       (publish the synthetic region)
#   docker run --entrypoint python IMAGE -m carehub.services.identity   (any service by its module:
#                                    ingest, identity, timeline, indicators, alerts, gateway, mllp;
#                                    docker-compose.yml runs them this way)
#
# Two stages: the first builds a virtualenv, the second copies only that venv, so
# neither the source tree nor pip's build-time leftovers reach the final image. All
# of carehub's dependencies ship manylinux wheels for CPython 3.11 (checked for
# linux/amd64), so no compiler is installed at any stage.

# Pinned by tag, matching the Python the project is developed and tested on (3.11.7).
# Pin by digest too (python:3.11.7-slim-bookworm@sha256:...) once images are published.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/carehub
WORKDIR /src
# .dockerignore keeps the venv, tests, caches, .env and VCS data out of this copy.
COPY . .
RUN /opt/carehub/bin/pip install --no-cache-dir .


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="carehub" \
      org.opencontainers.image.description="Integration hub for integrated health and social care" \
      org.opencontainers.image.licenses="Apache-2.0"

# PYTHONUNBUFFERED: logs reach `docker logs` / kubectl logs at once.
# PYTHONDONTWRITEBYTECODE: the root filesystem is mounted read-only at run time; the
#   venv's .pyc files were already compiled by pip in the build stage.
# CAREHUB_DATA_DIR: the one writable place (a volume in compose, an emptyDir in k8s).
ENV PATH=/opt/carehub/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CAREHUB_DATA_DIR=/var/lib/carehub

COPY --from=build /opt/carehub /opt/carehub

# Fixed uid/gid 10001 (above any host or distro range) so Kubernetes' runAsUser and
# file ownership on volumes line up. The data dir exists in the image owned by that
# user, so a fresh named volume mounted there inherits the ownership. HOME points at
# it too: nothing else on the filesystem is writable. /var/lib/carehub-pki is where compose's
# one-shot `pki` service writes the demo's TLS material (a named volume, which takes this
# directory's ownership when first mounted) and where the gateway reads it.
RUN groupadd --system --gid 10001 carehub \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/carehub \
        --no-create-home --shell /usr/sbin/nologin carehub \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/carehub /var/lib/carehub-pki

WORKDIR /var/lib/carehub
# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001

# Prometheus metrics (CAREHUB_METRICS_PORT); bind it with CAREHUB_METRICS_HOST=0.0.0.0.
# The partner gateway's gRPC port (CAREHUB_GATEWAY_PORT), with CAREHUB_GATEWAY_HOST=0.0.0.0.
EXPOSE 9464 50051

ENTRYPOINT ["carehub"]
CMD ["ingest"]
