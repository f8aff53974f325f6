"""`milo fetch-binaries` against local files: placed only when the sha256 is the pinned one."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from node.cli import main
from node.install.binaries import Pinned, load

BINARY = b"#!/bin/sh\necho 'go-librespot v0.9.0'\n"


def archive(folder: Path, members: dict[str, bytes]) -> Path:
    path = folder / "go-librespot_linux_arm64.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def pinned_list(folder: Path, sha256: str) -> Path:
    path = folder / "binaries.toml"
    path.write_text(
        "[[binary]]\n"
        'name = "go-librespot"\nversion = "0.9.0"\narch = "arm64"\n'
        'url = "https://example.invalid/v0.9.0/go-librespot_linux_arm64.tar.gz"\n'
        f'sha256 = "{sha256}"\nmember = "go-librespot"\ninstall = "/usr/local/bin/go-librespot"\n'
    )
    return path


def test_a_file_with_the_pinned_sum_is_placed_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    made = archive(downloads, {"LICENSE": b"GPL", "go-librespot": BINARY})
    listed = pinned_list(tmp_path, hashlib.sha256(made.read_bytes()).hexdigest())
    root = tmp_path / "root"
    args = ["fetch-binaries", "--root", str(root), "--list", str(listed), "--arch", "arm64", "--from"]
    assert main([*args, str(downloads)]) == 0
    placed = root / "usr/local/bin/go-librespot"
    assert placed.read_bytes() == BINARY
    assert placed.stat().st_mode & 0o777 == 0o755
    assert "installed  go-librespot 0.9.0 (arm64)" in capsys.readouterr().out
    assert main([*args, str(made)]) == 0
    assert "unchanged  go-librespot" in capsys.readouterr().out


def test_a_file_with_another_sum_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = archive(tmp_path, {"go-librespot": BINARY})
    listed = pinned_list(tmp_path, "0" * 64)
    root = tmp_path / "root"
    assert (
        main(
            [
                "fetch-binaries",
                "--root",
                str(root),
                "--list",
                str(listed),
                "--arch",
                "arm64",
                "--from",
                str(made),
            ]
        )
        == 1
    )
    assert "is not the pinned" in capsys.readouterr().out
    assert not (root / "usr/local/bin/go-librespot").exists()


def test_only_the_named_regular_file_is_taken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = archive(tmp_path, {"../go-librespot": BINARY, "bin/go-librespot": BINARY})
    listed = pinned_list(tmp_path, hashlib.sha256(made.read_bytes()).hexdigest())
    root = tmp_path / "root"
    assert (
        main(
            [
                "fetch-binaries",
                "--root",
                str(root),
                "--list",
                str(listed),
                "--arch",
                "arm64",
                "--from",
                str(made),
            ]
        )
        == 1
    )
    assert "no go-librespot in it" in capsys.readouterr().out
    assert not (tmp_path / "go-librespot").exists() and not (root / "usr").exists()


def test_the_shipped_list_pins_go_librespot_and_refuses_what_it_cannot(
    capsys: pytest.CaptureFixture[str],
) -> None:
    entries = load()
    go = [p for p in entries if p.name == "go-librespot"]
    assert {p.arch for p in go} == {"arm64", "amd64"}
    assert all(len(p.sha256) == 64 and p.url.startswith("https://") and p.member for p in go)
    roc = next(p for p in entries if p.name == "roc-recv")
    assert roc.sha256 == ""  # built from source: nothing to pin a download to
    assert main(["fetch-binaries", "roc-recv", "--arch", "arm64", "--dry-run", "--from", "/nonexistent"]) == 1
    assert "not pinned" in capsys.readouterr().out
    assert isinstance(roc, Pinned)
