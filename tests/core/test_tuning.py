"""one_shot_tune's dynamic loss scaling (used for an fp16 UNet): inactive in effect on fp32, skips overflowing steps."""

import math

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
