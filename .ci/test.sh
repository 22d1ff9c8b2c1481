#!/usr/bin/env bash
# The README's test command: sets up the venv (see setup.sh), then runs the whole suite against its ComfyUI.
# Usage: [EI2_COMFYUI=0.33.0] bash .ci/test.sh [pytest args…]   (COMFYUI_PATH=… tests any other ComfyUI)
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/comfyui.sh
bash .ci/setup.sh
use_comfyui
echo "Testing against the ComfyUI in $COMFYUI_PATH"
# The browser tests drive Debian's Chromium (never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
status=0
"$EI2_VENV/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "ERROR: pytest collected no tests" >&2
fi
exit "$status"
