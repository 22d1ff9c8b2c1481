"""Which files LoadVideoFrames may read: videos inside ComfyUI's input folder, never outside it.

A name is resolved (``..`` and symlinks followed) before it is trusted, so neither a path nor a link
can reach a file outside the folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..adapter.runtime import input_directory

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
TEXT_SNIFF_BYTES = 4096

_NOT_INPUT_ANNOTATIONS = (" [output]", " [temp]")


def _base(directory: str | os.PathLike | None) -> Path:
    return Path(os.path.realpath(directory)) if directory is not None else input_directory()


def _inside(base: Path, path: Path) -> bool:
    return path != base and os.path.commonpath([str(base), str(path)]) == str(base)


def list_videos(directory: str | os.PathLike | None = None) -> list[str]:
    """Sorted names of the video files directly inside the input directory.

    Only names with a video extension (case-insensitive) whose real path stays inside the directory
    are listed: a symlink that points outside it is left out.
    """
    base = _base(directory)
    try:
        names = os.listdir(base)
    except OSError:
        return []
    videos = []
    for name in names:
        if not name.lower().endswith(VIDEO_EXTENSIONS):
            continue
        real = Path(os.path.realpath(base / name))
        if _inside(base, real) and real.is_file():
            videos.append(name)
    return sorted(videos)


def resolve_video_path(name, directory: str | os.PathLike | None = None) -> Path:
    """The real path of the video ``name`` (relative to the input directory), or ``ValueError``.

    Refused: an empty name, absolute paths, names whose real path (``..`` and symlinks resolved)
    leaves the input directory, files that do not exist, are not regular files, are empty, or do
    not have a video extension.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("No video selected: upload a video or put one into ComfyUI's input folder and pick it.")
    if name.endswith(" [input]"):
        name = name[: -len(" [input]")]
    for annotation in _NOT_INPUT_ANNOTATIONS:
        if name.endswith(annotation):
            folder = annotation.strip(" []")
            raise ValueError(
                f"'{name}' is in ComfyUI's {folder} folder; Load Video Frames only reads ComfyUI's input "
                "folder. Upload the video or copy it there."
            )
    base = _base(directory)
    if os.path.isabs(name):
        raise ValueError(
            f"'{name}' is an absolute path; only files inside ComfyUI's input folder can be loaded. "
            "Give the name relative to that folder (upload the video or copy it there)."
        )
    try:
        real = Path(os.path.realpath(base / name))
    except (ValueError, OSError) as error:
        raise ValueError(f"'{name}' is not a usable file name ({error}).") from None
    if not _inside(base, real):
        raise ValueError(
            f"'{name}' points outside ComfyUI's input folder (through '..' or a symlink) and is refused. "
            "Upload the video or copy it into the input folder."
        )
    if not real.exists():
        raise ValueError(
            f"Video file not found: '{name}' is not in ComfyUI's input folder ({base}). "
            "Upload it again or pick another file (refresh the list with R)."
        )
    if not real.is_file():
        raise ValueError(f"'{name}' is a folder or a special file, not a video file.")
    if not name.lower().endswith(VIDEO_EXTENSIONS):
        raise ValueError(
            f"'{name}' does not have a video file extension; supported: {', '.join(VIDEO_EXTENSIONS)}."
        )
    if real.stat().st_size == 0:
        raise ValueError(f"'{name}' is empty (0 bytes); the upload or copy probably failed. Upload it again.")
    return real


def file_fingerprint(name) -> str:
    """What changes when the file changes: its real path, size and modification time (never its content)."""
    path = resolve_video_path(name)
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def looks_like_text(path: Path) -> bool:
    """Whether the file starts like text: it tells a renamed text file apart from a damaged video."""
    with open(path, "rb") as handle:
        head = handle.read(TEXT_SNIFF_BYTES)
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:  # a multi-byte character cut at the end is still text
        if error.start < len(head) - 4:
            return False
    return True
