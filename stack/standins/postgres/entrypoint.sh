#!/bin/bash
# What the official postgres image's entrypoint does for this project's compose: on the first
# start, initdb with POSTGRES_USER / POSTGRES_PASSWORD and create POSTGRES_DB (on a private
# socket, so `pg_isready` says ready only once the real server runs); then run postgres as the
# postgres user.
set -Eeo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  exec gosu postgres "$BASH_SOURCE" "$@"
fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "$POSTGRES_PASSWORD" ]; then
    echo >&2 'error: the database is new and POSTGRES_PASSWORD is not set'; exit 1
  fi
  user=${POSTGRES_USER:-postgres}; db=${POSTGRES_DB:-$user}
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >/dev/null
  printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  export PGHOST=/tmp/pg-init; mkdir -p "$PGHOST"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k $PGHOST" -w start >/dev/null
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --username "$user" --dbname postgres -q --set db="$db" \
      <<<'CREATE DATABASE :"db";'
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  unset PGHOST; rm -rf /tmp/pg-init
fi
exec "$@"
