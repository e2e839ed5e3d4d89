#!/usr/bin/env bash
# Builds the browser bot's image (examples/browser_bot/Dockerfile) on the runtime image that
# scripts/build-images.sh just built: Debian's chromium from the mirror (--network host), a
# minute the first time, then Docker's cache. The image it replaces is removed (each is over
# 1 GB). `make test` runs it in the background while it lints; tests/e2e/test_browser_bot.py
# waits for it (BUILD_PID_FILE) and builds again, from the cache, when run alone.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
runtime=${RUNTIME_IMAGE:-botfleet-runtime:latest}
tag=${BROWSER_IMAGE:-botfleet-browser-bot:latest}
pid_file=${BUILD_PID_FILE:-.botfleet/browser-image.pid}
mkdir -p "$(dirname "$pid_file")"
echo $$ >"$pid_file"
trap 'rm -f "$pid_file"' EXIT

previous=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
docker build -q --network host --build-arg "RUNTIME_IMAGE=$runtime" \
  --label "org.botfleet.version=$version" -t "$tag" examples/browser_bot >/dev/null
now=$(docker image inspect -f '{{.Id}}' "$tag")
if [ -n "$previous" ] && [ "$previous" != "$now" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true  # a container still uses it: kept
fi
echo "$tag"
