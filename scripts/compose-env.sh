#!/usr/bin/env bash
# Write the secrets compose.yaml needs into .env (beside compose.yaml, or the file named as the
# first argument): random POSTGRES_PASSWORD, REDIS_PASSWORD and BOTFLEET_ADMIN_TOKEN, each only
# when absent, so running it again keeps what is there. The file is mode 0600 and ignored by git;
# compose refuses to start without these values, and compose.yaml holds no password of its own.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
file="${1:-$here/.env}"

# 32 random bytes as hex: URL-safe, so they go into database and Redis URLs as they are.
random_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

umask 077
touch "$file"
chmod 600 "$file"
if [ -s "$file" ] && [ -n "$(tail -c1 "$file")" ]; then echo >>"$file"; fi
added=()
for name in POSTGRES_PASSWORD REDIS_PASSWORD BOTFLEET_ADMIN_TOKEN; do
  if ! grep -q "^${name}=" "$file"; then
    printf '%s=%s\n' "$name" "$(random_hex)" >>"$file"
    added+=("$name")
  fi
done
if ((${#added[@]})); then
  echo "compose-env: wrote ${added[*]} to $file (mode 0600)"
else
  echo "compose-env: $file already holds every value; nothing changed"
fi
