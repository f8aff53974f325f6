"""`milo update-apply PROGRAM`: an update's one privileged step, run as root by milo-update@.service."""

# The node (unprivileged) only names the program, by starting that unit through polkit. Everything
# else is decided here, as root, from root's own files: /etc/milo/milo.toml's [update] section (the
# feed URL, the package tools), the Debian candidate apt-cache gives, the feed's sha256. Steps: back up
# what is replaced, install, restart the program's unit, check that it runs the new version after
# `settle_s`, and roll back to the backup when it does not. Progress goes to <status_dir>/<program>.json
# (a root-owned runtime directory the node reads), so nothing the node can write is ever followed.

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.adapters import updates, versions
from node.adapters.systemd import Systemd, SystemdError
from node.install.binaries import ARCHES, Pinned, _binary, _place, sha256_of
from node.install.system import InstallError
from node.subsystems.update import UpdateConfig

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
COMMAND_TIMEOUT = 1800


@dataclass
class Status:
    """The status file of one program's update, rewritten atomically at every step."""

    path: Path
    program: str
    data: dict[str, Any]

    def step(self, step: str, **more: Any) -> None:
        self.data.update(step=step, at=round(time.time(), 3), **more)
        self.data.setdefault("steps", [])
        if not self.data["steps"] or self.data["steps"][-1] != step:
            self.data["steps"].append(step)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.chmod(0o644)
        os.replace(tmp, self.path)

    def end(self, result: str, detail: str = "") -> int:
        self.step("finished", result=result, detail=detail)
        return 0 if result in ("done", "unchanged") else 1


def settings(config: Path) -> UpdateConfig:
    try:
        raw = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InstallError(f"{config}: {exc}") from exc
    return UpdateConfig.model_validate(raw.get("update", {}))


def _run(argv: list[str], *, cwd: Path | None = None) -> None:
    exe = shutil.which(argv[0]) or argv[0]
    env = {**os.environ, **APT_ENV}
    try:
        done = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            env=env,
            cwd=cwd,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise InstallError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()[-300:]}")


async def _restart_and_check(cfg: UpdateConfig, unit: str, check: Any) -> str:
    """ "" when the unit runs the new version `settle_s` after its restart, else what is wrong."""
    if unit:
        try:
            async with Systemd(cfg.systemd_bus) as sd:
                if (await sd.status(unit)).load_state == "loaded":
                    await sd.restart(unit)
                    await asyncio.sleep(cfg.settle_s)  # it must stay up, not merely start
                    if not (await sd.status(unit)).running:
                        return f"{unit} did not keep running"
        except SystemdError as exc:
            return str(exc)
    problem: str = check()
    return problem


def _apt(cfg: UpdateConfig, program: updates.Program, status: Status, backup_dir: Path) -> int:
    package = program.package
    policy = updates.apt_policy([package], cfg.apt_cache).get(package)
    if policy is None or policy.installed is None:
        return status.end("failed", f"{package} is not installed")
    old, new = policy.installed, policy.candidate
    if not updates.newer(new, old):
        return status.end("unchanged", f"{package} {old} is the newest")
    status.step("backup", **{"from": old, "to": new})
    backup_dir.mkdir(parents=True, exist_ok=True)
    saved: Path | None = None
    try:
        _run([cfg.apt_get, "download", f"{package}={old}"], cwd=backup_dir)
        found = sorted(backup_dir.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
        saved = found[-1] if found else None
    except InstallError:
        saved = None  # rolled back from the repository instead, while it still has that version
    status.step("installing", backup=str(saved or ""))
    try:
        _run([cfg.apt_get, "install", "-y", "--only-upgrade", f"{package}={new}"])
    except InstallError as exc:
        return status.end("failed", str(exc))

    def check() -> str:
        versions.forget()
        now = updates.apt_policy([package], cfg.apt_cache).get(package)
        return "" if now and now.installed == new else f"{package} is at {now.installed if now else '?'}"

    status.step("checking")
    problem = asyncio.run(_restart_and_check(cfg, program.unit, check))
    if not problem:
        return status.end("done", f"{package} {new}")
    status.step("rolling back", detail=problem)
    target = f"./{saved.name}" if saved else f"{package}={old}"
    try:
        _run([cfg.apt_get, "install", "-y", "--allow-downgrades", target], cwd=backup_dir)
    except InstallError as exc:
        return status.end("failed", f"{problem}; the rollback failed too: {exc}")
    asyncio.run(_restart_and_check(cfg, program.unit, lambda: ""))
    return status.end("rolled_back", f"{problem}: back to {old}")


def _installed_version(path: Path, name: str) -> str | None:
    if not path.is_file():
        return None
    try:
        done = subprocess.run(  # milo imports the whole node first: seconds on a busy Pi
            [str(path), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return versions.parse(done.stdout or done.stderr, prefix=name)


def _feed(cfg: UpdateConfig, program: updates.Program, status: Status, backup_dir: Path) -> int:
    if not cfg.feed_url:
        return status.end("failed", "no feed_url in [update] of the config")
    entry = updates.read_feed_blocking(cfg.feed_url).get(program.name)
    arch = ARCHES.get(platform.machine(), platform.machine())
    if entry is None or arch not in entry.files:
        return status.end("unchanged", f"the feed has no {program.name} for {arch}")
    target = Path(cfg.paths.get(program.name, program.install))
    old = _installed_version(target, program.name)
    if old is None:
        return status.end(
            "failed", f"{target} is not there or does not answer --version (milo fetch-binaries)"
        )
    if not updates.newer(entry.version, old):
        return status.end("unchanged", f"{program.name} {old} is the newest")
    file = entry.files[arch]
    pinned = Pinned(program.name, entry.version, arch, file.url, file.sha256, file.member, str(target))
    status.step("downloading", **{"from": old, "to": entry.version})
    binary = _download(pinned)
    status.step("backup")
    backup_dir.mkdir(parents=True, exist_ok=True)
    backup = backup_dir / f"{program.name}-{old}"
    shutil.copy2(target, backup)
    status.step("installing", backup=str(backup))
    _place(binary, target)

    def check() -> str:
        now = _installed_version(target, program.name)
        return "" if now == entry.version else f"{target} runs as {now or 'nothing'}, not {entry.version}"

    status.step("checking")
    problem = asyncio.run(_restart_and_check(cfg, program.unit, check))
    if not problem:
        return status.end("done", f"{program.name} {entry.version}")
    status.step("rolling back", detail=problem)
    _place(backup.read_bytes(), target)
    asyncio.run(_restart_and_check(cfg, program.unit, lambda: ""))
    return status.end("rolled_back", f"{problem}: back to {old}")


_FILES_OF_MILO = (
    "import importlib.metadata as m, json; d = m.distribution('milo'); "
    "print(json.dumps({'files': [str(d.locate_file(f)) for f in d.files or []], "
    "'direct_url': d.read_text('direct_url.json') or ''}))"
)


def _venv_python(prefix: Path, argv: list[str]) -> str:
    """Run the venv's own python (its pip, its metadata); its stdout, or InstallError."""
    try:
        done = subprocess.run(
            [str(prefix / "bin" / "python"), "-I", *argv],  # -I: nothing from the cwd or PYTHON*
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{prefix}/bin/python: {exc}") from exc
    if done.returncode != 0:
        raise InstallError(f"{' '.join(argv[:3])}: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


def _backup_milo(prefix: Path, into: Path) -> None:
    """Every file of the installed milo distribution (its RECORD), in a tar relative to the venv."""
    found = json.loads(_venv_python(prefix, ["-c", _FILES_OF_MILO]))
    direct = json.loads(found["direct_url"] or "{}")
    if isinstance(direct, dict) and (direct.get("dir_info") or {}).get("editable"):
        raise InstallError(f"{prefix}: milo is an editable install (a checkout): update it with git")
    import tarfile  # noqa: PLC0415

    tmp = into.with_name(f".{into.name}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for name in found["files"]:
            path = Path(os.path.normpath(name))
            if not path.is_file() or not path.is_relative_to(prefix):
                continue  # byte code pip lists but never wrote; nothing outside the venv is ours
            tar.add(path, arcname=str(path.relative_to(prefix)), recursive=False)
    os.replace(tmp, into)


def _restore_milo(prefix: Path, backup: Path) -> None:
    import tarfile  # noqa: PLC0415

    with contextlib.suppress(InstallError):  # a half-installed new version may not uninstall cleanly
        _venv_python(prefix, ["-m", "pip", "uninstall", "-q", "-y", "milo"])
    with tarfile.open(backup) as tar:
        tar.extractall(prefix, filter="tar")  # root's own backup: modes kept, no paths out of prefix


def _check_milo(target: Path, version: str, config: str) -> str:
    """ "" when the venv's milo is `version` and passes `milo run --check` with root's config."""
    now = _installed_version(target, "milo")
    if now != version:
        return f"{target} runs as {now or 'nothing'}, not {version}"
    try:
        done = subprocess.run(
            [str(target), "run", "--check", "--config", config],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{target} run --check: {exc}"
    if done.returncode != 0:
        return f"{target} run --check: {(done.stderr or done.stdout).strip()[-200:]}"
    return ""


def _milo(  # noqa: PLR0911 - an outcome per way it can end
    cfg: UpdateConfig, status: Status, backup_dir: Path, config: Path
) -> int:
    """The node itself: the feed's wheel pip-installed into its venv, the old files kept to go back to.

    The node is not restarted here: it restarts itself once it reads `done` (it knows whether
    systemd runs it), so a failed check never costs a running node.
    """
    if not cfg.feed_url:
        return status.end("failed", "no feed_url in [update] of the config")
    entry = updates.read_feed_blocking(cfg.feed_url).get("milo")
    arch = ARCHES.get(platform.machine(), platform.machine())
    file = None if entry is None else entry.files.get("any") or entry.files.get(arch)
    if entry is None or file is None:
        return status.end("unchanged", "the feed has no milo wheel")
    target = Path(cfg.paths.get("milo") or Path(sys.prefix) / "bin" / "milo")
    prefix = target.parent.parent
    old = _installed_version(target, "milo")
    if old is None:
        return status.end("failed", f"{target} is not there or does not answer --version")
    if not updates.newer(entry.version, old):
        return status.end("unchanged", f"milo {old} is the newest")
    wheel_name = file.url.rsplit("/", 1)[-1].split("?", 1)[0]
    if not wheel_name.endswith(".whl") or "/" in wheel_name:
        return status.end("failed", f"{file.url}: not a wheel")
    status.step("downloading", **{"from": old, "to": entry.version})
    with tempfile.TemporaryDirectory(prefix="milo-update-") as tmp:
        wheel = Path(tmp) / wheel_name
        try:
            with urllib_open(file.url) as answer, wheel.open("wb") as f:
                shutil.copyfileobj(answer, f)
        except OSError as exc:
            raise InstallError(f"{file.url}: {exc}") from exc
        if sha256_of(wheel) != file.sha256:
            return status.end("failed", f"{wheel_name}: not the sha256 the feed gives: refused")
        status.step("backup")
        backup_dir.mkdir(parents=True, exist_ok=True)
        backup = backup_dir / f"milo-{old}.tar"
        _backup_milo(prefix, backup)
        status.step("installing", backup=str(backup))
        try:
            _venv_python(prefix, ["-m", "pip", "install", "-q", str(wheel)])
            status.step("checking")
            problem = _check_milo(target, entry.version, str(config))
        except InstallError as exc:
            problem = str(exc)
    if not problem:
        return status.end("done", f"milo {entry.version}")
    status.step("rolling back", detail=problem)
    _restore_milo(prefix, backup)
    back = _installed_version(target, "milo")
    if back != old:
        return status.end("failed", f"{problem}; the rollback left {back or 'nothing'}, not {old}")
    return status.end("rolled_back", f"{problem}: back to {old}")


def _download(pinned: Pinned) -> bytes:
    """The binary of a feed entry, once its archive has the sha256 the feed gives."""
    with tempfile.TemporaryDirectory(prefix="milo-update-") as tmp:
        archive = Path(tmp) / pinned.filename
        try:
            with urllib_open(pinned.url) as answer, archive.open("wb") as f:
                shutil.copyfileobj(answer, f)
        except OSError as exc:
            raise InstallError(f"{pinned.url}: {exc}") from exc
        if sha256_of(archive) != pinned.sha256:
            raise InstallError(f"{pinned.filename}: not the sha256 the feed gives: refused")
        return _binary(pinned, archive)


def urllib_open(url: str) -> Any:
    import urllib.request  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    if urlsplit(url).scheme != "https" and urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise OSError("only https downloads (or loopback, for tests)")
    return urllib.request.urlopen(url, timeout=120)  # noqa: S310 - scheme checked above


def run(name: str, *, config: Path, status_dir: Path | None = None) -> int:
    cfg = settings(config)
    program = updates.PROGRAMS.get(name)
    if program is None or not program.installable:
        print(f"milo update-apply: {name!r} is not a program updates install", file=sys.stderr)
        return 2
    folder = status_dir or Path(cfg.status_dir)
    folder.mkdir(parents=True, exist_ok=True)
    status = Status(folder / f"{name}.json", name, {"program": name, "result": "running", "detail": ""})
    status.step("starting")
    backup_dir = Path(cfg.backup_dir)
    try:
        if program.name == "milo":
            return _milo(cfg, status, backup_dir, config)
        if program.package:
            return _apt(cfg, program, status, backup_dir)
        return _feed(cfg, program, status, backup_dir)
    except (InstallError, updates.UpdateCheckError, OSError) as exc:
        return status.end("failed", str(exc))
