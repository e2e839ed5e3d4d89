# The botfleet manager (API, reconciler, orchestrator backends). Built from a wheelhouse, so
# Python packages need no network; only the PostgreSQL client comes from Debian's mirror
# (scripts/build-images.sh does all this):
#   pip wheel --wheel-dir docker/wheels ./runtime .
#   docker build --network host -f docker/manager.Dockerfile -t botfleet-manager:latest .
ARG BASE_IMAGE=python:3.11-slim

# The wheels are installed in a build stage: without BuildKit a COPY is a layer of its own, so
# deleting /wheels later would not make the final image any smaller.
FROM ${BASE_IMAGE} AS build
COPY docker/wheels /wheels
RUN python3 -m venv /opt/botfleet \
 && /opt/botfleet/bin/pip install --no-cache-dir --no-index --find-links=/wheels botfleet-server \
 && rm -rf /wheels

# The PostgreSQL client (pg_dump, pg_restore) for `botfleet backup` / `restore`, from the base's
# Debian (apt reaches the mirror: build-images.sh builds with --network host). pg_dump must be the
# server's major version or newer: python:3.11-slim (Debian trixie) gives 17, bookworm 15. First in
# the stage, so a rebuild with new wheels takes this layer from the cache.
FROM ${BASE_IMAGE}
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends postgresql-client >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* /usr/share/doc/* /usr/share/man/*
LABEL org.opencontainers.image.title=botfleet-manager
RUN groupadd --system --gid 10001 botfleet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /data \
      --shell /usr/sbin/nologin botfleet \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /opt/botfleet /opt/botfleet
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/botfleet/bin:$PATH \
    BOTFLEET_HOST=0.0.0.0 BOTFLEET_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
EXPOSE 8080
CMD ["botfleet", "serve"]
