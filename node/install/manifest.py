"""The install manifest: what `milo install` added, so `milo uninstall` removes that and nothing else."""

# It lives in <data_dir>/install/, a directory owned by root inside the node's data dir: uninstall runs
# as root and deletes what the manifest names, so a manifest the node's user could have written is
# refused (owner check), and every path in it must be one that install writes (`ALLOWED`).

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.install.system import InstallError, System

VERSION = 1
INSTALL_DIR = "install"  # under the data dir
# Where install writes, as system paths: uninstall refuses any other path found in a manifest.
ALLOWED_PREFIXES = (
    "/etc/milo/",
    "/etc/systemd/system/",
    "/etc/polkit-1/rules.d/",
    "/etc/udev/rules.d/",
    "/etc/modules-load.d/",
    "/etc/modprobe.d/",
)
ALLOWED_FILES = ("/etc/asound.conf", "/boot/firmware/config.txt", "/boot/config.txt")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Manifest:
    """Entries in the order they were made (uninstall goes backwards); `key` -> what undoes it."""

    path: Path
    data_dir: str
    system: System
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    _saved: str = ""

    @classmethod
    def load(cls, path: Path, data_dir: str, system: System) -> Manifest:
        try:
            text = path.read_text()
            if not system.simulated and path.stat().st_uid != 0:
                raise InstallError(f"{path} is not owned by root: refusing to act on it")
            raw = json.loads(text)
        except FileNotFoundError:
            return cls(path, data_dir, system)
        except (OSError, ValueError) as exc:
            raise InstallError(f"{path}: {exc}") from exc
        if raw.get("version") != VERSION:
            raise InstallError(f"{path}: manifest version {raw.get('version')!r}, expected {VERSION}")
        manifest = cls(
            path, data_dir, system, dict(raw.get("entries", {})), dict(raw.get("options", {})), text
        )
        for entry in manifest.entries.values():
            manifest.check_entry(entry)
        return manifest

    def check_entry(self, entry: dict[str, Any]) -> None:
        if "path" in entry:
            self.check_path(str(entry["path"]))
        if entry.get("backup"):
            self.check_path(str(entry["backup"]))
        for directory in entry.get("dirs", ()):
            # Directories install created on the way (in an empty --root tree: etc/, var/lib/...): only
            # ever removed when empty, so an ancestor of a place install writes is fine too.
            self.check_path(str(directory), ancestors=True)

    def check_path(self, system_path: str, *, ancestors: bool = False) -> None:
        places = (*ALLOWED_PREFIXES, *ALLOWED_FILES, self.data_dir.rstrip("/") + "/")
        path = system_path.rstrip("/")
        ok = path.startswith("/") and (
            path in ALLOWED_FILES
            or path == self.data_dir.rstrip("/")
            or any(path.startswith(p) for p in places if p.endswith("/"))
            or (ancestors and any(p.startswith(path + "/") for p in places))
        )
        if not ok or ".." in Path(path).parts:
            raise InstallError(f"{self.path}: {system_path!r} is no path install writes: refusing")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.check_entry(entry)
        self.entries[key] = entry
        self.save()

    def drop(self, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self.save()

    def save(self) -> None:
        text = json.dumps({"version": VERSION, "options": self.options, "entries": self.entries}, indent=2)
        text += "\n"
        # Until install has made its own directory (the first steps make the data dir) it waits.
        if text != self._saved and self.path.parent.is_dir():
            self.system.write(self.path, text.encode())
            self.path.chmod(0o644)
            self._saved = text
