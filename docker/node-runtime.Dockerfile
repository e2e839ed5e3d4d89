# The Node.js bot runtime: Debian's `nodejs` and the Node SDK (sdk/node, `@botfleet/runtime`, no
# dependencies), for bots of an `exec` kind on the docker and nomad backends, e.g.
#   {"run": {"exec": ["node", "/opt/botfleet/examples/echo.mjs"]},
#    "image": "botfleet-node-runtime:<version>"}
# The kind's argv replaces the entrypoint; configured by the BOTFLEET_* environment variables, as
# the Python runtime is. Built by scripts/build-images.sh (apt reaches Debian's mirror through
# `--network host`; the layer stays cached once built):
#   docker build --network host -f docker/node-runtime.Dockerfile -t botfleet-node-runtime:latest .
# `import '@botfleet/runtime'` resolves from any file in the image: the SDK is
# /opt/botfleet/node_modules/@botfleet/runtime and /node_modules points there (node looks for
# node_modules in every parent folder, up to /). A bot's own image: `FROM` this one, then
#   COPY bot.mjs /app/bot.mjs   and the kind's   "exec": ["node", "/app/bot.mjs"]
# Runs as uid 10001 with a read-only root filesystem and a tmpfs /tmp, as the runtime image does.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title=botfleet-node-runtime
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends nodejs >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* /usr/share/doc/* /usr/share/man/* \
 && groupadd --system --gid 10001 bot \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin bot \
 && mkdir -m 0700 /state && chown 10001:10001 /state \
 && mkdir -p /opt/botfleet/node_modules/@botfleet \
 && ln -s /opt/botfleet/node_modules /node_modules
COPY sdk/node/package.json sdk/node/index.js sdk/node/index.d.ts sdk/node/README.md \
     /opt/botfleet/node_modules/@botfleet/runtime/
COPY sdk/node/src /opt/botfleet/node_modules/@botfleet/runtime/src
COPY sdk/node/examples /opt/botfleet/examples
ENV NODE_ENV=production
USER 10001:10001
ENTRYPOINT ["node"]
CMD ["/opt/botfleet/examples/echo.mjs"]
