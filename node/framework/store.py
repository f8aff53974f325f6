"""Per-subsystem JSON files in the data dir: atomic writes, validation on load, corrupt files set aside."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from node.framework.files import write_atomic

logger = logging.getLogger(__name__)

FILE_VERSION = 1


class StoredFile(BaseModel):
    """What one subsystem keeps on disk: its config overrides and its own data."""

    model_config = ConfigDict(extra="forbid")

    version: int = FILE_VERSION
    # Only the keys a user changed (config/set); defaults and the config file fill in the rest,
    # so an edit of the config file still takes effect for every key nobody overrode.
    config: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass
class LoadResult:
    """A loaded file and what went wrong getting it (each problem is reported on `<base>/error`)."""

    file: StoredFile
    problems: list[str] = field(default_factory=list)
    source: str = "file"  # file | backup | defaults


class Store:
    """One file per subsystem: `<data_dir>/<name>.json`, with the previous good copy in `<name>.json.bak`."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        # Written by flush(), in a thread: the fsyncs of one save (~10 ms on an SD card, as here) must
        # not hold up the event loop, which serves every other client meanwhile.
        self._staged: dict[str, bytes] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def adopt(self, old: str, name: str) -> bool:
        """Take over the files a subsystem kept under an earlier name, when it has none of its own yet."""
        path, former = self.path(name), self.path(old)
        if path.exists() or path.with_name(path.name + ".bak").exists() or not former.exists():
            return False
        for suffix in (".bak", ""):
            source = former.with_name(former.name + suffix)
            if source.exists():
                os.replace(source, path.with_name(path.name + suffix))
        return True

    def _read(self, path: Path, validate: Any) -> StoredFile:
        stored = StoredFile.model_validate_json(path.read_bytes())
        if stored.version > FILE_VERSION:
            raise ValueError(f"written by a newer node (file version {stored.version})")
        if validate is not None:
            validate(stored)
        return stored

    def load(self, name: str, validate: Any = None) -> LoadResult:
        """Load and check a subsystem's file; `validate(stored)` raises ValueError if its content is wrong.

        A corrupt file is moved aside (never deleted: it may hold what a user wants back), then the
        backup is tried, then the defaults.
        """
        path = self.path(name)
        problems: list[str] = []
        if not path.exists():
            backup = path.with_name(path.name + ".bak")
            if not backup.exists():
                return LoadResult(StoredFile(), source="defaults")
            problems.append(f"{path.name} is missing")
        else:
            try:
                return LoadResult(self._read(path, validate))
            except (ValueError, ValidationError, OSError) as exc:
                aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
                with contextlib.suppress(OSError):
                    os.replace(path, aside)
                problems.append(f"{path.name} is corrupt ({_short(exc)}); moved to {aside.name}")
        backup = path.with_name(path.name + ".bak")
        try:
            stored = self._read(backup, validate)
        except FileNotFoundError:
            problems.append("no backup: using defaults")
            return LoadResult(StoredFile(), problems, "defaults")
        except (ValueError, ValidationError, OSError) as exc:
            problems.append(f"backup {backup.name} is unusable too ({_short(exc)}): using defaults")
            return LoadResult(StoredFile(), problems, "defaults")
        problems.append(f"using the last good copy {backup.name}")
        # Put the good copy back in place so the next start does not report the same problem.
        self.save(name, stored)
        return LoadResult(stored, problems, "backup")

    def save(self, name: str, stored: StoredFile) -> None:
        """Replace the file atomically, the previous one kept as `<name>.json.bak`."""
        self._staged.pop(name, None)
        self._write(name, stored.model_dump_json(indent=2).encode())

    def _write(self, name: str, data: bytes) -> None:
        path = self.path(name)
        write_atomic(path, data, backup=path.with_name(path.name + ".bak"))

    def stage(self, name: str, stored: StoredFile) -> None:
        """Keep `stored` for the next flush(name); of several staged meanwhile, the newest is written."""
        self._staged[name] = stored.model_dump_json(indent=2).encode()

    def pending(self, name: str) -> bool:
        """Something staged for `name` is not on disk yet."""
        lock = self._locks.get(name)
        return name in self._staged or (lock is not None and lock.locked())

    async def flush(self, name: str) -> None:
        """Once this returns, what was staged for `name` before the call is on disk (or it raised)."""
        if not self.pending(name):
            return
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # one write of a file at a time, so the newest is the one that stays
            data = self._staged.pop(name, None)
            if data is not None:
                await asyncio.to_thread(self._write, name, data)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{exc.error_count()} error(s), first at {loc or 'top'}: {first['msg']}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
