"""The embedded broker: retained store across restarts, size limit, the amqtt bug patches, WebSocket, HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError

from broker import EmbeddedBroker
from harness.rawmqtt import connect_packet, mqtt_string, remaining_length
from node.config import MqttOptions
from tests.conftest import NodeFactory
from tests.helpers import probe


async def raw_connect(
    port: int, client_id: str, keepalive: int = 60, will: tuple[str, bytes] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect_packet(client_id, keepalive, will))
    await writer.drain()
    connack = await asyncio.wait_for(reader.readexactly(4), 5)
    assert connack[0] == 0x20
    assert connack[3] == 0, f"refused: {connack!r}"
    return reader, writer


async def test_retained_messages_survive_a_restart(run_node: NodeFactory, tmp_path: Path) -> None:
    data = tmp_path / "d"
    async with run_node(data_dir=data) as r, probe(r.port) as p:
        await p.subscribe("house/#")
        await p.publish("house/lamp", "on", retain=True)
        await p.publish("house/gone", "x", retain=True)
        await p.wait_for("house/gone")
        await p.publish("house/gone", b"", retain=True)  # cleared: must stay cleared
        await p.wait_for("house/gone", lambda g: g.payload == b"")
        await p.publish("house/bin", bytes(range(256)), retain=True)
        await p.wait_for("house/bin")
    async with run_node(data_dir=data) as r, probe(r.port) as p:
        await p.subscribe("house/#", f"{r.base}/status")
        await p.wait_for(f"{r.base}/status")
        lamp = await p.wait_for("house/lamp")
        assert (lamp.text, lamp.retain) == ("on", True)
        assert (await p.wait_for("house/bin")).payload == bytes(range(256))
        await p.quiet("house/gone", after=0, probe_topic="test/flush")


async def test_stale_online_is_never_served_after_a_kill(run_node: NodeFactory, tmp_path: Path) -> None:
    # A store written while the node was online (as a SIGKILL leaves it) must not announce it online
    # before the node is: the store forces `offline` before listeners open.
    data = tmp_path / "d"
    async with run_node(data_dir=data) as r:
        assert r.node.broker is not None
        r.node.broker.flush()  # the store now holds status=online, as after a kill
        base = r.base
    store = (data / "broker" / "retained.json").read_text()
    assert base + "/status" in store
    async with run_node(data_dir=data) as r, probe(r.port) as p:
        await p.subscribe(f"{base}/status")
        assert (await p.wait_for(f"{base}/status")).text == "online"


async def test_oversized_packet_closes_only_that_connection(run_node: NodeFactory) -> None:
    async with run_node(mqtt=MqttOptions(max_payload=4096)) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/status", "big/#")
        await p.wait_for(f"{r.base}/status")
        reader, writer = await raw_connect(r.port, "big-sender")
        body = mqtt_string("big/x") + b"z" * 100_000
        # Announce the whole packet but send only part: the limit acts on the header, before the body.
        writer.write(bytes([0x30]) + remaining_length(len(body)) + body[:1000])
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the broker
        writer.close()
        # Within the limit is fine, and the others were never disturbed.
        await p.publish("big/ok", b"y" * 3000)
        assert len((await p.wait_for("big/ok")).payload) == 3000


async def test_no_unsolicited_retained_messages_on_connect(run_node: NodeFactory) -> None:
    async with run_node() as r, probe(r.port) as watcher:
        await watcher.subscribe(f"{r.base}/#")  # somebody holds a wide filter
        await watcher.wait_for(f"{r.base}/status")
        async with probe(r.port) as quiet:
            # Subscribed to nothing but a flush topic: B1 made amqtt replay every retained message.
            await quiet.quiet(f"{r.base}/status", after=0, probe_topic="test/flush")
            assert [g.topic for g in quiet.seen] == ["test/flush"]
            await quiet.subscribe(f"{r.base}/status")
            await quiet.wait_for(f"{r.base}/status")
            assert len(quiet.on(f"{r.base}/status")) == 1  # and exactly once, not duplicated


async def test_silent_client_is_dropped_and_its_will_sent(run_node: NodeFactory) -> None:
    async with run_node(mqtt=MqttOptions(keepalive_grace_s=1)) as r, probe(r.port) as p:
        await p.subscribe("wills/#")
        _, writer = await raw_connect(r.port, "silent", keepalive=1, will=("wills/silent", b"gone"))
        # It never sends PINGREQ: keep-alive 1 s x 1.5 + 1 s grace, then the will (B2).
        will = await p.wait_for("wills/silent", timeout=8)
        assert will.text == "gone"
        writer.close()


async def test_mqtt_over_websocket_on_the_http_port(run_node: NodeFactory) -> None:
    async with run_node() as r:
        http_port = r.node.http_port
        assert http_port is not None
        async with probe(http_port, transport="websockets") as ws, probe(r.port) as tcp:
            await ws.subscribe(f"{r.base}/status", f"{r.base}/counter")
            assert (await ws.wait_for(f"{r.base}/status")).text == "online"
            await ws.publish(f"{r.base}/counter/set", "4")
            await ws.wait_for(f"{r.base}/counter", lambda g: g.json()["value"] == 4)
            await tcp.subscribe(f"{r.base}/counter")
            assert (await tcp.wait_for(f"{r.base}/counter")).json()["value"] == 4


async def test_mqtt_over_websocket_proxied_to_an_external_broker(run_node: NodeFactory) -> None:
    async with run_node("mosquitto") as r:
        assert r.node.http_port is not None
        async with probe(r.node.http_port, transport="websockets") as ws:
            await ws.subscribe(f"{r.base}/status")
            assert (await ws.wait_for(f"{r.base}/status")).text == "online"


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/index.html", 200),
        ("/nope.js", 404),
        ("/../pyproject.toml", 404),
        ("/%2e%2e/README.md", 404),
    ],
)
async def test_http_serves_the_ui_and_nothing_else(run_node: NodeFactory, path: str, status: int) -> None:
    async with run_node() as r:
        got = await asyncio.to_thread(_get, f"http://127.0.0.1:{r.node.http_port}{path}")
        assert got[0] == status
        if status == 200:
            assert got[2].startswith("text/html")
            assert b"<html" in got[1]


async def test_http_mqtt_path_without_upgrade(run_node: NodeFactory) -> None:
    async with run_node() as r:
        code, _, _ = await asyncio.to_thread(_get, f"http://127.0.0.1:{r.node.http_port}/mqtt")
        assert code == 426


async def test_mqtt5_client_gets_a_clean_refusal(run_node: NodeFactory) -> None:
    async with run_node() as r:
        client = aiomqtt.Client("127.0.0.1", r.port, protocol=aiomqtt.ProtocolVersion.V5, timeout=5)
        with pytest.raises(MqttConnectError) as refused:
            async with client:
                pass
        assert refused.value.rc in (1, 132)  # unacceptable protocol version, not a silent hang
        async with probe(r.port) as p:  # and it cost no connection slot
            await p.subscribe(f"{r.base}/status")
            await p.wait_for(f"{r.base}/status")


async def test_oversized_connect_is_refused(run_node: NodeFactory) -> None:
    async with run_node(mqtt=MqttOptions(max_payload=4096)) as r:
        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        packet = connect_packet("huge", 60, will=("w", b"x" * 50_000))
        writer.write(packet[:2000])
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


GOOD = {"keep/a": ["b24=", 1], "keep/b": ["", 0]}


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        pytest.param(b"[]", [], id="list"),
        pytest.param(b"null", [], id="null"),
        pytest.param(b'"text"', [], id="string"),
        pytest.param(b'{"keep/a": ["b24=", 1', [], id="truncated"),
        pytest.param(b"[" * 10_000 + b"]" * 10_000, [], id="nested-deep"),
        pytest.param({**GOOD, "bad/qos": ["eA==", 5]}, ["keep/a"], id="bad-qos"),
        pytest.param({**GOOD, "bad/qos": ["eA==", True]}, ["keep/a"], id="bool-qos"),
        pytest.param({**GOOD, "bad/#": ["eA==", 1], "": ["eA==", 1]}, ["keep/a"], id="bad-topic"),
        pytest.param({**GOOD, "bad/shape": "eA=="}, ["keep/a"], id="bad-entry"),
        pytest.param({**GOOD, "bad/b64": [7, 1], "bad/b64b": ["@@", 1]}, ["keep/a"], id="bad-payload"),
    ],
)
async def test_a_malformed_retained_store_is_set_aside_reported_and_its_good_entries_kept(
    run_node: NodeFactory, tmp_path: Path, content: bytes | dict[str, Any], kept: list[str]
) -> None:
    data = tmp_path / "d"
    store = data / "broker" / "retained.json"
    store.parent.mkdir(parents=True)
    store.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    async with run_node(data_dir=data) as r, probe(r.port) as p:
        # Every subscription works (a bad qos broke each matching SUBSCRIBE before).
        await p.subscribe(f"{r.base}/info", "keep/#", "bad/#")
        info = (await p.wait_for(f"{r.base}/info", lambda g: bool(g.json()["notices"]))).json()
        assert any("broker: retained.json is corrupt" in n for n in info["notices"]), info["notices"]
        for topic in kept:
            assert (await p.wait_for(topic)).retain
        await p.quiet("bad/qos", after=0, probe_topic="test/flush")
        assert [g.topic for g in p.seen if g.topic.startswith(("keep/", "bad/"))] == kept
        # And persistence goes on: a new retained message is saved.
        await p.publish("keep/new", "n", retain=True)
        await p.wait_for("keep/new")
    aside = list(store.parent.glob("retained.json.corrupt-*"))
    assert len(aside) == 1
    saved = json.loads(store.read_text())
    assert set(saved) >= {*kept, "keep/new"}
    assert not set(saved) & {"bad/qos", "bad/#", "", "bad/shape", "bad/b64", "bad/b64b"}
    # The next start finds nothing wrong.
    async with run_node(data_dir=data) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info")
        info = (await p.wait_for(f"{r.base}/info")).json()
        assert not any("retained.json" in n for n in info["notices"])


async def test_a_malformed_retained_store_is_reported_on_error(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The record goes out at start, before any network client can be connected: watched where the
    # node hands it to the (real) broker.
    data = tmp_path / "d"
    store = data / "broker" / "retained.json"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"null")
    published: list[tuple[str, bytes]] = []
    original = EmbeddedBroker.publish

    async def publish(self: EmbeddedBroker, topic: str, payload: bytes, **kw: Any) -> None:
        published.append((topic, payload))
        await original(self, topic, payload, **kw)

    monkeypatch.setattr(EmbeddedBroker, "publish", publish)
    async with run_node(data_dir=data) as r:
        errors = [json.loads(p) for t, p in published if t == f"{r.base}/error"]
        assert [e["code"] for e in errors] == ["corrupt_store"]
        assert "retained.json is corrupt: not an object of topics but NoneType" in errors[0]["error"]
