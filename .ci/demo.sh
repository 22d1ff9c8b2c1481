#!/usr/bin/env bash
# The README's demo command: sets up the venv like the tests do (see setup.sh; EI2_COMFYUI picks the ComfyUI),
# then edits a generated sample clip.
# Usage: bash .ci/demo.sh [--checkpoint /path/to/sd15.safetensors] [other `python -m ei2 demo` options]
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/comfyui.sh
bash .ci/setup.sh
use_comfyui
"$EI2_VENV/bin/python" -m ei2 demo "$@"
