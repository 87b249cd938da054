#!/usr/bin/env bash
# Set up Graft on a fresh machine: the system tools the FSM example and the tests use
# (jq, nc), then a virtual environment in .venv with Graft and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v jq >/dev/null || need+=(jq)
command -v nc >/dev/null || need+=(netcat-openbsd)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Graft needs Python 3.11 or newer"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "Graft is installed in .venv: run '.venv/bin/graft up' to start a local cluster."
