import math

import pytest
import torch

from ei2.diagnostics import Stats, record_statistics, shift


class Net(torch.nn.Module):
    def __init__(self, channels=6):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(channels, channels)
        self.b = torch.nn.Linear(channels, channels)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class Affine(torch.nn.Module):
    """``module`` followed by a known per-channel scale and offset."""

    def __init__(self, module, scale, offset):
        super().__init__()
        self.module, self.scale, self.offset = module, scale, offset

    def forward(self, x):
        return self.module(x) * self.scale + self.offset


def inputs():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(3, 50, 6, generator=generator) for _ in range(2)]


def record(net, modules):
    return record_statistics(lambda: [net(x) for x in inputs()], modules)


def test_statistics_are_per_channel_mean_and_population_variance_over_all_calls():
    net = Net()
    stats = record(net, {"a": net.a})["a"]
    outputs = torch.cat([net.a(x).reshape(-1, 6) for x in inputs()]).double()
    assert stats.count == 300
    torch.testing.assert_close(stats.mean, outputs.mean(0))
    torch.testing.assert_close(stats.var, outputs.var(0, unbiased=False))


def test_channel_dim_for_feature_maps():
    conv = torch.nn.Conv2d(2, 3, 1)
    x = torch.randn(4, 2, 5, 5)
    stats = record_statistics(lambda: conv(x), {"conv": conv}, channel_dim=1)["conv"]
    expected = conv(x).detach().double().permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(stats.mean, expected.mean(0))


def test_identical_models_have_zero_shift():
    net, copy = Net(), Net()
    table = shift(record(net, {"a": net.a, "b": net.b}), record(copy, {"a": copy.a, "b": copy.b}))
    assert table.mean_shift == 0 and table.max_mean_shift == 0
    assert table.var_ratio == 1 and table.max_abs_log_var_ratio == 0
    assert all(b.mean_shift == 0 and b.var_ratio == 1 for b in table.blocks.values())


def test_known_offset_and_scale_are_reported_exactly():
    net = Net()
    reference = record(net, {"b": net.b})
    sigma = reference["b"].std.float()
    offset = 0.5 * sigma * torch.tensor([1, -1, 1, -1, 1, -1])  # every channel moves by half a σ
    scale = torch.full((6,), 2.0)
    shifted = Affine(net.b, scale, offset)
    # The scale moves the means too: μ → 2μ + offset, so |Δμ|/σ = |μ + offset| / σ per channel.
    other = record_statistics(lambda: [shifted(torch.tanh(net.a(x))) for x in inputs()], {"b": shifted})
    block = shift(reference, other).blocks["b"]
    mu = reference["b"].mean
    expected = ((mu + offset.double()).abs() / reference["b"].std).mean()
    assert block.mean_shift == pytest.approx(float(expected), rel=1e-6)
    assert block.var_ratio == pytest.approx(4.0, rel=1e-6)

    pure_offset = Affine(net.b, torch.ones(6), offset)
    other = record_statistics(lambda: [pure_offset(torch.tanh(net.a(x))) for x in inputs()], {"b": pure_offset})
    block = shift(reference, other).blocks["b"]
    assert block.mean_shift == pytest.approx(0.5, rel=1e-6)
    assert block.var_ratio == pytest.approx(1.0, rel=1e-6)


def test_aggregates_mean_max_and_geometric_mean():
    def stats(mean, var):
        return Stats(10, torch.tensor(mean, dtype=torch.float64), torch.tensor(var, dtype=torch.float64))

    reference = {"x": stats([0.0, 0.0], [1.0, 4.0]), "y": stats([0.0, 0.0], [1.0, 1.0])}
    other = {"x": stats([1.0, 1.0], [4.0, 16.0]), "y": stats([0.5, -0.5], [0.25, 0.25])}
    table = shift(reference, other)
    assert table.blocks["x"].mean_shift == pytest.approx((1 / 1 + 1 / 2) / 2)
    assert table.blocks["x"].var_ratio == pytest.approx(4.0)
    assert table.blocks["y"].mean_shift == pytest.approx(0.5)
    assert table.blocks["y"].var_ratio == pytest.approx(0.25)
    assert table.mean_shift == pytest.approx((0.75 + 0.5) / 2)
    assert table.max_mean_shift == pytest.approx(0.75)
    assert table.var_ratio == pytest.approx(1.0)  # √(4 · 0.25)
    assert table.max_abs_log_var_ratio == pytest.approx(math.log(4))


def test_constant_reference_channels_and_mismatches():
    reference = {"x": Stats(1, torch.zeros(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))}
    same = {"x": Stats(1, torch.zeros(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))}
    assert shift(reference, same).mean_shift == 0
    moved = {"x": Stats(1, torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))}
    with pytest.raises(ValueError, match="constant"):
        shift(reference, moved)
    with pytest.raises(ValueError, match="different blocks"):
        shift(reference, {"y": same["x"]})


def test_hooks_are_removed_and_silent_modules_are_an_error():
    net = Net()
    record(net, {"a": net.a})
    assert not net.a._forward_hooks
    with pytest.raises(RuntimeError, match="never ran"):
        record_statistics(lambda: net.a(torch.randn(2, 6)), {"a": net.a, "b": net.b})
    assert not net.b._forward_hooks
