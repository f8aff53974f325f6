"""Atomic file replacement, for every file the node writes: configs, retained store, asound.conf."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, backup: Path | None = None) -> None:
    """Replace a file so a crash leaves the old or the new content: temp file, fsync, rename, fsync dir.

    With `backup`, the current file becomes that backup through a hard link first, so there is
    never a moment without a complete file at `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if backup is not None and path.exists():
        link = backup.with_name(f".{backup.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.link(path, link)
        os.replace(link, backup)
    os.replace(tmp, path)
    fsync_dir(path.parent)
