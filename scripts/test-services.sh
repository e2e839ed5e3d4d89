#!/usr/bin/env bash
# Installs (where missing) and starts the real services the test suite talks to:
# PostgreSQL on 127.0.0.1:5432 with a `botfleet` superuser, and the redis-server binary
# (the tests start their own redis-server processes on loopback ports), and Chromium for the tests
# that open a page in a real browser (no browser can be downloaded here: Debian's package).
set -euo pipefail

need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
  || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if ((${#need_apt[@]})); then
  echo "test-services: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The dashboard's browser tests drive Debian's chromium through its chromedriver (no download).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "test-services: installing chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^${pg_version} main$"; then
  pg_createcluster "$pg_version" main >/dev/null
fi
if ! pg_lsclusters -h | awk '$1=="'"$pg_version"'" && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$pg_version" main start
fi
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.2
done
pg_isready -h 127.0.0.1 -p 5432

su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='botfleet'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE botfleet LOGIN SUPERUSER PASSWORD 'botfleet'\""
# Many managers and bots connect at once in the tests.
current=$(su postgres -c "psql -qtAc 'SHOW max_connections'")
if [ "$current" -lt 500 ]; then
  su postgres -c "psql -qc 'ALTER SYSTEM SET max_connections = 500'"
  pg_ctlcluster "$pg_version" main restart
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
echo "test-services: PostgreSQL $pg_version on 127.0.0.1:5432, redis-server at $(command -v redis-server)"

# The process backend runs each bot under a uid of its own when the manager is root (the suite
# runs as root): the bots' gid must traverse every directory above the real interpreter and the
# repository. Grant it (x only, an ACL) where "others" may not; README, "the process backend".
if [ "$(id -u)" = 0 ]; then
  if ! command -v setfacl >/dev/null 2>&1; then
    echo "test-services: installing acl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq acl >/dev/null
  fi
  bot_gid=${BOTFLEET_PROCESS_GID:-${BOTFLEET_PROCESS_UID_BASE:-200000}}
  repo=$(cd "$(dirname "$0")/.." && pwd -P)
  python=$(readlink -f "$repo/.venv/bin/python" || true)
  [ -n "$python" ] || python=$(readlink -f "$(command -v python3)")
  for dir in "$repo" "$(dirname "$python")"; do
    case "$dir" in /*) ;; *) echo "test-services: not an absolute path: $dir" >&2; exit 1 ;; esac
    while [ "$dir" != "/" ]; do
      if [ $((8#$(stat -c %a "$dir") & 1)) = 0 ]; then
        setfacl -m "g:${bot_gid}:x" "$dir"
        echo "test-services: gid $bot_gid may now traverse $dir"
      fi
      dir=$(dirname "$dir")
    done
  done
fi
