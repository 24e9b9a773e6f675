#!/usr/bin/env bash
# Create .venv and install the project with its dev extras, on a fresh machine that has only
# Python 3.11+ and make. Debian/Ubuntu split venv's pip bootstrap into python3.X-venv: install it
# when we can (root + apt-get), otherwise build the venv without pip and install into it with the
# system pip (pip >= 22.3 has --python).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

PY=${PYTHON:-$(find_python || true)}
if [ -z "$PY" ]; then
    echo "bootstrap: Python 3.11 or newer is required (looked for python3.13, python3.12, python3.11, python3)" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV with $PY"
    if ! "$PY" -m venv "$VENV" 2>/tmp/agentmesh-venv.err; then
        rm -rf "$VENV"
        version=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "bootstrap: python$version-venv is missing; installing it with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq "python$version-venv" >/dev/null
            "$PY" -m venv "$VENV"
        elif "$PY" -m pip --version >/dev/null 2>&1; then
            echo "bootstrap: venv cannot bootstrap pip here; creating $VENV without pip and using the system pip"
            "$PY" -m venv --without-pip "$VENV"
            "$PY" -m pip --python "$VENV/bin/python" install -q pip
        else
            cat /tmp/agentmesh-venv.err >&2
            echo "bootstrap: cannot create a virtual environment: install python$version-venv (Debian/Ubuntu) or pip" >&2
            exit 1
        fi
    fi
fi

echo "bootstrap: installing agentmesh-zmq[dev] into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
