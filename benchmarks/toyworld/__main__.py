"""The toy world's commands.

    python -m benchmarks.toyworld train [--steps N] [--init WEIGHTS] [--threads T] [--run-dir DIR] [--max-minutes M]
    python -m benchmarks.toyworld gate [--weights FILE] [--per-caption K] [--sheet PNG]
    python -m benchmarks.toyworld edit --clip CLIP.mp4 --source-prompt "…" --prompt "…" \
        [--attention ffam] [--temporal stam] [--structure-reuse 0.8] [--seed 0] --out OUT.mp4
    python -m benchmarks.toyworld benchmark [--quick] [--clips 48] [--subset 16] [--workers 2] [--doc docs/benchmarks.md]
    python -m benchmarks.toyworld windows [--quick] [--frames 48] [--context-frames 16] [--context-overlap 4] \
        [--overlaps 0,2,8] [--doc docs/benchmarks.md]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from benchmarks.toyworld.benchmark import CACHE  # noqa: E402
from benchmarks.toyworld.train import RUNS, TrainSettings, train  # noqa: E402
from benchmarks.toyworld.weights_io import DEFAULT_WEIGHTS  # noqa: E402
from ei2.context_windows import DEFAULT_CONTEXT  # noqa: E402
from ei2.structure_reuse import DEFAULT_STRUCTURE_REUSE  # noqa: E402


def add_edit_options(parser):
    from benchmarks.toyworld.edit import INVERSION_PROMPTS, EditSettings

    defaults = EditSettings()
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--tune-steps", type=int, default=defaults.tune_steps)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--train", default=defaults.train, help="temporal_and_queries | temporal | queries")
    parser.add_argument("--ddim-steps", type=int, default=defaults.ddim_steps)
    parser.add_argument("--guidance", type=float, default=defaults.guidance,
                        help="CFG (benchmark: each configuration samples at its workflow's CFG instead)")
    parser.add_argument("--inversion", default=defaults.inversion, choices=INVERSION_PROMPTS,
                        help="the prompt DDIM inversion is given: empty (the workflows') or the source prompt")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.toyworld", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = TrainSettings()
    trainer = commands.add_parser("train", help="train (or resume) the toy text-to-image model")
    trainer.add_argument("--steps", type=int, default=defaults.steps)
    trainer.add_argument("--batch", type=int, default=defaults.batch)
    trainer.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    trainer.add_argument("--warmup", type=int, default=defaults.warmup)
    trainer.add_argument("--seed", type=int, default=defaults.seed)
    trainer.add_argument("--init", help="weights file to fine-tune from (default: train from the seed's initialisation)")
    trainer.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    trainer.add_argument("--run-dir", type=Path, default=RUNS / "default")
    trainer.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    trainer.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    trainer.add_argument("--threads", type=int, default=1)
    gate = commands.add_parser("gate", help="score samples of every caption (colour ≥ 90 %%, shape ≥ 80 %%)")
    gate.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    gate.add_argument("--per-caption", type=int, default=4)
    gate.add_argument("--seed", type=int, default=0)
    gate.add_argument("--steps", type=int, default=25, help="DDIM steps")
    gate.add_argument("--guidance", type=float, default=3.0)
    gate.add_argument("--sheet", type=Path, help="write the samples as one PNG here")
    gate.add_argument("--threads", type=int, default=1)
    editor = commands.add_parser("edit", help="edit one clip with one configuration")
    editor.add_argument("--clip", type=Path, required=True, help="a video file (frames are resized to 32×32)")
    editor.add_argument("--source-prompt", required=True)
    editor.add_argument("--prompt", required=True)
    editor.add_argument("--out", type=Path, required=True, help=".mp4, .avi (lossless) or .png (a strip)")
    add_edit_options(editor)
    editor.add_argument("--attention", default="ffam", help="ffam | sparse_causal | full | per_frame")
    editor.add_argument("--temporal", default="stam", help="stam | vanilla | none")
    editor.add_argument("--coarse-stride", type=int, default=2)
    editor.add_argument("--max-frames", type=int, default=16)
    editor.add_argument("--structure-reuse", type=float, default=DEFAULT_STRUCTURE_REUSE,
                        help="the part of the steps that reuse the source's structure (EI2Sample's structure_reuse; 0: off)")
    bench = commands.add_parser("benchmark", help="the edit benchmark; writes a markdown section")
    add_edit_options(bench)
    bench.add_argument("--quick", action="store_true", help="two clips, one value per sweep (a smoke run)")
    bench.add_argument("--clips", type=int, default=48, help="source clips (clips.py's family)")
    bench.add_argument("--subset", type=int, default=16, help="the first clips, which also get ablations and sweeps")
    bench.add_argument("--frames", type=int, default=8)
    bench.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes, one torch thread each")
    bench.add_argument("--cache", type=Path, default=CACHE, help="each job's rows; a rerun skips what is there")
    bench.add_argument("--report-only", action="store_true", help="run nothing: the tables of the jobs already cached")
    bench.add_argument("--doc", type=lambda text: Path(text) if text else None,
                       default=Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md",
                       help="markdown file whose toyworld section is (re)written ('' for none)")
    windows = commands.add_parser("windows", help="context windows' seams against one window; prints a table")
    add_edit_options(windows)
    windows.add_argument("--quick", action="store_true", help="one clip (a smoke run)")
    windows.add_argument("--frames", type=int, default=48)
    windows.add_argument("--clips", type=int, default=3, help="how many of the benchmark's source clips")
    windows.add_argument("--context-frames", type=int, default=DEFAULT_CONTEXT.frames)
    windows.add_argument("--context-overlap", type=int, default=DEFAULT_CONTEXT.overlap, help="overlap of the anchor comparison")
    windows.add_argument("--overlaps", type=lambda text: [int(v) for v in text.split(",") if v], default=[0, 2, 8],
                         help="further overlaps, without the anchor, paired against --context-overlap "
                              "(comma-separated; '' for none)")
    windows.add_argument("--frames-per-step", type=int, help="tuning window (default: --context-frames)")
    windows.add_argument("--doc", type=Path, help="markdown file whose windows table is (re)written")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.command == "train":
        settings = TrainSettings(steps=args.steps, batch=args.batch, learning_rate=args.learning_rate,
                                 warmup=args.warmup, seed=args.seed, checkpoint_every=args.checkpoint_every,
                                 init=args.init)

        def log(line):
            print(line, flush=True)

        log(f"training {settings} into {args.run_dir}, weights {args.weights}, {args.threads} thread(s)")
        train(settings, args.run_dir, args.weights, max_minutes=args.max_minutes, log=log)
    elif args.command == "edit":
        from benchmarks.toyworld.commands import edit_command

        edit_command(args)
    elif args.command == "windows":
        from benchmarks.toyworld.commands import windows_command

        windows_command(args)
    elif args.command == "benchmark":
        from benchmarks.toyworld.commands import benchmark_command

        benchmark_command(args)
    else:
        from benchmarks.toyworld.gate import gate_cli

        result = gate_cli(args.weights, args.per_caption, args.seed, args.steps, args.guidance, args.sheet)
        return 0 if result.passed else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
