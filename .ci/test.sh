#!/usr/bin/env bash
# The README's test command: sets up ./.venv (see setup.sh), then runs the whole suite.
# Usage: bash .ci/test.sh [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
status=0
"${EI2_VENV:-.venv}/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "ERROR: pytest collected no tests" >&2
fi
exit "$status"
