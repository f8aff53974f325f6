"""Persistence: atomic files, validation on load, corrupt files set aside and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.framework.store import Store, StoredFile
from tests.conftest import Mosquitto, NodeFactory
from tests.helpers import probe


def test_save_is_atomic_and_keeps_the_previous_copy(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save("volume", StoredFile(config={"step": 2}))
    store.save("volume", StoredFile(config={"step": 3}))
    assert json.loads(store.path("volume").read_text())["config"] == {"step": 3}
    assert json.loads((tmp_path / "volume.json.bak").read_text())["config"] == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.json", "volume.json.bak"]  # no temp left


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    result = Store(tmp_path).load("nothing")
    assert (result.source, result.problems, result.file) == ("defaults", [], StoredFile())


@pytest.mark.parametrize("content", [b"{not json", b'{"config": 5}', b"\x00\xff", b'{"version": 99}'])
def test_corrupt_file_is_moved_aside_and_backup_used(tmp_path: Path, content: bytes) -> None:
    store = Store(tmp_path)
    store.save("eq", StoredFile(config={"a": 1}))
    store.save("eq", StoredFile(config={"a": 2}))
    store.path("eq").write_bytes(content)
    result = store.load("eq")
    assert result.source == "backup"
    assert result.file.config == {"a": 1}
    assert any("corrupt" in p for p in result.problems)
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert aside[0].read_bytes() == content  # what was there is never destroyed
    # The good copy is back in place: the next load is clean.
    assert store.load("eq").problems == []


def test_corrupt_without_backup_uses_defaults(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.path("x").write_text("[1, 2")
    result = store.load("x")
    assert result.source == "defaults"
    assert result.file == StoredFile()


def test_validator_rejects_content_that_no_longer_fits(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save("x", StoredFile(config={"gone": 1}))

    def validate(stored: StoredFile) -> None:
        if "gone" in stored.config:
            raise ValueError("unknown key gone")

    result = store.load("x", validate)
    assert result.source == "defaults"
    assert "unknown key gone" in result.problems[0]


def test_interrupted_write_leaves_the_old_file(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.save("v", StoredFile(config={"k": 1}))
    # A crash after the temp file was written but before the rename: the real file is intact.
    (tmp_path / ".v.json.tmp").write_text('{"config": {"k": 2')
    assert store.load("v").file.config == {"k": 1}
    store.save("v", StoredFile(config={"k": 3}))
    assert store.load("v").file.config == {"k": 3}
    assert not (tmp_path / ".v.json.tmp").exists()


async def test_corrupt_store_is_reported_on_error_and_in_info(
    run_node: NodeFactory, mosquitto: Mosquitto, tmp_path: Path, node_id: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "counter.json").write_text('{"config": {"step": 3}, "data": {"value": "many"}}')
    async with probe(mosquitto.port) as p:
        # On mosquitto the error event can be watched from before the node starts.
        await p.subscribe(f"milo/{node_id}/error", f"milo/{node_id}/info", f"milo/{node_id}/counter")
        async with run_node("mosquitto", data_dir=data) as r:
            err = (await p.wait_for(f"{r.base}/error")).json()
            assert err["code"] == "corrupt_store"
            assert "counter.json is corrupt" in err["error"]
            info = (await p.wait_for(f"{r.base}/info", lambda g: bool(g.json()["notices"]))).json()
            assert "counter.json is corrupt" in info["notices"][0]
            # Defaults were used, and the node runs.
            assert (await p.wait_for(f"{r.base}/counter")).json()["value"] == 0
    assert [p.name for p in data.iterdir() if ".corrupt-" in p.name]
    # The defaults are not written back until someone changes something: nothing is lost by starting.
    assert not (data / "counter.json").exists()


async def test_a_stored_config_of_the_wrong_type_is_set_aside_and_reported(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    Store(data).save("counter", StoredFile(config={"enabled": "maybe"}))
    async with run_node(data_dir=data) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info", f"{r.base}/counter")
        info = await p.wait_for(
            f"{r.base}/info", lambda g: g.json()["subsystems"]["counter"]["status"] == "running"
        )
        assert any("counter.json is corrupt" in n and "enabled" in n for n in info.json()["notices"])
        assert "value" in (await p.wait_for(f"{r.base}/counter")).json()
    assert list(data.glob("counter.json.corrupt-*"))


async def test_an_invalid_config_file_section_is_reported_not_only_left_down(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    async with run_node(sections={"counter": {"enabled": "maybe"}}) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info", f"{r.base}/counter")
        info = await p.wait_for(
            f"{r.base}/info", lambda g: g.json()["subsystems"]["counter"]["status"] == "config_error"
        )
        assert any("[counter] is invalid" in n for n in info.json()["notices"])
        state = await p.wait_for(f"{r.base}/counter")
        assert state.json()["status"] == "config_error"
