#!/usr/bin/env bash
# Makes sure a Docker Engine answers on this machine, for the docker backend's tests and the image
# builds: installs docker.io where dockerd is missing, and docker-compose (which checks
# compose.yaml in tests/e2e/test_compose.py; bookworm's is 1.29.2) and iproute2 (the Swarm nodes'
# network namespaces of tests/cluster) where missing, and starts
# dockerd when `docker info` fails. The engine has no default bridge and no iptables rules:
# every test container uses host networking (the docker backend's default).
# Idempotent: a running engine is left alone.
set -euo pipefail

log=/var/log/botfleet-dockerd.log

export DEBIAN_FRONTEND=noninteractive
updated=
apt_install() {
  echo "docker-engine: installing $*"
  [ -n "$updated" ] || apt-get update -qq
  updated=1
  apt-get install -y -qq "$@" >/dev/null
}
command -v dockerd >/dev/null 2>&1 || apt_install docker.io
# `ip` makes the network namespaces of the three-node Swarm of tests/cluster.
command -v ip >/dev/null 2>&1 || apt_install iproute2
# Without its recommends: docker-compose recommends docker.io, which must not replace an engine
# installed some other way.
command -v docker-compose >/dev/null 2>&1 || apt_install --no-install-recommends docker-compose

if docker info >/dev/null 2>&1; then
  echo "docker-engine: $(docker version --format 'engine {{.Server.Version}}') already running"
  exit 0
fi

# A session that was cut off leaves pid files behind, and dockerd refuses to start over them.
for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
  if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    rm -f "$pidfile"
  fi
done

echo "docker-engine: starting dockerd (log: $log)"
nohup dockerd --bridge=none --iptables=false --ip6tables=false >>"$log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    echo "docker-engine: $(docker version --format 'engine {{.Server.Version}}') ready"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break  # dockerd exited: no point waiting
  sleep 0.5
done
echo "docker-engine: dockerd did not answer (within 60 s); last lines of $log:" >&2
tail -n 30 "$log" >&2
exit 1
