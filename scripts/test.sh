#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs all of it.
# Idempotent: a second run skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
# liburing lets the RTP relay build its io_uring backend; without it the epoll path is built.
dpkg -s liburing-dev >/dev/null 2>&1 || need_apt+=(liburing-dev)
# clang (BPF target) and libbpf build the relay's kernel fast path; without them it is left out.
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
dpkg -s libbpf-dev >/dev/null 2>&1 || need_apt+=(libbpf-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"
python3 -m ruff check sbc routing loadtest tests rtp_relay_ext
# A throw-away PostgreSQL and Redis (installed when missing) for the store and cluster tests:
# exports SBC_TEST_PG_URL and SBC_TEST_REDIS_URL, stopped however this script ends.
trap 'sbc_services_stop 2>/dev/null || true' EXIT
source scripts/services.sh
python3 -m pytest -q "$@"
