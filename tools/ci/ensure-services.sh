#!/usr/bin/env bash
# Makes sure Postgres (127.0.0.1:5432, trust, database `test`) and Redis (127.0.0.1:6379) answer:
# starts them when installed but down, installs them from Debian's packages when missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # name, command
  for _ in $(seq 1 60); do
    if eval "$2" >/dev/null 2>&1; then echo "== $1 is up"; return 0; fi
    sleep 0.5
  done
  echo "!! $1 did not come up" >&2
  return 1
}

postgres_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
test_db_answers() { psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; }
# As the postgres OS user (peer authentication on the local socket): runuser as root, sudo otherwise.
as_postgres() { if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

# Trust local TCP connections for the test database (CI only runs on a throwaway machine).
trust_local_connections() { # conf dir
  if $SUDO grep -q "parley-ci" "$1/pg_hba.conf"; then return 0; fi
  { printf '# parley-ci\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust\n'
    $SUDO cat "$1/pg_hba.conf"; } | $SUDO tee "$1/pg_hba.conf.new" >/dev/null
  $SUDO chown --reference="$1/pg_hba.conf" "$1/pg_hba.conf.new"
  $SUDO chmod --reference="$1/pg_hba.conf" "$1/pg_hba.conf.new"
  $SUDO mv "$1/pg_hba.conf.new" "$1/pg_hba.conf"
}
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

# --- Postgres
if ! command -v pg_isready >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "== installing postgresql"
  apt_install postgresql
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
conf=/etc/postgresql/$version/main
if ! postgres_up; then
  trust_local_connections "$conf"
  echo "== starting postgresql $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi
wait_for postgres postgres_up
if ! test_db_answers; then
  # Running already, but with password authentication, or without the test database.
  trust_local_connections "$conf"
  as_postgres psql -q -c 'select pg_reload_conf()' >/dev/null
  if ! test_db_answers; then as_postgres psql -q -c 'create database test' >/dev/null; fi
fi
test_db_answers || { echo "!! postgres: database test does not answer on 127.0.0.1:5432" >&2; exit 1; }

# --- Redis
if ! command -v redis-server >/dev/null; then
  echo "== installing redis"
  apt_install redis-server
fi
if ! redis_up; then
  echo "== starting redis"
  mkdir -p /tmp/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/redis \
    --logfile /tmp/redis/ci.log
fi
wait_for redis redis_up

# --- Chromium, for the web client's end-to-end test (Debian's package; no browser download)
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium"
  apt_install chromium
fi
echo "== chromium: $(/usr/bin/chromium --version 2>/dev/null || echo missing)"
