#!/usr/bin/env bash
# Throw-away PostgreSQL and Redis on loopback for the tests of the cluster store.
#
#   source scripts/services.sh             # start both; exports SBC_TEST_PG_URL, SBC_TEST_REDIS_URL
#                                          # and SBC_SERVICES_DIR; `sbc_services_stop` ends them
#   bash scripts/services.sh start         # the same, printing the export lines (services keep running)
#   bash scripts/services.sh stop DIR      # end what `start` left in DIR (SBC_SERVICES_DIR)
#
# Installs the Debian packages `postgresql` and `redis-server` with apt-get when missing. Nothing
# of the machine's own PostgreSQL or Redis is used or touched: a fresh cluster is initdb'd into a
# temporary directory and a redis-server runs without persistence, each on a free port of
# 127.0.0.1. Durability is switched off (fsync, synchronous_commit, RDB/AOF): the data is
# thrown away at the end, and the tests are about behaviour, not crash safety.
# A variable already set in the environment (an external server, e.g. in CI) is kept and that
# service is not started.

# How long pg_ctl and redis-server get to come up (initdb plus start takes ~2 s on this machine).
SBC_SERVICES_START_TIMEOUT_S=30
# Connections the throw-away PostgreSQL accepts: two `sbc run` nodes plus the test process with
# their pools (SQLAlchemy's default pool is 5 + 10 overflow per engine) stay well under it.
SBC_SERVICES_PG_MAX_CONNECTIONS=200

_sbc_services_install() {
  local need=()
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

_sbc_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Run a PostgreSQL server binary: as the `postgres` user when we are root (postgres refuses root).
_sbc_as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

sbc_services_start() {
  _sbc_services_install
  local dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/sbc-services.XXXXXX")"
  chmod 755 "$dir"
  export SBC_SERVICES_DIR="$dir"
  if [ -z "${SBC_TEST_PG_URL:-}" ]; then
    local bin port
    bin="$(dirname "$(compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n 1)")"
    port="$(_sbc_free_port)"
    mkdir -p "$dir/pg" "$dir/run"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir/pg" "$dir/run"
    _sbc_as_pg "$bin/initdb" -D "$dir/pg" -U sbc --auth=trust --encoding=UTF8 --locale=C -N >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; return 1; }
    _sbc_as_pg "$bin/pg_ctl" -D "$dir/pg" -l "$dir/run/postgresql.log" -w -t "$SBC_SERVICES_START_TIMEOUT_S" \
      -o "-h 127.0.0.1 -p $port -k $dir/run -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=$SBC_SERVICES_PG_MAX_CONNECTIONS" \
      start >/dev/null || { cat "$dir/run/postgresql.log" >&2; return 1; }
    echo "$bin" >"$dir/pg.bin"
    "$bin/psql" -q -h 127.0.0.1 -p "$port" -U sbc -d postgres -c "CREATE DATABASE sbc" >/dev/null
    export SBC_TEST_PG_URL="postgresql+asyncpg://sbc@127.0.0.1:$port/sbc"
  fi
  if [ -z "${SBC_TEST_REDIS_URL:-}" ]; then
    local rport i
    rport="$(_sbc_free_port)"
    redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no --daemonize yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
    for ((i = 0; i < SBC_SERVICES_START_TIMEOUT_S * 10; i++)); do
      redis-cli -h 127.0.0.1 -p "$rport" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$rport" ping >/dev/null || { cat "$dir/redis.log" >&2; return 1; }
    echo "$rport" >"$dir/redis.port"
    export SBC_TEST_REDIS_URL="redis://127.0.0.1:$rport/0"
  fi
}

# Stop the services started into DIR (default: $SBC_SERVICES_DIR) and remove DIR.
sbc_services_stop() {
  local dir="${1:-${SBC_SERVICES_DIR:-}}"
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  if [ -f "$dir/pg.bin" ]; then
    _sbc_as_pg "$(cat "$dir/pg.bin")/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$dir/redis.port" ]; then
    redis-cli -h 127.0.0.1 -p "$(cat "$dir/redis.port")" shutdown nosave >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-start}" in
    start)
      sbc_services_start
      echo "export SBC_TEST_PG_URL='$SBC_TEST_PG_URL'"
      echo "export SBC_TEST_REDIS_URL='$SBC_TEST_REDIS_URL'"
      echo "export SBC_SERVICES_DIR='$SBC_SERVICES_DIR'"
      echo "# stop with: bash $0 stop $SBC_SERVICES_DIR" ;;
    stop) sbc_services_stop "${2:-}" ;;
    *) echo "usage: $0 [start | stop DIR]" >&2; exit 2 ;;
  esac
else
  sbc_services_start
fi
