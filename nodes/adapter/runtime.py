"""The running ComfyUI as the node classes meet it: its progress bars, its cancel button and its input folder."""
from __future__ import annotations

import os
from pathlib import Path


def input_directory() -> Path:
    """ComfyUI's input folder (where uploads land), with links resolved."""
    import folder_paths

    return Path(os.path.realpath(folder_paths.get_input_directory()))


def stop_if_cancelled() -> None:
    """Raise ComfyUI's interruption if the user pressed cancel (newer ComfyUI throttles the progress hook
    that used to check this, so long loops ask themselves)."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI's progress bar (and, given a ``console`` title, a console bar); every step checks for cancel."""

    def __init__(self, total: int, console: str | None = None):
        import comfy.utils
        from tqdm.auto import tqdm

        self.bar = comfy.utils.ProgressBar(max(1, total))
        self.console = tqdm(total=total, desc=console) if console else None

    def step(self, done: int | None = None, **postfix) -> None:
        """One more step done (or ``done`` in all, when a loop knows better than the total), then the cancel check."""
        done = self.bar.current + 1 if done is None else done
        if self.console is not None:
            self.console.set_postfix(postfix, refresh=False)
            self.console.update(done - self.console.n)
        self.bar.update_absolute(done, max(self.bar.total, done))
        stop_if_cancelled()

    def close(self) -> None:
        if self.console is not None:
            self.console.close()
