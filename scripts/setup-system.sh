#!/usr/bin/env bash
# Installs and starts what the platform needs from the system, idempotently.
#   scripts/setup-system.sh run    -> bubblewrap (the embedded sandbox)
#   scripts/setup-system.sh test   -> also Docker (engine started here), the sandbox image, Chromium
set -euo pipefail
mode=${1:-run}
here=$(cd "$(dirname "$0")/.." && pwd)

need_apt=()
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
if [[ $mode == test ]]; then
  command -v dockerd >/dev/null || need_apt+=(docker.io)
  command -v busybox >/dev/null || need_apt+=(busybox-static)
  command -v ip >/dev/null || need_apt+=(iproute2)
  # The browser tests drive Debian's Chromium through Playwright (no browser download).
  [[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
fi

if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "Missing system packages: ${need_apt[*]}. Install them as root: apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
  echo "Installing ${need_apt[*]} ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [[ $mode == test ]]; then
  if ! docker version >/dev/null 2>&1; then
    echo "Starting dockerd ..."
    (dockerd >/tmp/edc-dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
    docker version >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/edc-dockerd.log" >&2; exit 1; }
  fi
  if [[ -x $here/deploy/sandbox-image/build.sh ]]; then
    "$here/deploy/sandbox-image/build.sh"
  fi
fi
