"""Where newer versions come from: the Debian package candidate (apt-cache policy) or a release feed."""

# The programs an update may replace, each from one place: a Debian package (its candidate is what
# `apt-get install` would take; apt-cache reads the local lists, so it answers offline too) or the
# release feed, a JSON document at a configurable URL:
#   {"go-librespot": {"version": "0.9.1", "files": {"arm64": {"url": ..., "sha256": ..., "member": ...}}}}
# milo's entry names one wheel for every machine: {"milo": {"version": ..., "files": {"any": {...}}}}.
# Nothing here changes the machine: installing is the privileged step's (node/install/apply.py).

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from node.adapters.http_client import HttpClientError, http_request
from node.framework.errors import DaemonError

TIMEOUT = 20.0
FEED_MAX_BYTES = 256 * 1024


class UpdateCheckError(DaemonError):
    """A place to learn of new versions could not be read (no network, a broken feed)."""


@dataclass(frozen=True)
class Program:
    name: str
    package: str = ""  # the Debian package it comes in; "" = from the release feed
    unit: str = ""  # restarted to run the new version, then checked ("" = none)
    install: str = ""  # the binary a feed update replaces
    installable: bool = True  # False: reported, not installed from here


PROGRAMS: dict[str, Program] = {
    p.name: p
    for p in (
        # Its install is its own venv's bin/milo: a wheel from the feed, pip-installed into that venv.
        Program("milo", unit="milo.service"),
        Program("go-librespot", unit="go-librespot.service", install="/usr/local/bin/go-librespot"),
        Program("snapserver", package="snapserver", unit="snapserver.service"),
        Program("snapclient", package="snapclient", unit="snapclient.service"),
        Program("shairport-sync", package="shairport-sync", unit="shairport-sync.service"),
        Program("bluealsa", package="bluez-alsa-utils", unit="bluealsa.service"),
        Program("libmpv", package="libmpv2", unit="milo.service"),
    )
}


@dataclass(frozen=True)
class Policy:
    installed: str | None
    candidate: str | None


_FIELD = re.compile(r"^\s+(Installed|Candidate):\s*(\S+)", re.M)


def parse_policy(text: str) -> dict[str, Policy]:
    """`apt-cache policy a b` output -> package -> (installed, candidate); "(none)" is None."""
    found: dict[str, Policy] = {}
    for block in re.split(r"^(?=\S[^\n]*:\s*$)", text, flags=re.M):
        head, _, body = block.partition("\n")
        name = head.strip().rstrip(":")
        if not name:
            continue
        fields = {k: (None if v == "(none)" else v) for k, v in _FIELD.findall(body)}
        found[name] = Policy(fields.get("Installed"), fields.get("Candidate"))
    return found


def apt_policy(packages: Sequence[str], apt_cache: str = "apt-cache") -> dict[str, Policy]:
    if not packages:
        return {}
    exe = shutil.which(apt_cache)
    if exe is None:
        raise UpdateCheckError(f"{apt_cache} not found: not a Debian system")
    try:
        done = subprocess.run(
            [exe, "policy", *packages], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpdateCheckError(f"{apt_cache} policy: {exc}") from exc
    return parse_policy(done.stdout)


def _key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+~-]", version)]


def newer(candidate: str | None, installed: str | None, *, dpkg: str = "dpkg") -> bool:
    """Whether `candidate` is a later version than `installed` (dpkg's order when dpkg is there)."""
    if not candidate or not installed or candidate == installed:
        return False
    exe = shutil.which(dpkg)
    if exe is not None:
        argv = [exe, "--compare-versions", candidate, "gt", installed]
        try:
            return subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            pass
    return _key(candidate) > _key(installed)


class FeedFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str = Field(max_length=2000)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    member: str = Field(default="", max_length=200)


class FeedEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str = Field(max_length=100)
    files: dict[str, FeedFile] = Field(default_factory=dict)  # by architecture (arm64, amd64)


def parse_feed(raw: object) -> dict[str, FeedEntry]:
    if not isinstance(raw, Mapping):
        raise UpdateCheckError("the release feed is not a JSON object")
    found: dict[str, FeedEntry] = {}
    for name, entry in raw.items():
        try:
            found[str(name)] = FeedEntry.model_validate(entry)
        except ValidationError as exc:
            raise UpdateCheckError(f"release feed, {name}: {exc.errors()[0]['msg']}") from exc
    return found


async def read_feed(url: str) -> dict[str, FeedEntry]:
    """The release feed at `url` (the node's check, on its event loop)."""
    try:
        answer = await http_request("GET", url, timeout=TIMEOUT, max_bytes=FEED_MAX_BYTES, max_redirects=3)
    except HttpClientError as exc:
        raise UpdateCheckError(f"release feed {url}: {exc}") from exc
    if answer.status != 200:
        raise UpdateCheckError(f"release feed {url}: HTTP {answer.status}")
    try:
        return parse_feed(answer.json())
    except HttpClientError as exc:
        raise UpdateCheckError(str(exc)) from exc


def read_feed_blocking(url: str) -> dict[str, FeedEntry]:
    """The same, for the privileged step (no event loop of its own): urllib, https or loopback only."""
    import urllib.request  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    if urlsplit(url).scheme != "https" and urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise UpdateCheckError(f"release feed {url}: only https (or loopback, for tests)")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310 - scheme checked above
            return parse_feed(json.loads(answer.read(FEED_MAX_BYTES)))
    except (OSError, ValueError) as exc:
        raise UpdateCheckError(f"release feed {url}: {exc}") from exc
