#!/usr/bin/env bash
# The netns tests need `ip` (iproute2). Install it when missing and we can; otherwise say so once:
# those tests then fail with a one-line reason, they never pass silently.
set -euo pipefail
if command -v ip >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-iproute2: installing iproute2 with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
else
    echo "ensure-iproute2: 'ip' is missing and cannot be installed here (needs root and apt-get); netns tests will fail" >&2
fi
