"""Install steps: each says what it does, does it only when needed, and records how to undo it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.framework.files import fsync_dir
from node.install.manifest import Manifest, sha256
from node.install.system import InstallError, System


@dataclass
class Outcome:
    status: str  # unchanged created updated replaced kept skipped removed restored (would ... in a dry run)
    what: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:>16}  {self.what}" + (f": {self.detail}" if self.detail else "")

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "what": self.what, "detail": self.detail}


@dataclass
class Target:
    """Where the steps act: the machine (or a --root tree), the manifest, and how."""

    system: System
    manifest: Manifest
    backup_dir: str  # system path: <data_dir>/install/backup
    force: bool = False
    dry_run: bool = False  # say what would be done, change nothing

    def backup_of(self, system_path: str) -> str:
        return self.backup_dir.rstrip("/") + system_path


class Action:
    key: str = ""
    what: str = ""

    def apply(self, t: Target) -> Outcome:
        raise NotImplementedError


def _would(t: Target, status: str) -> str:
    return f"would be {status}" if t.dry_run else status


def make_dirs(t: Target, system_dir: str) -> list[str]:
    """Create `system_dir` and its missing parents; the ones created, outermost first."""
    created: list[str] = []
    path = Path(system_dir)
    missing = [p for p in (path, *path.parents) if not t.system.path(p).is_dir()]
    for p in reversed(missing):
        t.system.path(p).mkdir()
        t.system.path(p).chmod(0o755)
        created.append(str(p))
    return created


def _move_aside(t: Target, system_path: str) -> str:
    """Move a file that is not install's out of the way, into the backup dir; uninstall puts it back."""
    backup = t.backup_of(system_path)
    make_dirs(t, str(Path(backup).parent))
    os.replace(t.system.path(system_path), t.system.path(backup))
    return backup


def _current(p: Path) -> bytes | None:
    if p.is_symlink() or not p.is_file():
        return None
    return p.read_bytes()


@dataclass
class WriteFile(Action):
    path: str
    content: bytes
    mode: int = 0o644

    def __post_init__(self) -> None:
        self.key = f"file:{self.path}"
        self.what = f"write {self.path}"

    def apply(self, t: Target) -> Outcome:
        p = t.system.path(self.path)
        entry = t.manifest.get(self.key)
        current = _current(p)
        if current == self.content:
            if (p.stat().st_mode & 0o7777) != self.mode and not t.dry_run:
                p.chmod(self.mode)
                return Outcome("updated", self.what, f"mode {self.mode:o}")
            return Outcome("unchanged", self.what)
        backup = entry.get("backup") if entry else None
        exists = p.exists() or p.is_symlink()
        if entry is not None and exists:
            if (current is None or sha256(current) != entry["sha256"]) and not t.force:
                return Outcome("kept", self.what, "changed since install (--force replaces it)")
            status = "updated"
        elif exists:
            status = "replaced"
        else:
            status = "created"
        if t.dry_run:
            return Outcome(_would(t, status), self.what)
        if status == "replaced":
            backup = _move_aside(t, self.path)
        dirs = list(entry.get("dirs", [])) if entry else []
        dirs += make_dirs(t, str(Path(self.path).parent))
        if p.is_symlink():
            p.unlink()
        t.system.write(p, self.content)
        p.chmod(self.mode)
        t.manifest.put(
            self.key,
            {
                "kind": "file",
                "path": self.path,
                "sha256": sha256(self.content),
                "backup": backup,
                "dirs": dirs,
            },
        )
        detail = f"the previous one is kept as {backup}" if status == "replaced" else ""
        return Outcome(status, self.what, detail)


@dataclass
class Symlink(Action):
    path: str
    target: str

    def __post_init__(self) -> None:
        self.key = f"link:{self.path}"
        self.what = f"link {self.path} -> {self.target}"

    def apply(self, t: Target) -> Outcome:
        p = t.system.path(self.path)
        entry = t.manifest.get(self.key)
        if p.is_symlink() and str(p.readlink()) == self.target:
            return Outcome("unchanged", self.what)
        backup = entry.get("backup") if entry else None
        exists = p.exists() or p.is_symlink()
        if entry is not None and exists:
            if not p.is_symlink() and not t.force:
                return Outcome("kept", self.what, "replaced by a file since install (--force replaces it)")
            status = "updated"
        elif exists:
            status = "replaced"
        else:
            status = "created"
        if t.dry_run:
            return Outcome(_would(t, status), self.what)
        if status == "replaced":
            backup = _move_aside(t, self.path)
        dirs = list(entry.get("dirs", [])) if entry else []
        dirs += make_dirs(t, str(Path(self.path).parent))
        tmp = p.with_name(f".{p.name}.milo-tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(self.target)
        os.replace(tmp, p)
        if not t.system.simulated:
            fsync_dir(p.parent)
        t.manifest.put(
            self.key,
            {"kind": "link", "path": self.path, "target": self.target, "backup": backup, "dirs": dirs},
        )
        return Outcome(status, self.what, f"the previous one is kept as {backup}" if backup else "")


@dataclass
class Directory(Action):
    path: str
    mode: int = 0o755

    def __post_init__(self) -> None:
        self.key = f"dir:{self.path}"
        self.what = f"directory {self.path}"

    def apply(self, t: Target) -> Outcome:
        p = t.system.path(self.path)
        if p.is_dir():
            if (p.stat().st_mode & 0o7777) != self.mode and t.manifest.get(self.key) and not t.dry_run:
                p.chmod(self.mode)
                return Outcome("updated", self.what, f"mode {self.mode:o}")
            return Outcome("unchanged", self.what)
        if p.exists() or p.is_symlink():
            raise InstallError(f"{p} exists and is not a directory")
        if t.dry_run:
            return Outcome(_would(t, "created"), self.what)
        dirs = make_dirs(t, self.path)
        p.chmod(self.mode)
        # The manifest may live in this very directory: it exists now.
        t.manifest.put(self.key, {"kind": "dir", "path": self.path, "dirs": dirs})
        return Outcome("created", self.what)


@dataclass
class Owner(Action):
    path: str
    user: str

    def __post_init__(self) -> None:
        self.key = f"owner:{self.path}"
        self.what = f"owner of {self.path}: {self.user}"

    def apply(self, t: Target) -> Outcome:
        if not t.system.path(self.path).exists() and t.dry_run:
            return Outcome(_would(t, "updated"), self.what)
        if t.system.owner(self.path) == self.user:
            return Outcome("unchanged", self.what)
        if not t.dry_run:
            t.system.chown(self.path, self.user)
        return Outcome(_would(t, "updated"), self.what)


BEGIN = "# BEGIN milo: written by `milo install`; `milo uninstall` removes this block"
END = "# END milo"
_BLOCK = re.compile(rf"^{re.escape(BEGIN)}\n.*?^{re.escape(END)}\n?", re.S | re.M)


def block_text(lines: Sequence[str]) -> str:
    # [all]: config.txt may end inside a conditional section ([pi4], [cm4]...), which would else apply.
    return "\n".join([BEGIN, "[all]", *lines, END]) + "\n"


@dataclass
class ConfigBlock(Action):
    """Lines of ours in a file that is not ours (config.txt): one marked block, the rest untouched."""

    path: str
    lines: Sequence[str]

    def __post_init__(self) -> None:
        self.key = f"block:{self.path}"
        self.what = f"lines in {self.path}: {', '.join(self.lines)}"

    def apply(self, t: Target) -> Outcome:
        p = t.system.path(self.path)
        if not p.is_file():
            return Outcome("skipped", self.what, f"no {self.path}: not a Raspberry Pi, so no overlay")
        text = p.read_text()
        block = block_text(self.lines)
        found = _BLOCK.search(text)
        if found and found.group(0).rstrip("\n") == block.rstrip("\n"):
            return Outcome("unchanged", self.what)
        entry = t.manifest.get(self.key)
        if (
            found
            and entry
            and sha256(found.group(0).rstrip("\n").encode()) != entry["sha256"]
            and not t.force
        ):
            return Outcome("kept", self.what, "its block was changed since install (--force replaces it)")
        status = "updated" if found else "created"
        if t.dry_run:
            return Outcome(_would(t, status), self.what)
        added_newline = bool(entry and entry.get("added_newline"))
        if found:
            new = text[: found.start()] + block + text[found.end() :]
        else:
            added_newline = bool(text) and not text.endswith("\n")
            new = text + ("\n" if added_newline else "") + block
        mode = p.stat().st_mode & 0o7777
        t.system.write(p, new.encode())
        p.chmod(mode)
        t.manifest.put(
            self.key,
            {
                "kind": "block",
                "path": self.path,
                "sha256": sha256(block.rstrip("\n").encode()),
                "added_newline": added_newline,
            },
        )
        return Outcome(status, self.what)


@dataclass
class Packages(Action):
    names: Sequence[str]

    def __post_init__(self) -> None:
        self.key = "packages"
        self.what = f"packages {' '.join(self.names)}"

    def apply(self, t: Target) -> Outcome:
        missing = [n for n in self.names if not t.system.package_installed(n)]
        if not missing:
            return Outcome("unchanged", self.what)
        detail = "" if len(missing) == len(self.names) else f"missing were {' '.join(missing)}"
        if t.dry_run:
            return Outcome(_would(t, "installed"), self.what, detail)
        t.system.install_packages(missing)
        entry = t.manifest.get(self.key) or {"kind": "packages", "names": []}
        t.manifest.put(self.key, {**entry, "names": sorted({*entry["names"], *missing})})
        return Outcome("installed", self.what, detail)


@dataclass
class User(Action):
    name: str
    home: str
    groups: Sequence[str]

    def __post_init__(self) -> None:
        self.key = f"user:{self.name}"
        self.what = f"user {self.name} (groups {', '.join(self.groups) or 'none'})"

    def apply(self, t: Target) -> Outcome:
        info = t.system.user(self.name)
        if info is not None and info.uid == 0:
            raise InstallError(f"user {self.name} is root: the node never runs as root")
        entry = t.manifest.get(self.key) or {
            "kind": "user",
            "name": self.name,
            "created": False,
            "groups": [],
        }
        if info is None:
            if t.dry_run:
                return Outcome(_would(t, "created"), self.what)
            t.system.create_user(self.name, self.home, self.groups)
            t.manifest.put(self.key, {**entry, "created": True})
            return Outcome("created", self.what)
        missing = [g for g in self.groups if g not in info.groups]
        if not missing:
            return Outcome("unchanged", self.what)
        if t.dry_run:
            return Outcome(_would(t, "updated"), self.what, f"added to {', '.join(missing)}")
        t.system.add_groups(self.name, missing)
        if not entry["created"]:
            entry = {**entry, "groups": sorted({*entry["groups"], *missing})}
        t.manifest.put(self.key, entry)
        return Outcome("updated", self.what, f"added to {', '.join(missing)}")


@dataclass
class EnableUnits(Action):
    units: Sequence[str]

    def __post_init__(self) -> None:
        self.key = "units"
        self.what = f"enable and start {' '.join(self.units)}"

    def apply(self, t: Target) -> Outcome:
        missing = [u for u in self.units if not t.system.unit_enabled(u)]
        if not missing:
            return Outcome("unchanged", self.what)
        detail = "" if len(missing) == len(self.units) else f"were not: {' '.join(missing)}"
        if t.dry_run:
            return Outcome(_would(t, "started"), self.what, detail)
        t.system.enable_now(missing)
        entry = t.manifest.get(self.key) or {"kind": "units", "enabled": []}
        t.manifest.put(
            self.key,
            {**entry, "enabled": [*entry["enabled"], *(u for u in missing if u not in entry["enabled"])]},
        )
        return Outcome("started", self.what, detail)


@dataclass
class LoadModule(Action):
    name: str

    def __post_init__(self) -> None:
        self.key = f"module:{self.name}"
        self.what = f"load kernel module {self.name} (and at every boot)"

    def apply(self, t: Target) -> Outcome:
        if t.system.module_loaded(self.name):
            return Outcome("unchanged", self.what)
        if t.dry_run:
            return Outcome(_would(t, "loaded"), self.what)
        t.system.load_module(self.name)
        return Outcome("loaded", self.what)


@dataclass
class Undo:
    """How uninstall undoes one manifest entry; `data_kept` is true when the data dir stays."""

    t: Target
    purge: bool = False
    keep_packages: bool = False
    data_kept: bool = False
    removed_units: list[str] = field(default_factory=list)

    def __call__(self, key: str, entry: dict[str, Any]) -> Outcome:
        kind = entry["kind"]
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise InstallError(f"manifest entry {key!r} of unknown kind {kind!r}")
        outcome: Outcome = handler(entry)
        return outcome

    def _rmdirs(self, dirs: Sequence[str]) -> None:
        for d in reversed(dirs):
            p = self.t.system.path(d)
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()

    def _restore(self, entry: dict[str, Any]) -> str:
        backup = entry.get("backup")
        if backup and self.t.system.path(backup).exists():
            os.replace(self.t.system.path(backup), self.t.system.path(entry["path"]))
            self._rmdirs(_parents_below(backup, self.t.backup_dir))
            return "restored"
        return "removed"

    def _file(self, entry: dict[str, Any]) -> Outcome:
        p = self.t.system.path(entry["path"])
        what = f"file {entry['path']}"
        current = _current(p)
        if current is None and not (p.exists() or p.is_symlink()):
            status = self._restore(entry)
            self._rmdirs(entry.get("dirs", []))
            return Outcome("restored" if status == "restored" else "gone", what)
        if current is None or sha256(current) != entry["sha256"]:
            return Outcome("kept", what, "changed since install")
        p.unlink()
        status = self._restore(entry)
        self._rmdirs(entry.get("dirs", []))
        if entry["path"].startswith("/etc/systemd/system/"):
            self.removed_units.append(Path(entry["path"]).name)
        return Outcome(status, what)

    def _link(self, entry: dict[str, Any]) -> Outcome:
        p = self.t.system.path(entry["path"])
        what = f"link {entry['path']}"
        if p.is_symlink() and str(p.readlink()) == entry["target"]:
            p.unlink()
        elif p.exists() or p.is_symlink():
            return Outcome("kept", what, "changed since install")
        status = self._restore(entry)
        self._rmdirs(entry.get("dirs", []))
        return Outcome(status, what)

    def _dir(self, entry: dict[str, Any]) -> Outcome:
        p = self.t.system.path(entry["path"])
        what = f"directory {entry['path']}"
        if not p.is_dir():
            return Outcome("gone", what)
        left = sorted(x.name for x in p.iterdir())
        if left and not self.purge:
            return Outcome("kept", what, f"holds {', '.join(left[:5])}{'...' if len(left) > 5 else ''}")
        shutil.rmtree(p)
        self.t.system.forget(entry["path"])
        self._rmdirs(entry.get("dirs", [])[:-1])
        return Outcome("removed", what)

    def _block(self, entry: dict[str, Any]) -> Outcome:
        p = self.t.system.path(entry["path"])
        what = f"milo block of {entry['path']}"
        text = p.read_text() if p.is_file() else ""
        found = _BLOCK.search(text)
        if not found:
            return Outcome("gone", what)
        if sha256(found.group(0).rstrip("\n").encode()) != entry["sha256"]:
            return Outcome("kept", what, "changed since install")
        start = found.start() - (1 if entry.get("added_newline") and found.start() > 0 else 0)
        mode = p.stat().st_mode & 0o7777
        self.t.system.write(p, (text[:start] + text[found.end() :]).encode())
        p.chmod(mode)
        return Outcome("removed", what, "the rest of the file is as it was")

    def _packages(self, entry: dict[str, Any]) -> Outcome:
        # Not `apt-get remove`: with -y it also takes every package that depends on these, which the
        # user may have installed since. Marked automatic, autoremove takes those nothing else needs.
        names = [n for n in entry["names"] if self.t.system.package_installed(n)]
        what = f"packages {' '.join(entry['names'])}"
        if self.keep_packages or not names:
            return Outcome("kept" if names else "gone", what, "--keep-packages" if names else "")
        self.t.system.mark_auto(names)
        return Outcome("released", what, "marked automatic: `apt-get autoremove` removes what nothing needs")

    def _user(self, entry: dict[str, Any]) -> Outcome:
        name = entry["name"]
        what = f"user {name}"
        if self.t.system.user(name) is None:
            return Outcome("gone", what)
        if entry["created"]:
            if self.data_kept:
                return Outcome("kept", what, "it owns the data dir that is kept (--purge removes both)")
            self.t.system.delete_user(name)
            return Outcome("removed", what)
        for group in entry.get("groups", []):
            self.t.system.run(["gpasswd", "--delete", name, group])
        return Outcome("updated", what, f"left {', '.join(entry.get('groups', []))}")

    def _units(self, entry: dict[str, Any]) -> Outcome:
        units = [u for u in entry["enabled"] if self.t.system.unit_enabled(u)]
        what = f"units {' '.join(entry['enabled'])}"
        if not units:
            return Outcome("gone", what)
        self.t.system.disable_now(units)
        return Outcome("stopped", what, "disabled")


def _parents_below(path: str, top: str) -> list[str]:
    """The directories between `top` (included) and `path` (excluded), outermost first."""
    parents = [str(p) for p in Path(path).parents if str(p).startswith(top.rstrip("/"))]
    return list(reversed(parents))
