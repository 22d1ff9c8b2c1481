"""Command line: ``python -m ei2 edit …`` edits a video, ``python -m ei2 demo`` edits a generated sample clip."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import edit, runner
from .workflow import WorkflowError

DEMO_SOURCE = "a red square moving across a colour gradient"
DEMO_PROMPT = "a yellow ball moving across a sunset sky"


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m ei2", description="EI² text-driven video editing on ComfyUI.")
    commands = main.add_subparsers(dest="command", required=True)

    edit_command = commands.add_parser("edit", help="edit a video with a text prompt (runs workflows/ei2_video_edit.json, "
                                                    "or ei2_quick_edit.json with --quick)")
    edit_command.add_argument("--video", type=Path, required=True, help="the clip to edit")
    edit_command.add_argument("--source-prompt", help="what the clip shows now (tunes the model; not used by --quick)")
    edit_command.add_argument("--prompt", required=True, help="what it should show")
    edit_command.add_argument("--quick", action="store_true",
                              help="a quick edit without tuning (workflows/ei2_quick_edit.json): a preview in seconds")
    _common(edit_command, frames=16, size=512, steps=50, tune_steps=500)
    edit_command.add_argument("--server", help="URL of a running ComfyUI with this pack (e.g. http://gpu-box:8188); "
                                       "default: start one from COMFYUI_PATH or the ComfyUI the pack is installed in")

    demo = commands.add_parser("demo", help="edit a generated sample clip; without --checkpoint a tiny random model "
                                            "is used (a pipeline smoke test, not a real edit)")
    _common(demo, frames=None, size=None, steps=None, tune_steps=None)
    return main


def _common(command, **defaults) -> None:
    command.add_argument("--checkpoint", help="SD 1.x checkpoint: a file path, or a name in ComfyUI's models/checkpoints "
                                              f"(default {edit.DEFAULT_CHECKPOINT})")
    command.add_argument("--frames", type=int, default=defaults["frames"],
                         help="frames to edit; a clip longer than the nodes' window (context_frames) is tuned, inverted "
                              "and sampled a window at a time")
    command.add_argument("--size", type=int, default=defaults["size"], help="width and height in pixels")
    command.add_argument("--steps", type=int, default=defaults["steps"], help="DDIM steps for inversion and sampling")
    command.add_argument("--tune-steps", type=int, default=defaults["tune_steps"], help="one-shot tuning steps")
    command.add_argument("--cfg", type=float, default=7.5, help="guidance scale of the edit")
    command.add_argument("--structure-reuse", type=float,
                         help="EI2Sample's structure_reuse: the part of the steps that keep the source's layout "
                              "(0: off; default: the node's default)")
    command.add_argument("--out", type=Path, help="output video (.mp4)")


def demo_settings(args) -> edit.EditSettings:
    comfyui = runner.find_comfyui()
    if args.checkpoint:
        checkpoint, small = args.checkpoint, False
    else:
        print("No --checkpoint given: using a tiny random SD1.5-shaped model. The output is a PIPELINE SMOKE TEST, "
              "not a real edit. For a real edit: python -m ei2 demo --checkpoint /path/to/v1-5-pruned-emaonly.safetensors")
        checkpoint, small = str(edit.tiny_checkpoint(comfyui)), True
    pick = lambda value, tiny, real: value if value is not None else (tiny if small else real)  # noqa: E731
    return edit.EditSettings(
        video=edit.sample_clip(), source_prompt=DEMO_SOURCE, prompt=DEMO_PROMPT, checkpoint=checkpoint,
        frames=pick(args.frames, 8, 16), size=pick(args.size, 64, 512), steps=pick(args.steps, 5, 50),
        tune_steps=pick(args.tune_steps, 3, 500), cfg=args.cfg, structure_reuse=args.structure_reuse,
        out=args.out or Path("ei2_demo.mp4"))


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "demo":
            settings = demo_settings(args)
        else:
            settings = edit.EditSettings(
                video=args.video, source_prompt=args.source_prompt, prompt=args.prompt, checkpoint=args.checkpoint,
                frames=args.frames, size=args.size, steps=args.steps, tune_steps=args.tune_steps, cfg=args.cfg,
                structure_reuse=args.structure_reuse, quick=args.quick, out=args.out, server=args.server)
        edit.run_edit(settings)
    except (edit.UsageError, runner.ComfyUINotFound, WorkflowError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except runner.PromptFailed as error:
        print(edit.describe_failure(error), file=sys.stderr)
        return 1
    except (RuntimeError, TimeoutError, OSError) as error:  # ComfyUI failed to start, died, or the link broke
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
