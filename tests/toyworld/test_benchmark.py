"""The edit benchmark's harness: the clip family, the job plan, the paired bootstrap, resuming from the cache."""
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmarks.toyworld import benchmark
from benchmarks.toyworld.benchmark import ABLATIONS, MAIN, REUSED, SWEPT, Plan, plan_jobs, run_plan
from benchmarks.toyworld.clips import MOTIONS, SIZES, SOURCE_CLIPS, source_clips
from benchmarks.toyworld.edit import EditSettings
from benchmarks.toyworld.model import ToyConfig, ToyT2I
from benchmarks.toyworld.report import per_clip, render_report
from benchmarks.toyworld.scorer import read_image
from benchmarks.toyworld.stats import paired_difference
from benchmarks.toyworld.weights_io import save_weights
from benchmarks.toyworld.world import BACKGROUNDS, COLOURS, IMAGE_SIZE, SHAPES, parse_caption
from ei2.structure_reuse import DEFAULT_STRUCTURE_REUSE


def test_the_clip_family_covers_every_motion_shape_colour_background_and_both_extreme_sizes():
    assert len(SOURCE_CLIPS) >= 48
    for attribute, values in (("motion", MOTIONS), ("shape", SHAPES), ("colour", tuple(COLOURS)),
                              ("background", tuple(BACKGROUNDS)), ("size", SIZES)):
        counts = Counter(getattr(c, attribute, None) or getattr(c.scene, attribute) for c in SOURCE_CLIPS)
        assert set(counts) == set(values), attribute
        assert max(counts.values()) - min(counts.values()) <= 1, (attribute, counts)  # spread evenly
    assert min(SIZES) == 6.0 and max(SIZES) == 9.0
    assert len({c.name for c in SOURCE_CLIPS}) == len(SOURCE_CLIPS)
    assert source_clips(48) == SOURCE_CLIPS and source_clips(48, seed=1) != SOURCE_CLIPS


def test_every_clip_stays_inside_the_frame_is_read_right_and_edits_one_attribute_per_edit():
    for clip in SOURCE_CLIPS:
        margin = clip.scene.size + 1
        centers = np.array(clip.centers(8))
        assert ((centers >= margin - 1e-6) & (centers <= IMAGE_SIZE - margin + 1e-6)).all(), clip.name
        source = parse_caption(clip.prompt())
        for frame in clip.frames(8)[::7]:
            reading = read_image(frame)
            assert (reading.colour, reading.shape, reading.background) == source, clip.name
        assert set(clip.edits) == {"colour", "shape", "background"}
        for kind, value in clip.edits.items():
            target = parse_caption(clip.prompt(**{kind: value}))
            assert sum(a != b for a, b in zip(source, target)) == 1, (clip.name, kind)


def test_motions_move_as_named():
    moved = {m: [] for m in MOTIONS}
    for clip in SOURCE_CLIPS:
        centers = np.array(clip.centers(8))
        moved[clip.motion].append(np.linalg.norm(centers[-1] - centers[0]))
        steps = np.diff(centers, axis=0)
        if clip.motion == "zigzag":  # the perpendicular swing flips sign every frame
            direction = (centers[-1] - centers[0]) / np.linalg.norm(centers[-1] - centers[0])
            across = steps[:, 0] * direction[1] - steps[:, 1] * direction[0]
            assert (np.sign(across[1:-1]) != np.sign(across[:-2])).all(), clip.name
        if clip.motion == "edge":
            assert np.isclose(np.minimum(centers[0], IMAGE_SIZE - centers[0]), clip.scene.size + 1).any(), clip.name
    assert max(moved["drift"]) <= 4.0 + 1e-6 and min(moved["diagonal"]) >= 10


def test_the_plan_runs_the_main_configurations_everywhere_and_the_sweeps_on_the_subset():
    plan = Plan(clips=SOURCE_CLIPS[:5], subset=2)
    jobs = plan_jobs(plan)
    main = [j for j in jobs if all(len(v) == 3 for v in j.variants)]
    by_clip = {i: [j for j in main if j.clip == i] for i in range(5)}
    for index, clip_jobs in by_clip.items():
        configs = Counter(j.config for j in clip_jobs)
        expected = set(MAIN) | (set(ABLATIONS) if index < 2 else set())
        assert set(configs) == expected
        for config in SWEPT:
            lrs = {j.learning_rate for j in clip_jobs if j.config == config}
            assert lrs == ({3e-5, *plan.learning_rates} if index < 2 else {3e-5})
    full = [j for j in by_clip[0] if j.config == "EI²" and j.steps == 500][0]
    assert {v[0] for v in full.variants} == set(plan.budgets)
    assert {v[2] for v in full.variants} == set(plan.guidances)
    assert {v[1] for v in full.variants} == {"empty", "source"}
    assert [j.clip < 2 for j in main] == sorted([j.clip < 2 for j in main], reverse=True)  # the subset first
    # Structure reuse: jobs of their own after all the others, every clip: the quick edits (EI², not tuned) first.
    reused = jobs[len(main):]
    assert main == jobs[:len(main)] and len(reused) == 5 * (1 + len(REUSED))
    assert [(j.clip, j.config, j.steps) for j in reused[:5]] == [(i, "EI²", 0) for i in range(5)]
    assert {(j.clip, j.config, j.steps) for j in reused[5:]} == {(i, c, 500) for i in range(5) for c in REUSED}
    for job in reused:
        assert set(job.variants) == {(job.steps, "empty", benchmark.CONFIGS[job.config][2], reuse)
                                     for reuse in plan.structure_reuse}
    assert DEFAULT_STRUCTURE_REUSE in plan.structure_reuse


def test_workflow_defaults():
    settings = EditSettings()
    assert (settings.tune_steps, settings.learning_rate, settings.train, settings.inversion) == \
        (500, 3e-5, "temporal_and_queries", "empty")
    assert settings.inversion_prompt("a red circle on a grey background") == ""
    assert benchmark.CONFIGS["EI²"][2] == 7.5 and benchmark.CONFIGS["Tune-A-Video"][2] == 12.5
    with pytest.raises(ValueError, match="inversion"):
        EditSettings(inversion="negative")


def test_paired_bootstrap_on_known_data():
    constant = paired_difference({c: 1.0 + c for c in range(10)}, {c: float(c) for c in range(10)})
    assert (constant.mean, constant.low, constant.high, constant.clips) == (1.0, 1.0, 1.0, 10) and constant.significant
    rng = np.random.default_rng(3)
    shifted = rng.normal(0.5, 1.0, 400)
    d = paired_difference(dict(enumerate(shifted)), dict.fromkeys(range(400), 0.0))
    half_width = 1.96 * shifted.std(ddof=1) / np.sqrt(400)  # the normal interval, which the bootstrap approaches
    assert d.mean == pytest.approx(shifted.mean())
    assert d.low == pytest.approx(shifted.mean() - half_width, abs=0.02)
    assert d.high == pytest.approx(shifted.mean() + half_width, abs=0.02) and d.significant
    centred = shifted - shifted.mean()
    assert not paired_difference(dict(enumerate(centred)), dict.fromkeys(range(400), 0.0)).significant
    # Too few clips to call: three differences of one sign "exclude 0" in the percentile bootstrap.
    few = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, dict.fromkeys(range(3), 0.0))
    assert few.low > 0 and not few.significant
    # Only clips both runs hold, without NaN, are paired.
    partial = paired_difference({0: 1.0, 1: float("nan"), 2: 5.0}, {0: 0.0, 1: 0.0})
    assert (partial.mean, partial.clips) == (1.0, 1)


def test_per_clip_means_over_the_kinds_a_metric_is_about():
    rows = [{"clip": "a", "edit": "colour", "mask_iou": 0.5}, {"clip": "a", "edit": "background", "mask_iou": 0.7},
            {"clip": "a", "edit": "shape", "mask_iou": 0.0}, {"clip": "b", "edit": "colour", "mask_iou": 1.0}]
    assert per_clip(rows, "mask_iou") == pytest.approx({"a": 0.6, "b": 1.0})


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    model = ToyT2I(ToyConfig(channels=(8, 16), heads=2, context_dim=16, embedding_dim=16))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, steps=0)
    return path


def test_an_interrupted_run_resumes_from_its_cache_and_a_changed_setting_runs_again(tmp_path, tiny_weights, monkeypatch):
    plan = Plan(clips=SOURCE_CLIPS[:2], subset=1, frames=2, settings=EditSettings(tune_steps=2, ddim_steps=2),
                budgets=(0,), learning_rates=(1e-3,), lr_steps=2, guidances=(3.0,), structure_reuse=(0.8,))
    cache = tmp_path / "cache"
    jobs = plan_jobs(plan)
    first, seconds = run_plan(tiny_weights, plan, workers=1, cache=cache, log=lambda line: None)
    assert seconds > 0
    assert len(list(cache.glob("*.json"))) == len(jobs)
    # Interrupted: two jobs never finished. The rerun runs exactly those and gives the same rows.
    for job in jobs[:2]:
        (cache / f"{job.key(plan, benchmark.weights_id(tiny_weights))}.json").unlink()
    ran, run_one = [], benchmark._run_in_worker
    monkeypatch.setattr(benchmark, "_run_in_worker", lambda args: ran.append(args[1]) or run_one(args))
    lines = []
    again, _ = run_plan(tiny_weights, plan, workers=1, cache=cache, log=lines.append)
    assert "2 to run" in lines[0] and ran == jobs[:2]
    def untimed(rows):
        return [{k: v for k, v in row.items() if k not in ("tune_seconds", "sample_seconds")} for row in rows]

    assert untimed(again) == untimed(first)  # the same computation, bit for bit (one thread, seeded)
    changed = replace(plan, settings=replace(plan.settings, guidance=2.0))
    assert not (set(j.key(changed, "w") for j in plan_jobs(changed)) & set(j.key(plan, "w") for j in jobs))
    report = render_report(first, plan, "tiny", 0.0)
    for line in ("| EI² − Tune-A-Video | 2 |", "| FFAM + vanilla − EI² | 1 |", "EI², 0 steps", "EI², CFG 3",
                 "Tune-A-Video, source-prompt inversion", "EI², lr 0.001 × 2", "| EI² + reuse 0.8 | 2 |",
                 "| quick edit (EI², not tuned) + reuse 0.8 | 2 |", "| run − EI² (no reuse) |"):
        assert line in report, line
