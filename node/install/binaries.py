"""`milo fetch-binaries`: daemons no registry has (go-librespot, roc-recv), checked against a pinned list."""

# install/binaries.toml pins each release file by URL, version, architecture and sha256. A file is
# downloaded (or taken from --from, a file or a folder of downloads), its sum compared, and only then
# is the one binary it holds written, atomically, to where the unit templates run it. A file whose sum
# differs, or an entry with no sum yet, is refused and nothing is installed.

from __future__ import annotations

import hashlib
import os
import platform
import sys
import tarfile
import tempfile
import tomllib
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from node.install.system import InstallError
from node.resources import data_dir

MAX_BYTES = 128 * 1024 * 1024  # a release archive is ~10 MB; a bigger answer is not the file
DOWNLOAD_TIMEOUT = 120
ARCHES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "amd64": "amd64"}


@dataclass(frozen=True)
class Pinned:
    name: str
    version: str
    arch: str
    url: str
    sha256: str
    member: str
    install: str
    source: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def load(path: Path | None = None) -> list[Pinned]:
    path = path or data_dir("install") / "binaries.toml"
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InstallError(f"pinned list {path}: {exc}") from exc
    try:
        return [Pinned(**{k: str(v) for k, v in entry.items()}) for entry in raw.get("binary", [])]
    except TypeError as exc:
        raise InstallError(f"pinned list {path}: {exc}") from exc


def machine_arch() -> str:
    machine = platform.machine()
    return ARCHES.get(machine, machine)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, into: Path) -> Path:
    """The release file, at most MAX_BYTES; only https."""
    if not url.startswith("https://"):
        raise InstallError(f"{url}: only https downloads")
    target = into / url.rsplit("/", 1)[-1]
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as answer, target.open("wb") as f:  # noqa: S310
            size = 0
            while block := answer.read(1 << 20):
                size += len(block)
                if size > MAX_BYTES:
                    raise InstallError(f"{url}: larger than {MAX_BYTES >> 20} MB, refused")
                f.write(block)
    except OSError as exc:
        raise InstallError(f"{url}: {exc} (no network? download it elsewhere and give --from)") from exc
    return target


def _binary(pinned: Pinned, archive: Path) -> bytes:
    """The one file the pinned entry names, read from the (already checked) archive."""
    if not pinned.member or not archive.name.endswith((".tar.gz", ".tgz")):
        return archive.read_bytes()
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar.getmembers():
            # Only a regular file by that exact name: no links, no paths out of the archive.
            if info.isfile() and info.name.removeprefix("./") == pinned.member:
                f = tar.extractfile(info)
                if f is not None:
                    return f.read()
    raise InstallError(f"{archive.name}: no {pinned.member} in it")


def _place(binary: bytes, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.milo-tmp")
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    os.replace(tmp, target)


def fetch(pinned: Pinned, *, source: Path | None, root: Path, dry_run: bool) -> str:
    """Check and place one binary; what was done, in a word: installed, unchanged, verified."""
    if len(pinned.sha256) != 64:
        raise InstallError(f"{pinned.name} {pinned.version} ({pinned.arch}): not pinned ({pinned.source})")
    with tempfile.TemporaryDirectory(prefix="milo-fetch-") as tmp:
        if source is None:
            archive = download(pinned.url, Path(tmp))
        else:
            archive = source / pinned.filename if source.is_dir() else source
            if not archive.is_file():
                raise InstallError(f"{archive}: not there (expected {pinned.filename})")
        found = sha256_of(archive)
        if found != pinned.sha256:
            raise InstallError(
                f"{archive.name}: sha256 {found} is not the pinned {pinned.sha256}: refused, nothing placed"
            )
        binary = _binary(pinned, archive)
    target = root / pinned.install.lstrip("/")
    if target.is_file() and target.read_bytes() == binary:
        return "unchanged"
    if dry_run:
        return "verified"
    _place(binary, target)
    return "installed"


def main(
    *,
    names: Sequence[str],
    source: Path | None,
    pinned: Path | None,
    arch: str | None,
    root: Path | None,
    dry_run: bool,
) -> int:
    arch = arch or machine_arch()
    entries = [p for p in load(pinned) if p.arch == arch and (not names or p.name in names)]
    unknown = sorted(set(names) - {p.name for p in entries})
    if unknown:
        raise InstallError(f"nothing pinned for {', '.join(unknown)} on {arch}")
    if source is not None and not source.is_dir() and len(entries) != 1:
        raise InstallError(
            "--from a single file: name the one binary it is (milo fetch-binaries go-librespot)"
        )
    if root is None and not dry_run and os.geteuid() != 0:
        raise InstallError(
            f"must run as root to write {', '.join(p.install for p in entries)} (or --dry-run)"
        )
    failed = installed = 0
    for entry in entries:
        try:
            done = fetch(entry, source=source, root=root or Path("/"), dry_run=dry_run)
        except InstallError as exc:
            print(f"{'refused':>10}  {entry.name} {entry.version}: {exc}", file=sys.stdout)
            failed += 1
            continue
        installed += done == "installed"
        print(f"{done:>10}  {entry.name} {entry.version} ({entry.arch}) -> {entry.install}", file=sys.stdout)
    if failed:
        print(f"{failed} refused: see above", file=sys.stdout)
    if installed:
        print("next: milo install (again) enables their units", file=sys.stdout)
    return 1 if failed else 0
