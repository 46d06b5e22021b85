#!/usr/bin/env bash
# Debian packages the test suite needs beyond the Python lock file. Installs only what is missing
# (needs root, as on the CI machines); prints what it would install otherwise. Called by `make test`.
#   postgresql   initdb/pg_ctl for tests/integration/test_postgres.py (a real PostgreSQL server)
#   util-linux   runuser: PostgreSQL refuses to run as root, the test starts it as "postgres"
set -euo pipefail

need=()
if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  need+=(postgresql)
fi
command -v runuser >/dev/null || need+=(util-linux)
# Extra packages can be named by callers (e.g. the browser tests' chromium): SYSTEM_DEPS="a b".
for pkg in ${SYSTEM_DEPS:-}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done

if ((${#need[@]} == 0)); then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing Debian packages: ${need[*]} (install them as root: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
