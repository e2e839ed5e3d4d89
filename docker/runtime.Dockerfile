# The bot runtime: one container per bot runs `python -m botfleet.runtime`, configured by the
# BOTFLEET_* environment variables. Only the botfleet-runtime distribution (standard library only)
# and its `telegram` extra (aiogram) are installed: never the manager.
# Built from a wheelhouse so the build needs no network (scripts/build-images.sh does all this):
#   pip wheel --wheel-dir docker/wheels './runtime[telegram]'
#   docker build -f docker/runtime.Dockerfile -t botfleet-runtime:latest .
# /state is where a bot's state volume is mounted (a `state_key`); a new named volume copies its
# owner and mode, so the bot (uid 10001) alone may write it.
# Runs as uid 10001 with a read-only root filesystem and a tmpfs /tmp:
#   docker run --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges ...
ARG BASE_IMAGE=python:3.11-slim

# The wheels are installed in a build stage: without BuildKit a COPY is a layer of its own, so
# deleting /wheels later would not make the final image any smaller.
FROM ${BASE_IMAGE} AS build
COPY docker/wheels /wheels
RUN python3 -m venv /opt/botfleet \
 && /opt/botfleet/bin/pip install --no-cache-dir --no-index --find-links=/wheels \
      'botfleet-runtime[telegram]' \
 && rm -rf /wheels

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title=botfleet-runtime
RUN groupadd --system --gid 10001 bot \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin bot \
 && mkdir -m 0700 /state && chown 10001:10001 /state
COPY --from=build /opt/botfleet /opt/botfleet
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/botfleet/bin:$PATH
USER 10001:10001
ENTRYPOINT ["/opt/botfleet/bin/python", "-m", "botfleet.runtime"]
