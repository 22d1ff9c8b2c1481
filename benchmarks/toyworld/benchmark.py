"""The edit benchmark: EI² vs Tune-A-Video vs per-frame editing of toy clips, at the users' budget and path.

Every job is one tuning run of one clip × configuration (``edit.tune``, checkpoints included), whose
models are inverted and sampled for every variant the plan asks of them: a reconstruction (the
inversion undone) and one edit of each kind (colour, shape, background). Defaults are the bundled
workflows': 500 tuning steps at lr 3e-5, ``temporal_and_queries``, empty-prompt inversion, and each
configuration's CFG (EI² 7.5, Tune-A-Video 12.5 as in ``ei2_vs_tuneavideo.json``).

- the main configurations (EI², Tune-A-Video, per-frame) on every clip;
- structure reuse (``ei2.structure_reuse``, EI2Sample's ``structure_reuse``) on every clip: the quick edit (EI²
  inflated, not tuned), then EI² and Tune-A-Video tuned, sampled with it at each of ``structure_reuse``'s values —
  jobs of their own (after all the others), so the rows without reuse stay those of the main jobs;
- on the first ``subset`` clips also: the cross ablations, the budget curve (EI² and Tune-A-Video at
  ``budgets`` steps: checkpoints of the 500-step run), other learning rates at ``lr_steps`` steps, the
  guidance sweep and the source-prompt inversion (both from the 500-step models).
Jobs run in ``workers`` processes of one torch thread each; each job's rows go to a JSON file in the
cache folder as soon as it ends, keyed by everything that decides them, so an interrupted run resumes.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ei2.inflation import InflateOptions
from ei2.structure_reuse import DEFAULT_STRUCTURE_REUSE

from .clips import SOURCE_CLIPS, SourceClip
from .edit import EditSettings, invert, tune
from .metrics import clip_metrics

# name -> (attention_type, temporal_type, the CFG its workflow samples with)
CONFIGS = {
    "EI²": ("ffam", "stam", 7.5),
    "Tune-A-Video": ("sparse_causal", "vanilla", 12.5),
    "per-frame": ("per_frame", "none", 7.5),
    "FFAM + vanilla": ("ffam", "vanilla", 7.5),  # EI² with Tune-A-Video's temporal module
    "sparse-causal + STAM": ("sparse_causal", "stam", 12.5),  # Tune-A-Video with EI²'s temporal module
}
MAIN = ("EI²", "Tune-A-Video", "per-frame")
ABLATIONS = ("FFAM + vanilla", "sparse-causal + STAM")
SWEPT = ("EI²", "Tune-A-Video")  # budget curve, learning rates, guidance sweep, source-prompt inversion
REUSED = ("EI²", "Tune-A-Video")  # sampled with structure reuse (EI²'s job also gives the quick edit: 0 steps)
CACHE = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    clips: tuple = SOURCE_CLIPS
    subset: int = 16  # the first clips, which also get the ablations and sweeps
    frames: int = 8
    settings: EditSettings = EditSettings()
    budgets: tuple = (0, 50, 150, 500)  # tuning steps of the budget curve
    learning_rates: tuple = (1e-4, 3e-4, 1e-3)  # other learning rates, at lr_steps
    lr_steps: int = 150
    guidances: tuple = (3.0, 5.0, 7.5, 12.5)
    structure_reuse: tuple = (0.5, DEFAULT_STRUCTURE_REUSE, 1.0)  # parts of the schedule reusing the source's structure


@dataclass(frozen=True)
class Job:
    clip: int  # index into plan.clips
    config: str
    learning_rate: float
    steps: int
    variants: tuple  # (steps, inversion, guidance[, structure_reuse]) to sample, each with a reconstruction and every edit

    def key(self, plan: Plan, weights_id: str) -> str:
        clip = plan.clips[self.clip]
        described = json.dumps([clip.name, repr(clip), self.config, CONFIGS[self.config], self.learning_rate, self.steps,
                                self.variants, plan.frames, asdict(plan.settings), weights_id])
        return hashlib.sha256(described.encode()).hexdigest()[:20]


def plan_jobs(plan: Plan) -> list[Job]:
    """Every tuning run of the plan, the sweeps' clips first (so a partial run already has every table)."""
    s = plan.settings
    jobs = []
    for index in range(len(plan.clips)):
        swept = index < plan.subset
        for config in MAIN + (ABLATIONS if swept else ()):
            guidance = CONFIGS[config][2]
            variants = [(s.tune_steps, s.inversion, guidance)]
            if swept and config in SWEPT:
                variants += [(steps, s.inversion, guidance) for steps in plan.budgets if steps != s.tune_steps]
                variants += [(s.tune_steps, s.inversion, g) for g in plan.guidances if g != guidance]
                variants += [(s.tune_steps, other, guidance) for other in ("empty", "source") if other != s.inversion]
            jobs.append(Job(index, config, s.learning_rate, s.tune_steps, tuple(variants)))
            if swept and config in SWEPT:
                jobs += [Job(index, config, lr, plan.lr_steps, ((plan.lr_steps, s.inversion, guidance),))
                         for lr in plan.learning_rates if lr != s.learning_rate]
    jobs.sort(key=lambda job: job.clip >= plan.subset)  # stable: clip order within each part
    if plan.structure_reuse:  # the quick edits first (no tuning: seconds per clip), then the tuned models
        jobs += [_reuse_job(plan, index, "EI²", 0) for index in range(len(plan.clips))]
        jobs += [_reuse_job(plan, index, config, s.tune_steps) for index in range(len(plan.clips)) for config in REUSED]
    return jobs


def _reuse_job(plan: Plan, clip: int, config: str, steps: int) -> Job:
    s = plan.settings
    variants = tuple((steps, s.inversion, CONFIGS[config][2], reuse) for reuse in plan.structure_reuse)
    return Job(clip, config, s.learning_rate, steps, variants)


def run_job(model, plan: Plan, job: Job) -> list[dict]:
    """The rows of one job: per variant, a reconstruction row and one row per edit kind."""
    clip: SourceClip = plan.clips[job.clip]
    attention, temporal, _ = CONFIGS[job.config]
    settings = replace(plan.settings, learning_rate=job.learning_rate, tune_steps=job.steps)
    source = clip.frames(plan.frames)
    began = time.monotonic()
    checkpoints = sorted({steps for steps, *_ in job.variants})
    _, losses, models = tune(model, source, clip.prompt(),
                             InflateOptions(attention_type=attention, temporal_type=temporal), settings, checkpoints)
    tune_seconds = time.monotonic() - began
    common = {"clip": clip.name, "config": job.config, "learning_rate": job.learning_rate}
    rows, inverted = [], {}
    for steps, inversion, guidance, *reuse in job.variants:
        reuse = reuse[0] if reuse else 0.0
        variant = {**common, "steps": steps, "inversion": inversion, "guidance": guidance, "structure_reuse": reuse}
        key = (steps, inversion)
        if key not in inverted:
            inverted[key] = invert(models[steps], source, clip.prompt(), replace(settings, inversion=inversion))
            reconstruction = inverted[key].reconstruct()
            recon = clip_metrics(source, reconstruction, clip.prompt(), reconstruction=reconstruction)
            loss = losses[steps - 10:steps] if steps else []
            rows.append({**variant, "guidance": 1.0, "edit": "reconstruction", "noise_std": inverted[key].noise_std,
                         "final_loss": sum(loss) / len(loss) if loss else float("nan"), "tune_seconds": tune_seconds,
                         **_numbers(recon)})
        tuned = replace(inverted[key], settings=replace(inverted[key].settings, guidance=guidance))
        for kind, value in clip.edits.items():
            prompt = clip.prompt(**{kind: value})
            began = time.monotonic()
            edited = tuned.sample(prompt, reuse)
            rows.append({**variant, "edit": kind, "sample_seconds": time.monotonic() - began,
                         **_numbers(clip_metrics(source, edited, prompt))})
    return rows


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "per_frame"}


def weights_id(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


_worker = {}


def _start_worker(weights: str):
    import torch

    from .weights_io import load_model

    torch.set_num_threads(1)
    _worker["model"] = load_model(Path(weights))


def _run_in_worker(args):
    plan, job, path = args
    began = time.monotonic()
    rows = run_job(_worker["model"], plan, job)
    _write_json(path, {"job": asdict(job), "seconds": time.monotonic() - began, "rows": rows})
    return path


def _write_json(path: Path, value) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value, allow_nan=True))
    temporary.replace(path)  # a job is cached whole or not at all


def run_plan(weights: Path, plan: Plan = Plan(), *, workers: int = 2, cache: Path = CACHE, run: bool = True,
             log=print) -> tuple[list[dict], float]:
    """Run every job of ``plan`` not already in ``cache``: the rows of all its jobs (``run=False``: of the cached
    ones) and the seconds of one core they took in all."""
    cache.mkdir(parents=True, exist_ok=True)
    identity = weights_id(weights)
    jobs = plan_jobs(plan)
    paths = {job: cache / f"{job.key(plan, identity)}.json" for job in jobs}
    todo = [(plan, job, paths[job]) for job in jobs if not paths[job].exists()]
    log(f"{len(jobs)} jobs, {len(jobs) - len(todo)} cached in {cache}, {len(todo)} to run on {workers} worker(s)")
    if not run:
        todo = []
    began = time.monotonic()
    def report(done, path):
        seconds = json.loads(path.read_text())["seconds"]
        log(f"[{done}/{len(todo)}] {path.stem}: {seconds:.0f} s, {(time.monotonic() - began) / 60:.1f} min so far")

    if todo and workers == 1:
        _start_worker(str(weights))
        for done, path in enumerate(map(_run_in_worker, todo), 1):
            report(done, path)
    elif todo:
        context = multiprocessing.get_context("spawn")  # fresh processes: one torch thread each, no forked state
        with context.Pool(workers, initializer=_start_worker, initargs=(str(weights),)) as pool:
            for done, path in enumerate(pool.imap(_run_in_worker, todo), 1):
                report(done, path)
    done = [json.loads(paths[job].read_text()) for job in jobs if paths[job].exists()]
    # Rows cached before structure reuse existed were sampled without it.
    return [{"structure_reuse": 0.0, **row} for job in done for row in job["rows"]], sum(job["seconds"] for job in done)
