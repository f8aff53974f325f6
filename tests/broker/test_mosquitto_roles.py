"""`milo broker-config` against a real mosquitto: its password and ACL files give milo's roles there."""

from __future__ import annotations

import getpass
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.net import free_port
from node import cli
from node.app import Node
from node.config import NodeConfig
from node.framework.users import Users
from node.subsystems.info import Info
from tests.broker.test_auth import connack, connect_packet
from tests.conftest import FAST, launch_mosquitto
from tests.fakes.counter import Counter
from tests.helpers import probe


@pytest.fixture
def locked_mosquitto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, Path]]:
    data = tmp_path / "data"
    users = Users(data)
    users.add("speaker", "node", "node-pw")
    users.add("alice", "control", "alice-pw")
    users.add("bob", "read", "bob-pw")
    out = tmp_path / "mosquitto"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["broker-config", "--out", str(out), "--data-dir", str(data)]) == 0
    port = free_port()
    conf = tmp_path / "test.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        # As root, mosquitto would drop to its own user and could not read the 0600 files.
        f"user {getpass.getuser()}\n"
        "persistence false\nlog_dest stderr\nlog_type all\n" + (out / "milo.conf").read_text()
    )
    proc = launch_mosquitto(conf)
    yield port, data
    proc.terminate()
    proc.wait(10)


async def test_roles_on_mosquitto(locked_mosquitto: tuple[int, Path], node_id: str, tmp_path: Path) -> None:
    port, data = locked_mosquitto
    assert await connack(port, connect_packet("anon")) == 5  # anonymous refused
    assert await connack(port, connect_packet("wrong", "alice", "nope")) == 5  # mosquitto says 5 for both
    config = NodeConfig(
        node_id=node_id,
        data_dir=data,
        bind="127.0.0.1",
        mqtt_port=0,
        http_port=0,
        broker=f"mqtt://speaker:node-pw@127.0.0.1:{port}",
    )
    node = Node(config, (Info, Counter), backoff=FAST)
    await node.start()
    try:
        base = node.topics.base
        state = f"{base}/counter"
        async with (
            probe(port, username="alice", password="alice-pw") as alice,
            probe(port, username="bob", password="bob-pw") as bob,
        ):
            # The node's own user published its state, retained: a read user sees it.
            await bob.subscribe(state)
            await bob.wait_for(state, lambda g: g.retain and g.json()["value"] == 0)
            await alice.subscribe(state)
            await alice.publish(f"{state}/set", "4")
            await bob.wait_for(state, lambda g: g.json()["value"] == 4)
            # The read user's command never reaches the node: mosquitto drops it.
            await bob.publish(f"{state}/set", "9")
            mark = bob.mark()
            await alice.publish(f"{state}/get", "")
            got = await bob.wait_for(state, after=mark)
            assert got.json()["value"] == 4
            # Nor may a control user forge the state itself.
            await alice.publish(state, b'{"value": 77, "label": "forged"}', retain=True)
            mark = bob.mark()
            await alice.publish(f"{state}/get", "")
            assert (await bob.wait_for(state, after=mark)).json()["value"] == 4
            assert all(g.json().get("label") != "forged" for g in bob.seen if g.payload)
    finally:
        await node.stop()
