"""Context windows (ei2/context_windows.py): placement, blending, the anchor, one window = no windows."""
import pytest
import torch

from ei2.context_windows import ContextWindows, context_windows, edge_weights, windowed
from ei2.ddim import ddim_sample


@pytest.mark.parametrize("frames, context, overlap", [(48, 16, 4), (240, 16, 4), (17, 16, 0), (10, 3, 2), (9, 1, 0)])
def test_windows_cover_the_clip_in_equal_windows_that_overlap_at_least_as_asked(frames, context, overlap):
    windows = context_windows(frames, context, overlap)
    assert windows[0].start == 0 and windows[-1].stop == frames
    assert all(len(window) == context for window in windows)
    for before, after in zip(windows, windows[1:]):
        assert before.start < after.start and before.stop - after.start >= overlap  # no gap, at least the overlap
    # Only the last window may overlap more (it is pulled back to end on the last frame).
    assert all(before.stop - after.start == overlap for before, after in zip(windows[:-2], windows[1:-1]))


@pytest.mark.parametrize("frames", [1, 5, 16])
def test_a_clip_no_longer_than_the_window_is_one_window(frames):
    assert context_windows(frames, 16, 4) == [range(frames)]


@pytest.mark.parametrize("context, overlap, message", [(0, 0, "context_frames must be at least 1"),
                                                       (16, 16, "smaller than context_frames"),
                                                       (16, -1, "at least 0")])
def test_bad_settings_are_refused_with_what_to_change(context, overlap, message):
    with pytest.raises(ValueError, match=message):
        context_windows(48, context, overlap)
    with pytest.raises(ValueError, match=message):
        ContextWindows(context, overlap)


def test_edge_weights_fall_towards_both_ends():
    assert edge_weights(6).tolist() == [1, 2, 3, 3, 2, 1]
    assert edge_weights(5).tolist() == [1, 2, 3, 2, 1]


def per_frame_denoiser(x, sigma):
    """x0 that depends on each frame alone (and its σ): windows cannot change it."""
    return torch.tanh(x) / (1 + sigma.view(-1, 1, 1, 1))


@pytest.mark.parametrize("anchor", [True, False])
def test_blending_a_per_frame_model_gives_exactly_its_unwindowed_result(anchor):
    x = torch.randn(23, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    sigma = torch.linspace(1, 3, 23)
    result = windowed(per_frame_denoiser, context_windows(23, 6, 2), anchor)(x, sigma)
    torch.testing.assert_close(result, per_frame_denoiser(x, sigma), rtol=1e-6, atol=1e-6)


def test_every_window_is_called_as_its_own_clip_with_the_anchor_first_and_the_anchor_result_dropped():
    calls = []

    def denoiser(x, sigma, tag):
        calls.append((x[:, 0, 0, 0].tolist(), sigma.tolist(), tag))
        return x - x.mean(dim=0, keepdim=True)  # couples the frames of a call: the anchor takes part

    x = torch.arange(10.0).view(10, 1, 1, 1)
    result = windowed(denoiser, context_windows(10, 4, 1), anchor=True)(x, torch.arange(10.0) * 2, tag="extra")
    assert [c[0] for c in calls] == [[0, 1, 2, 3], [0, 3, 4, 5, 6], [0, 6, 7, 8, 9]]
    assert [c[1] for c in calls] == [[v * 2 for v in c[0]] for c in calls] and {c[2] for c in calls} == {"extra"}
    # Frame 5 lies inside window 2 alone: its result is that window's (anchor included in the mean).
    assert result[5].item() == pytest.approx(5 - (0 + 3 + 4 + 5 + 6) / 5)
    # Frame 3 is in windows 1 (last position, weight 1) and 2 (first after the anchor, weight 1).
    assert result[3].item() == pytest.approx(((3 - 1.5) + (3 - 18 / 5)) / 2)
    # Frame 0 only comes from window 1; the anchor's results in windows 2 and 3 are dropped.
    assert result[0].item() == pytest.approx(-1.5)


def test_without_the_anchor_windows_hold_only_their_own_frames():
    calls = []
    windowed(lambda x, sigma: calls.append(x.flatten().tolist()) or x, ContextWindows(4, 1).windows(10))(
        torch.arange(10.0), torch.ones(10))
    assert calls == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]  # the default: no anchor


def test_the_largest_call_is_the_clip_or_one_window_with_its_anchor():
    assert ContextWindows(16, 4).largest_call(8) == 8 and ContextWindows(16, 4).largest_call(96) == 16
    assert ContextWindows(16, 4, anchor=True).largest_call(96) == 17
    assert ContextWindows(16, 4, anchor=True).largest_call(16) == 16


def test_one_window_calls_the_model_unchanged_and_samples_bit_identically():
    def model(x, sigma, **extra):
        return x * 0.5 - x.mean(dim=0, keepdim=True) / (1 + sigma.view(-1, 1, 1, 1))

    assert windowed(model, context_windows(8, 8, 2)) is model
    x = torch.randn(8, 4, 5, 5, generator=torch.Generator().manual_seed(1)) * 10
    sigmas = torch.tensor([10.0, 5.0, 2.0, 0.5, 0.0])
    for anchor in (False, True):
        assert torch.equal(ContextWindows(8, 2, anchor).sampler(ddim_sample)(model, x, sigmas), ddim_sample(model, x, sigmas))
    assert not torch.equal(ContextWindows(4, 2).sampler(ddim_sample)(model, x, sigmas), ddim_sample(model, x, sigmas))


def test_before_window_runs_before_every_window_with_its_frames_and_can_stop_a_step():
    seen = []

    class Cancelled(Exception):
        pass

    def before_window(frames):
        seen.append(frames)
        if len(seen) == 5:
            raise Cancelled

    model = lambda x, sigma: seen.append(x.tolist()) or x  # noqa: E731
    with pytest.raises(Cancelled):
        windowed(model, context_windows(20, 8, 2), anchor=True, before_window=before_window)(
            torch.arange(20.0), torch.ones(20))
    first, second, third = list(range(8)), [0, *range(6, 14)], [0, *range(12, 20)]
    assert seen == [first, [float(f) for f in first], second, [float(f) for f in second], third]
