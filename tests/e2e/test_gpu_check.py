"""benchmarks/gpu_check.py, the prepared GPU check: its configurations, and its plumbing run on the CPU."""
from __future__ import annotations

import pytest

from benchmarks import gpu_check


def test_cuda_configurations_cover_both_weight_modes_and_half_precisions(comfyui_path):
    configs = dict(gpu_check.configurations("cuda", comfyui_path))
    has_dynamic_vram = "--disable-dynamic-vram" in (comfyui_path / "comfy" / "cli_args.py").read_text()
    assert len(configs) == (4 if has_dynamic_vram else 2)
    assert sorted(flags[-1] for flags in configs.values()) == sorted(["--fp16-unet", "--bf16-unet"] * (len(configs) // 2))
    assert sum("--disable-dynamic-vram" in flags for flags in configs.values()) == (2 if has_dynamic_vram else 0)


@pytest.mark.slow
def test_the_check_runs_the_whole_edit_on_the_cpu(comfyui_path):
    results = gpu_check.run(device="cpu", size=64, frames=2, tune_steps=1, steps=2)
    assert [label for label, _ in results] == ["cpu, fp32"]
    result = results[0][1]
    assert result["ok"] and result["seconds"] > 0, result
    assert "| cpu, fp32 | yes |" in gpu_check.report(results, 64, 2, 1, 2)
