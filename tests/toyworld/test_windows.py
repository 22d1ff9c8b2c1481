"""Context windows in the toy world: one window is the plain pipeline, the seam metrics look where the seams are,
and the ``windows`` command runs end to end."""
import numpy as np
import torch

from benchmarks.toyworld.__main__ import main
from benchmarks.toyworld.commands import GENERATED, WINDOWS_BEGIN, WINDOWS_END
from benchmarks.toyworld.edit import EditSettings, tune_and_invert
from ei2.inflation import InflateOptions
from benchmarks.toyworld.model import ToyT2I
from benchmarks.toyworld.report import BEGIN, END
from benchmarks.toyworld.sampling import guided_denoiser
from benchmarks.toyworld.weights_io import save_weights
from benchmarks.toyworld.windows import (RUNS, Run, frame_jumps, invert_and_sample, overlap_frames, seam_metrics,
                                         seam_pairs, unet_frames)
from benchmarks.toyworld.world import Scene, clip_scenes, render_clip

from .test_edit import TINY, tiny_model

SOURCE, EDIT = "a red circle on a grey background", "a blue circle on a grey background"


def test_one_window_is_the_unwindowed_pipeline_bit_for_bit():
    clip = render_clip(clip_scenes(Scene("red", "circle", "grey", (9.0, 9.0), 6.0), (22.0, 20.0), frames=6))
    settings = EditSettings(tune_steps=2, ddim_steps=3, guidance=2.0, seed=1)
    tuned = tune_and_invert(tiny_model(), clip, SOURCE, InflateOptions(attention_type="ffam", temporal_type="stam"), settings)
    windowed = invert_and_sample(tuned.video, clip, SOURCE, EDIT, settings, context=(6, 0), anchor=True)
    assert np.array_equal(windowed, tuned.sample(EDIT))


def test_a_frames_none_denoiser_takes_any_batch_as_one_clip():
    model, x = tiny_model(), torch.randn(5, 3, 32, 32)
    fixed = guided_denoiser(model, [SOURCE], 2.0, frames=5)(x, torch.ones(5))
    assert torch.equal(guided_denoiser(model, [SOURCE], 2.0, frames=None)(x, torch.ones(5)), fixed)
    assert guided_denoiser(model, [SOURCE], 2.0, frames=None)(x[:3], torch.ones(3)).shape == (3, 3, 32, 32)


def test_seams_are_the_pairs_touching_an_overlap():
    # 20 frames in windows of 8 overlapping by 2: windows 0–7, 6–13, 12–19; overlaps {6, 7} and {12, 13}.
    assert np.flatnonzero(overlap_frames(20, (8, 2))).tolist() == [6, 7, 12, 13]
    assert np.flatnonzero(seam_pairs(20, (8, 2))).tolist() == [5, 6, 7, 11, 12, 13]  # pair t is (t, t + 1)
    assert not seam_pairs(8, (8, 2)).any()  # one window: no seam


def test_with_overlap_0_the_seams_are_the_pairs_straddling_a_cut():
    # 12 frames in windows of 4 that do not overlap: windows 0–3, 4–7, 8–11; hard cuts between 3|4 and 7|8.
    assert not overlap_frames(12, (4, 0)).any()
    assert np.flatnonzero(seam_pairs(12, (4, 0))).tolist() == [3, 7]
    # A synthetic clip that steps by 20 at each cut (the windows disagree) and is smooth within a window.
    reference = np.zeros((12, 4, 4, 3), np.uint8)
    edited = reference.copy()
    edited[4:8], edited[8:] = 20, 40
    metrics = seam_metrics(edited, reference, seam_pairs(12, (4, 0)), first_window=4)
    assert metrics["jump_seam"] == metrics["seam_excess"] == 20
    assert metrics["jump_away"] == metrics["away_excess"] == 0
    # Where the last window is pushed back to end on the clip's last frame, it overlaps its neighbour: 0–3, 4–7,
    # 6–9.
    assert np.flatnonzero(seam_pairs(10, (4, 0))).tolist() == [3, 5, 6, 7]


def test_the_run_table_and_its_cost_in_unet_frames():
    assert RUNS["one window (reference)"] == Run(None) and RUNS["windows, no anchor"] == Run(16, 4)
    assert RUNS["windows + anchor"] == Run(16, 4, True)
    assert [RUNS[f"overlap {k}" + " (hard cuts)" * (k == 0)].overlap for k in (0, 2, 8)] == [0, 2, 8]
    # 48 frames: (16, 0) is 3 windows, (16, 2) and (16, 4) are 4 (the last one pushed back), (16, 8) 5.
    assert [unet_frames(48, RUNS[name]) for name in RUNS] == [1, 67 / 48, 64 / 48, 1, 64 / 48, 80 / 48]


def test_seam_metrics_find_a_jump_at_a_seam_and_nothing_away():
    reference = np.zeros((20, 4, 4, 3), np.uint8)
    edited = reference.copy()
    edited[13:] = 30  # a jump of 30 between frames 12 and 13 (seam pair 12) and a constant shift after it
    assert frame_jumps(edited).tolist() == [0.0] * 12 + [30.0] + [0.0] * 6
    metrics = seam_metrics(edited, reference, seam_pairs(20, (8, 2)), first_window=8)
    assert metrics["jump_seam"] == metrics["seam_excess"] == 30 / 6
    assert metrics["jump_away"] == metrics["away_excess"] == 0
    assert metrics["diff_ref"] == 30 * 7 / 20 and metrics["diff_ref_later"] == 30 * 7 / 12


def test_windows_command_quick_writes_its_table_beside_the_edit_benchmark(tmp_path, capsys):
    torch.manual_seed(0)
    save_weights(ToyT2I(TINY), tmp_path / "w.st", steps=0)
    doc = tmp_path / "bench.md"
    doc.write_text(f"# Benchmarks\n{BEGIN}\nedit table\n{END}\n\n{GENERATED}; below -->\ngenerated\n")
    args = ["windows", "--quick", "--frames", "10", "--context-frames", "4", "--context-overlap", "1",
            "--overlaps", "0,2", "--tune-steps", "1", "--ddim-steps", "2", "--weights", str(tmp_path / "w.st"),
            "--doc", str(doc)]
    assert main(args) == 0
    text = doc.read_text()
    assert text.index(END) < text.index(WINDOWS_BEGIN) < text.index(WINDOWS_END) < text.index(GENERATED)
    for run in ("one window (reference)", "windows + anchor", "windows, no anchor", "overlap 0 (hard cuts)",
                "overlap 2"):
        assert f"| {run} |" in text
    reference_row = next(line for line in text.splitlines() if line.startswith("| one window"))
    assert reference_row.split(" | ")[1:5] == ["10 (whole clip)", "1", "1.00", "4"]  # context, windows, cost, seams
    assert reference_row.split(" | ")[5:7] == ["0.00", "0.00"]  # the reference against itself
    main(args)  # a rerun replaces the table
    assert doc.read_text().count(WINDOWS_BEGIN) == 1 and "generated\n" in doc.read_text()
    out = capsys.readouterr().out
    assert "Anchor − no anchor" in out and "Each overlap − overlap 1 (no anchor)" in out
