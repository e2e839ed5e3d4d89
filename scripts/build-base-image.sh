#!/usr/bin/env bash
# Builds the local base image botfleet-base:bookworm (Debian bookworm minbase + python3 3.11 +
# venv) with debootstrap, for machines where no image can be pulled from a registry. The
# Dockerfiles keep python:3.11-slim as their default; build-images.sh passes this one instead.
# Idempotent: does nothing when the image exists. Prints the image name.
set -euo pipefail

image=${BASE_IMAGE:-botfleet-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq debootstrap >/dev/null
fi

work=$(mktemp -d /tmp/botfleet-base.XXXXXX)
# --one-file-system: a failed debootstrap may leave /proc or /sys mounted in the target.
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs=$work/rootfs

echo "build-base-image: debootstrap bookworm into $rootfs (about a minute)" >&2
if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
fi

# Keep the image small: no apt caches or lists, logs, docs, man pages or locales.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*

# An imported image has no config: set PATH, which the Dockerfiles extend.
tar -C "$rootfs" --numeric-owner -c . \
  | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$image" >/dev/null
echo "$image"
