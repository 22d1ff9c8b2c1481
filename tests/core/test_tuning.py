"""one_shot_tune's dynamic loss scaling (used for an fp16 UNet): inactive in effect on fp32, skips overflowing steps."""

import math

import pytest
import torch

from ei2.tuning import one_shot_tune

SIGMAS = torch.linspace(0.1, 10.0, 50)
INIT_SCALE = 2.0 ** 16  # GradScaler's documented default


def tune(predict_eps, params, latents, *, steps, loss_scaling, learning_rate=1e-2):
    """Run the loop; returns (losses, the raw gradient each step sent into params[0], params[0] after each step)."""
    raw, after = [], []
    hook = params[0].register_hook(lambda grad: raw.append(grad.detach().clone()))
    try:
        losses = one_shot_tune(predict_eps, latents, SIGMAS, params, steps=steps, learning_rate=learning_rate, seed=0,
                               loss_scaling=loss_scaling, on_step=lambda step, loss: after.append(params[0].detach().clone()))
    finally:
        hook.remove()
    return losses, raw, after


def test_loss_scaling_on_fp32_scales_the_backward_pass_and_trains_the_same():
    def run(loss_scaling):
        torch.manual_seed(0)
        gain, shift = torch.nn.Parameter(torch.rand(4, 1, 1) + 0.5), torch.nn.Parameter(torch.randn(4, 1, 1))
        latents = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(1))
        losses, raw, after = tune(lambda x, sigma: x * gain / (1 + sigma) + shift, [gain, shift], latents,
                                  steps=5, loss_scaling=loss_scaling)
        return losses, raw, after

    scaled, plain = run(True), run(False)
    # Active: the gradient autograd computes is the scaled one (the scale only grows after 2000 good steps).
    for with_scale, without in zip(scaled[1], plain[1], strict=True):
        torch.testing.assert_close(with_scale, INIT_SCALE * without, rtol=1e-5, atol=0)
    # And undone before clipping and the update: the same training as without it.
    torch.testing.assert_close(scaled[0], plain[0], rtol=1e-5, atol=1e-7)
    for with_scale, without in zip(scaled[2], plain[2], strict=True):
        torch.testing.assert_close(with_scale, without, rtol=1e-5, atol=1e-7)


def overflowing_fp16_model(weight, gain):
    """ε = exact noise + w·gain, the residual computed in fp16 (zero latents: x/σ is the noise, to rounding).

    The loss is (w·gain)², its gradient 2·w·gain² reaches w through an fp16 sum: scaled by s it overflows
    fp16 (max 65504) exactly when 2·w·gain²·s > 65504.
    """
    def predict_eps(x, sigma):
        return x / sigma + (weight.half() * gain).float().view(1, 1, 1, 1)

    return predict_eps


def test_an_fp16_gradient_that_overflows_skips_the_step_and_halves_the_scale():
    gain = math.sqrt(0.75)  # 2·1·0.75·2^16 = 98304 overflows fp16; at 2^15, 49152 does not
    weight = torch.nn.Parameter(torch.ones(1))
    latents = torch.zeros(2, 4, 4, 4)
    losses, raw, after = tune(overflowing_fp16_model(weight, gain), [weight], latents, steps=2, loss_scaling=True)

    torch.testing.assert_close(losses, [0.75, 0.75], rtol=1e-3, atol=0)  # finite: only the gradient overflowed
    assert torch.isinf(raw[0]).all()
    assert torch.equal(after[0], torch.ones(1))  # step 1 skipped: not even weight decay was applied
    # Step 2 ran at half the scale: its gradient is finite and the update happened.
    torch.testing.assert_close(raw[1], torch.tensor([2 * 0.75 * INIT_SCALE / 2]), rtol=1e-3, atol=0)
    assert torch.isfinite(after[1]).all() and after[1].item() < 1.0

    # Control: without loss scaling the same gradient is small and finite, and step 1 updates at once.
    weight = torch.nn.Parameter(torch.ones(1))
    _, raw, after = tune(overflowing_fp16_model(weight, gain), [weight], latents, steps=1, loss_scaling=False)
    torch.testing.assert_close(raw[0], torch.tensor([2 * 0.75]), rtol=1e-3, atol=0)
    assert after[0].item() < 1.0


def windows_seen(frames, steps=60, **window):
    """The frame indices of each step's window: the latents hold their frame's index and σ ≈ 0, so x is the window."""
    latents = torch.arange(float(frames)).view(frames, 1, 1, 1).expand(frames, 2, 3, 3).contiguous()
    seen = []
    one_shot_tune(lambda x, sigma: seen.append(x[:, 0, 0, 0].round()) or torch.zeros_like(x, requires_grad=True),
                  latents, torch.full((5,), 1e-12), [torch.nn.Parameter(torch.zeros(1))], steps=steps,
                  learning_rate=1e-3, seed=3, **window)
    return seen


@pytest.mark.parametrize("length, stride", [(16, 1), (8, 3), (5, 2)])
def test_each_step_tunes_on_consecutive_strided_frames_from_anywhere_in_the_clip(length, stride):
    seen = windows_seen(48, frames_per_step=length, frame_stride=stride)
    for ids in seen:
        assert len(ids) == length and torch.equal(ids.diff(), torch.full((length - 1,), float(stride)))
        assert 0 <= ids[0] and ids[-1] < 48
    firsts = {int(ids[0]) for ids in seen}
    assert len(firsts) > 10 and min(firsts) < 5 and max(firsts) > 48 - (length - 1) * stride - 6  # drawn all over


def test_a_window_covering_the_clip_is_the_unwindowed_run_bit_for_bit():
    def run(**window):
        torch.manual_seed(0)
        gain = torch.nn.Parameter(torch.rand(4, 1, 1) + 0.5)
        latents = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(1))
        losses = one_shot_tune(lambda x, sigma: x * gain / (1 + sigma), latents, SIGMAS, [gain], steps=8,
                               learning_rate=1e-2, seed=0, **window)
        return losses, gain.detach().clone()

    plain = run()
    for window in ({"frames_per_step": 6}, {"frames_per_step": 100}):
        losses, gain = run(**window)
        assert losses == plain[0] and torch.equal(gain, plain[1])
    assert run(frames_per_step=4)[0] != plain[0]


def test_window_length_follows_the_clip_and_refuses_nonsense():
    from ei2.tuning import window_length

    assert window_length(48, 16) == 16 and window_length(8, 16) == 8
    assert window_length(8, 16, frame_stride=2) == 4 and window_length(9, 16, frame_stride=2) == 5
    with pytest.raises(ValueError, match="at least 1"):
        window_length(8, 0)
    with pytest.raises(ValueError, match="at least 1"):
        window_length(8, 4, frame_stride=0)
