"""Versions read from the programs themselves (--version) or dpkg, off the event loop; `info` lists them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from node.adapters import versions
from node.subsystems.info import Info
from tests.conftest import NodeFactory
from tests.helpers import probe


@pytest.mark.parametrize(
    ("text", "prefix", "expected"),
    [
        ("snapserver v0.26.0\nCopyright (C) 2014-2021 BadAix", "snapserver", "0.26.0"),
        ("go-librespot v0.7.4 (linux/arm64)", "go-librespot", "0.7.4"),
        ("roc-recv 0.4.0", "roc-recv", "0.4.0"),
        ("v4.0.0", "", "4.0.0"),
        ("no version here", "", None),
        (None, "", None),
    ],
)
def test_parse(text: str | None, prefix: str, expected: str | None) -> None:
    assert versions.parse(text, prefix=prefix) == expected


def test_programs_installed_here_answer_for_themselves() -> None:
    versions.forget()
    # Debian 12's: the tests' machine has them (scripts/system-deps.sh), a Pi has the same packages.
    if shutil.which("snapserver"):
        assert versions.snapserver() == "0.26.0"
    if shutil.which("bluealsa"):
        assert versions.bluealsa() == "4.0.0"
    if shutil.which("shairport-sync"):
        assert versions.shairport_sync() == "3.3.8"  # not its list of build options
    assert versions.libmpv() == versions.package("libmpv2") and versions.libmpv()
    assert versions.package("no-such-package-here") is None


def test_a_program_found_on_path_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "roc-recv"
    fake.write_text("#!/bin/sh\necho 'roc-recv 0.4.0'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(versions, "EXTRA_PATH", ())
    versions.forget()
    assert versions.roc_recv() == "0.4.0"
    fake.write_text("#!/bin/sh\necho 'roc-recv 0.5.0'\n")
    assert versions.roc_recv() == "0.4.0"  # cached until an update says forget()
    versions.forget()
    assert versions.roc_recv() == "0.5.0"
    fake.unlink()
    versions.forget()
    assert versions.roc_recv() is None
    versions.forget()


async def test_collect_runs_in_threads_and_names_only_known_programs() -> None:
    found = await versions.collect(["libmpv", "not-a-program"])
    assert list(found) == ["libmpv"]
    assert set(await versions.collect()) == set(versions.PROGRAMS)


async def test_info_lists_the_versions(run_node: NodeFactory) -> None:
    async with run_node(subsystems=(Info,)) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info")
        got = await p.wait_for(f"{r.base}/info", lambda g: bool(g.json()["versions"]))
    listed = got.json()["versions"]
    assert set(listed) == set(versions.PROGRAMS)
    assert listed["libmpv"] == versions.package("libmpv2")
