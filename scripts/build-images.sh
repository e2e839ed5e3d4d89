#!/usr/bin/env bash
# Builds botfleet-runtime, botfleet-manager and botfleet-node-runtime, tagged :latest and
# :<version> (pyproject.toml's; the nomad backend's default image is the versioned one, since
# Nomad's docker driver pulls a `:latest` image on every start), with no package index inside the
# Python builds (only Debian's mirror, through --network host: nodejs for the Node image, the
# PostgreSQL client for the manager's `botfleet backup`, each in a layer that stays cached):
# a wheelhouse is made on the host (docker/wheels) and the Dockerfiles install from it. With no
# registry reachable, the base is the local debootstrap image (scripts/build-base-image.sh);
# BASE_IMAGE=python:3.11-slim picks the normal one. Idempotent; prints the image names.
set -euo pipefail
cd "$(dirname "$0")/.."

base=${BASE_IMAGE:-botfleet-base:bookworm}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
[ -n "$version" ] || { echo "build-images: no version in pyproject.toml" >&2; exit 1; }
wheels=docker/wheels
py=.venv/bin/python
[ -x "$py" ] || py=python3

[ "$base" = botfleet-base:bookworm ] && bash scripts/build-base-image.sh >/dev/null

# (a) The wheelhouse. The dependencies' wheels are made once per pyproject.toml; the botfleet
# wheel every time, from a copy of the tracked and new files (no stale build/ dir, no .venv).
# pip resolves with the host's markers: bookworm's python3 is 3.11.2, and redis needs
# async-timeout below 3.11.3, so it is added by hand. SOURCE_DATE_EPOCH makes the wheel
# reproducible, so unchanged sources keep Docker's layer cache (and no new dangling images).
extra=(async-timeout)
mkdir -p "$wheels"
stamp=$wheels/.stamp
want="$(sha256sum pyproject.toml runtime/pyproject.toml) ${extra[*]}"
src=$(mktemp -d /tmp/botfleet-src.XXXXXX)
trap 'rm -rf "$src"' EXIT
git ls-files -z --cached --others --exclude-standard \
  | tar -c --null -T - --ignore-failed-read 2>/dev/null | tar -x -C "$src"
rm -f "$wheels"/botfleet*.whl
export SOURCE_DATE_EPOCH=315532800
# Two distributions: botfleet-runtime (the runtime image installs it alone) and botfleet-server.
"$py" -m pip wheel -qq --no-deps --wheel-dir "$wheels" "$src/runtime" "$src"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # `[telegram]`: the runtime image's optional telegram bot kind (aiogram and its deps).
  "$py" -m pip wheel -qq --find-links "$wheels" --wheel-dir "$wheels" \
    "$src/runtime[telegram]" "$src" "${extra[@]}"
  echo "$want" >"$stamp"
fi

# (b) The images. The v28 CLI has no buildx plugin here and engine 20.10's BuildKit needs it:
# use the classic builder unless buildx is installed.
#
# No dangling (<none>) images are left behind. The classic builder keeps a multi-stage build's
# `build` stage as an untagged image: it is tagged botfleet-build:<name> instead (built first with
# --target, then taken from the cache by the full build), so unchanged sources keep every layer
# cached. A rebuilt image takes the tag of the previous one, which is then removed, unless a
# container still uses it. Only the images these tags named are touched: never a prune, which
# could take an image from a build running beside this one.
classic=
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
  classic=1
fi
build() {
  docker build -q --force-rm --network host --build-arg BASE_IMAGE="$base" "$@" . >/dev/null
}
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
# node-runtime (Node bots of an `exec` kind) has one stage; its apt layer (Debian's nodejs, from
# the mirror through --network host) stays cached, so only a changed sdk/node rebuilds it.
for name in runtime manager node-runtime; do
  tags=("botfleet-$name:latest" "botfleet-$name:$version")
  staged=
  [ -z "$classic" ] || ! grep -q ' AS build$' "docker/$name.Dockerfile" || staged=1
  [ -z "$staged" ] || tags+=("botfleet-build:$name")
  previous=()
  for tag in "${tags[@]}"; do previous+=("$(image_id "$tag")"); done
  [ -z "$staged" ] || build -f "docker/$name.Dockerfile" --target build -t "botfleet-build:$name"
  build -f "docker/$name.Dockerfile" -t "botfleet-$name:latest" -t "botfleet-$name:$version"
  for id in "${previous[@]}"; do
    # Replaced (no tag names it any more): remove it.
    [ -n "$id" ] && [ "$(docker image inspect -f '{{len .RepoTags}}' "$id" 2>/dev/null)" = 0 ] \
      || continue
    docker rmi "$id" >/dev/null 2>&1 \
      || echo "build-images: kept the replaced image ${id:7:12}: a container uses it" >&2
  done
  echo "botfleet-$name:latest botfleet-$name:$version"
done
