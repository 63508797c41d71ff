#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis are running on this machine: starts them,
# and on Debian installs them first when they are missing. Idempotent.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

wait_for() { # name, check
  for _ in $(seq 1 60); do "$2" && return 0; sleep 0.5; done
  echo "services: $1 did not become ready" >&2; return 1
}

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "services: $* missing and this is not Debian: install PostgreSQL and Redis yourself" >&2
    exit 1
  fi
  echo "services: installing $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL
if ! pg_ready; then
  if ! command -v pg_ctlcluster >/dev/null; then apt_install postgresql postgresql-client; fi
  version=$(ls /etc/postgresql | sort -V | tail -1)
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then $SUDO pg_createcluster "$version" main; fi
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # Local development and CI only: trust connections over loopback.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    echo "services: adding 'trust' for 127.0.0.1 and ::1 to $hba${SUDO:+ (with sudo)}: local connections need no password"
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main restart
  wait_for PostgreSQL pg_ready
fi

# Redis
if ! redis_ready; then
  if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
  mkdir -p /tmp/allocation-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/allocation-redis --logfile /tmp/allocation-redis/redis.log
  wait_for Redis redis_ready
fi

# The database `make run` uses (tests make their own).
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='allocation'" postgres | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE allocation" postgres
fi
echo "services: PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 are up"
