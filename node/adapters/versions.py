"""The versions of the programs the node drives: their own --version output, or the package database."""

# One function per program, each returning the version or None (not installed, no answer). Results are
# cached for the life of the process (a program changes only with an update, which calls `forget()`),
# and `collect()` runs them in threads, so nothing here blocks the event loop.

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

TIMEOUT = 5.0
# Binaries built or fetched by hand go to /usr/local/bin, which a unit's PATH has but a shell may not.
EXTRA_PATH = ("/usr/local/bin", "/usr/bin", "/usr/sbin")
_VERSION = re.compile(r"\bv?(\d+\.\d+(?:\.\d+)?(?:[-+~][0-9A-Za-z.+~]+)?)")


def which(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    for folder in EXTRA_PATH:
        candidate = Path(folder) / program
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _output(argv: Sequence[str]) -> str | None:
    path = which(argv[0])
    if path is None:
        return None
    try:
        done = subprocess.run(
            [path, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip() or None


def parse(text: str | None, *, prefix: str = "") -> str | None:
    """The first version-like word of `text` (after `prefix` if given): "snapserver v0.26.0" -> 0.26.0."""
    if not text:
        return None
    if prefix and prefix in text:
        text = text.split(prefix, 1)[1]
    found = _VERSION.search(text)
    return found.group(1) if found else None


def package(name: str) -> str | None:
    """The installed version of a Debian package (dpkg-query), None when it is not installed."""
    if which("dpkg-query") is None:
        return None
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", name],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    status, _, version = done.stdout.partition("\t")
    return version.strip() or None if status.endswith("install ok installed") else None


def of_binary(path: str, name: str) -> str | None:
    """What the binary at `path` says with --version (not cached: a file an update just replaced)."""
    return parse(_output([path, "--version"]), prefix=name)


def of_milo(milo: str) -> str | None:
    """The milo a venv's bin/milo runs, from that venv's package database (its dist-info's METADATA).

    Read, not run: `milo --version` imports the whole node, seconds on a Pi, for one line.
    """
    prefix = Path(milo).parent.parent
    for metadata in sorted(prefix.glob("lib/python3*/site-packages/milo-*.dist-info/METADATA")):
        try:
            text = metadata.read_text(errors="replace")
        except OSError:
            continue
        found = re.search(r"^Version:\s*(\S+)", text, re.M)
        if found:
            return found.group(1)
    return None


def milo_checkout(milo: str | None = None) -> str | None:
    """The checkout that `milo` (a venv's bin/milo; None: this process's own) runs from, or None.

    A checkout is an editable install (`pip install -e`, its dist-info's direct_url.json says so) or
    source put on sys.path: no wheel can be installed over it, `git pull` updates it. Read, not run.
    """
    if milo is None:
        package = Path(__file__).resolve().parents[1]  # the node package this process imports
        if package.parent.name not in ("site-packages", "dist-packages"):
            return str(package.parent)
        folders = [package.parent]
    else:
        folders = sorted(Path(milo).parent.parent.glob("lib/python3*/site-packages"))
    for folder in folders:
        for direct in sorted(folder.glob("milo-*.dist-info/direct_url.json")):
            try:
                data = json.loads(direct.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and (data.get("dir_info") or {}).get("editable"):
                return str(data.get("url", "")).removeprefix("file://") or str(folder)
    return None


@functools.cache
def snapserver() -> str | None:
    return parse(_output(["snapserver", "--version"]), prefix="snapserver")


@functools.cache
def snapclient() -> str | None:
    return parse(_output(["snapclient", "--version"]), prefix="snapclient")


@functools.cache
def go_librespot() -> str | None:
    return parse(_output(["go-librespot", "--version"]), prefix="go-librespot")


@functools.cache
def roc_recv() -> str | None:
    return parse(_output(["roc-recv", "--version"]), prefix="roc-recv")


@functools.cache
def shairport_sync() -> str | None:
    # "3.3.8-libdaemon-OpenSSL-Avahi-ALSA-...": the release, not the list of what it was built with.
    text = _output(["shairport-sync", "-V"])
    return text.split("-", 1)[0] if text and _VERSION.match(text) else None


@functools.cache
def bluealsa() -> str | None:
    return parse(_output(["bluealsa", "--version"]))


@functools.cache
def bluez() -> str | None:
    return package("bluez")


@functools.cache
def libmpv() -> str | None:
    # libmpv runs inside the node: its package says which release it is.
    return package("libmpv2")


@functools.cache
def alsa_lib() -> str | None:
    return package("libasound2")


@functools.cache
def cage() -> str | None:
    return package("cage")


@functools.cache
def chromium() -> str | None:
    return package("chromium")


# Name shown in `info` -> how to learn it.
PROGRAMS: dict[str, Callable[[], str | None]] = {
    "libmpv": libmpv,
    "alsa-lib": alsa_lib,
    "snapserver": snapserver,
    "snapclient": snapclient,
    "go-librespot": go_librespot,
    "roc-recv": roc_recv,
    "shairport-sync": shairport_sync,
    "bluealsa": bluealsa,
    "bluez": bluez,
    "cage": cage,
    "chromium": chromium,
}


def forget() -> None:
    """Read every version again next time (after an update)."""
    for probe in PROGRAMS.values():
        cache_clear = getattr(probe, "cache_clear", None)
        if cache_clear is not None:
            cache_clear()


async def collect(names: Sequence[str] | None = None) -> dict[str, str | None]:
    """The version of each program (all of PROGRAMS by default), read in threads, at once."""
    chosen = list(PROGRAMS) if names is None else [n for n in names if n in PROGRAMS]
    found = await asyncio.gather(*(asyncio.to_thread(PROGRAMS[n]) for n in chosen))
    return dict(zip(chosen, found, strict=True))
