"""Versions read from the programs themselves (--version) or dpkg, off the event loop; `info` lists them."""

from __future__ import annotations

import json
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


def _venv(tmp_path: Path, direct_url: dict[str, object] | None) -> str:
    info = tmp_path / "venv/lib/python3.11/site-packages/milo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: milo\nVersion: 1.0\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    return str(tmp_path / "venv/bin/milo")


@pytest.mark.parametrize(
    ("direct_url", "checkout"),
    [
        (None, None),  # from an index
        ({"url": "file:///tmp/milo-1.0-py3-none-any.whl", "archive_info": {}}, None),  # a wheel file
        ({"url": "file:///src/milo", "dir_info": {"editable": True}}, "/src/milo"),  # pip install -e
        ({"url": "file:///src/milo", "dir_info": {}}, None),  # built from a folder, copied in
    ],
)
def test_a_checkout_is_told_from_an_installed_milo(
    tmp_path: Path, direct_url: dict[str, object] | None, checkout: str | None
) -> None:
    assert versions.milo_checkout(_venv(tmp_path, direct_url)) == checkout


def test_this_process_runs_from_this_checkout() -> None:
    assert versions.milo_checkout() == str(Path(__file__).resolve().parents[2])
