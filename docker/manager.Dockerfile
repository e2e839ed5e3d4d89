# The botfleet manager (API, reconciler, orchestrator backends). Built from a wheelhouse so the
# build needs no network (scripts/build-images.sh does all this):
#   pip wheel --wheel-dir docker/wheels ./runtime .
#   docker build -f docker/manager.Dockerfile -t botfleet-manager:latest .
ARG BASE_IMAGE=python:3.11-slim

# The wheels are installed in a build stage: without BuildKit a COPY is a layer of its own, so
# deleting /wheels later would not make the final image any smaller.
FROM ${BASE_IMAGE} AS build
COPY docker/wheels /wheels
RUN python3 -m venv /opt/botfleet \
 && /opt/botfleet/bin/pip install --no-cache-dir --no-index --find-links=/wheels botfleet-server \
 && rm -rf /wheels

FROM ${BASE_IMAGE}
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
