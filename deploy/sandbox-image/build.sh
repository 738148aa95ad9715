#!/usr/bin/env bash
# Build the sandbox image (EDC_SANDBOX_IMAGE, default edc-sandbox:latest) from this machine's own
# files: no registry needed. Idempotent: does nothing when its inputs have not changed.
#
#   deploy/sandbox-image/build.sh [--tag NAME:TAG] [--force] [--keep-rootfs DIR]
#
# Needs a running Docker engine, busybox (installed with apt when missing and run as root) and the
# project's Python environment (PYTHON, else .venv/bin/python, else python3) with numpy and the
# docker SDK: the image's Python is a copy of that interpreter, its standard library and numpy.
# The production GPU image is built from Dockerfile.gpu instead (see the README beside it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then
        python="$repo/.venv/bin/python"
    else
        python="$(command -v python3)"
    fi
fi

if ! command -v busybox >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing busybox-static with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q busybox-static >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q busybox-static >/dev/null 2>&1; } \
        || echo "could not install busybox-static; copying host tools instead"
fi

exec "$python" "$here/assemble_rootfs.py" "$@"
