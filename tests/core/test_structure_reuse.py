"""ei2.structure_reuse: the inversion's trajectory in sampling order, which steps reuse it, one source pass per
step and window, and what the edit's passes get."""
from __future__ import annotations

import pytest
import torch

from ei2.ddim import ddim_invert, ddim_sigmas
from ei2.structure_reuse import StructureReuse, TrajectoryRecorder, reused_steps

SCHEDULE = torch.linspace(0.03, 14.6, 1000)


def smooth_denoiser(x, sigma):
    sigma = sigma.view(-1, *[1] * (x.ndim - 1))
    return x - sigma * 0.5 * torch.tanh(x / torch.sqrt(1 + sigma**2))


def test_reused_steps_are_the_first_part_of_the_schedule():
    assert [reused_steps(50, f) for f in (0.0, 0.009, 0.5, 0.8, 1.0)] == [0, 0, 25, 40, 50]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="structure_reuse must be between 0 and 1"):
            reused_steps(50, bad)


def test_the_trajectory_holds_the_source_at_each_sampling_sigma():
    """Entry i is the inversion's state at the i-th sampling σ: the inversion stopped at that σ."""
    x0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    sigmas = ddim_sigmas(SCHEDULE, 10)
    recorder = TrajectoryRecorder()
    noise = ddim_invert(smooth_denoiser, x0, sigmas.flip(0), callback=recorder)
    trajectory = recorder.trajectory(noise)
    assert trajectory.shape == (10, *x0.shape)
    assert torch.equal(trajectory[0], noise)
    ascending = sigmas.flip(0)  # 0, σ_1 … σ_10
    for i in range(10):
        stopped = ddim_invert(smooth_denoiser, x0, ascending[:11 - i])  # up to sigmas[i]
        assert torch.equal(trajectory[i], stopped)
    # Recording changes nothing of the inversion, and the recorder hands every step on.
    seen = []
    assert torch.equal(ddim_invert(smooth_denoiser, x0, sigmas.flip(0), callback=TrajectoryRecorder(seen.append)), noise)
    assert len(seen) == 10


def reuse_for(steps=4, reused=2, frames=3):
    sigmas = ddim_sigmas(SCHEDULE, steps)
    trajectory = torch.arange(steps * frames, dtype=torch.float32).view(steps, frames, 1)
    return StructureReuse(trajectory, sigmas, reused), sigmas


def test_one_source_pass_per_reused_step_and_window_then_the_edit_takes_its_features():
    reuse, sigmas = reuse_for()
    log = []

    def source_pass(step):
        source = reuse.source_latent(step, torch.zeros(1))
        log.append(("source", step, source.flatten().tolist()))
        reuse.exchange("block.q", source + 100)

    def edit_pass(rows):
        def run():
            taken = reuse.exchange("block.q", torch.zeros(rows, 1))
            log.append(("edit", taken.flatten().tolist()))
            return taken
        return run

    # Step 0, the whole clip; the edit's cond and uncond passes come one by one: one source pass for both.
    reuse.denoise(sigmas[0], source_pass, edit_pass(3))
    reuse.denoise(sigmas[0], source_pass, edit_pass(3))
    # Step 1 in two windows, the second with the anchor frame 0: each window its own frames, in the edit's two clips.
    reuse.select_frames([0, 1])
    reuse.denoise(sigmas[1].expand(4), source_pass, edit_pass(4))
    reuse.select_frames([0, 2])
    reuse.denoise(sigmas[1].expand(4), source_pass, edit_pass(4))
    # Step 2 is not reused: no source pass, the edit's own values.
    reuse.select_frames(None)
    reuse.denoise(sigmas[2], source_pass, edit_pass(3))
    assert log == [
        ("source", 0, [0, 1, 2]), ("edit", [100, 101, 102]), ("edit", [100, 101, 102]),
        ("source", 1, [3, 4]), ("edit", [103, 104, 103, 104]),
        ("source", 1, [3, 5]), ("edit", [103, 105, 103, 105]),
        ("edit", [0, 0, 0]),
    ]
    assert reuse.mode is None


def test_outside_a_pass_and_for_unknown_sigmas_nothing_is_exchanged():
    reuse, sigmas = reuse_for()
    value = torch.ones(3, 1)
    assert reuse.exchange("block.q", value) is value
    ran = []
    out = reuse.denoise(torch.tensor(5.5), lambda step: ran.append(step), lambda: "edit")  # a σ of no step here
    assert out == "edit" and ran == []


def test_a_mismatched_edit_is_refused_and_a_failed_pass_leaves_no_mode():
    reuse, sigmas = reuse_for()

    def source_pass(step):
        reuse.exchange("block.q", torch.zeros(3, 1))

    with pytest.raises(ValueError, match=r"the edit's block.q \(4, 1\) does not match the source's \(3, 1\)"):
        reuse.denoise(sigmas[0], source_pass, lambda: reuse.exchange("block.q", torch.zeros(4, 1)))
    assert reuse.mode is None
    with pytest.raises(ValueError, match="4 states for 3 sampling steps"):
        StructureReuse(torch.zeros(4, 1), ddim_sigmas(SCHEDULE, 3), 1)
