# The botfleet manager. Built from a wheelhouse so the build needs no network:
#   pip wheel --wheel-dir docker/wheels .   (on the host)
#   docker build -f docker/manager.Dockerfile --build-arg BASE_IMAGE=python:3.11-slim .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
COPY docker/wheels /wheels
RUN pip install --no-index --find-links=/wheels botfleet && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /data botfleet && mkdir -p /data \
 && chown botfleet /data
USER botfleet
ENV BOTFLEET_HOST=0.0.0.0 BOTFLEET_DATA_DIR=/data
EXPOSE 8080
CMD ["botfleet", "serve"]
