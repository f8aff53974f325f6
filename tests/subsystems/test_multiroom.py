"""The multiroom subsystem against the real snapserver 0.26 and real snapclients, on loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.alsa_sinks import sink_config, sinks_dir
from harness.snapcast import Controller, Ports, multiroom_section, snapclients
from node.framework.subsystem import Subsystem
from node.subsystems.info import Info
from node.subsystems.multiroom import Multiroom
from node.subsystems.routing import Routing
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, expect_errors, probe

pytestmark = pytest.mark.timeout(60)


def client(state: dict[str, Any], cid: str) -> dict[str, Any] | None:
    for c in state["clients"]:
        if c["id"] == cid:
            return dict(c)
    return None


def has(cid: str, **fields: Any) -> Callable[[Got], bool]:
    """A multiroom state where client `cid` shows `fields`."""

    def check(g: Got) -> bool:
        found = client(g.json(), cid)
        return found is not None and all(found.get(k) == v for k, v in fields.items())

    return check


def connected(*cids: str) -> Callable[[Got], bool]:
    return lambda g: all(has(cid, connected=True)(g) for cid in cids)


async def send(p: Probe, topic: str, payload: Any) -> int:
    mark = p.mark()
    await p.publish(topic, payload if isinstance(payload, str) else json.dumps(payload))
    return mark


@contextlib.asynccontextmanager
async def multiroom_node(
    run_node: NodeFactory,
    tmp_path: Path,
    *,
    subsystems: tuple[type[Subsystem[Any, Any]], ...] = (Info, Routing, Multiroom),
    routing: dict[str, Any] | None = None,
    **section: Any,
) -> AsyncIterator[tuple[Running, Probe, str, Ports]]:
    ports = Ports()
    sections = {
        "routing": routing or sink_config(sinks_dir(tmp_path)),
        "multiroom": multiroom_section(tmp_path, ports, **section),
    }
    async with run_node(subsystems=subsystems, sections=sections) as r, probe(r.port) as p:
        topic = f"{r.base}/multiroom"
        await p.subscribe(f"{r.base}/#")
        await p.wait_for(topic, lambda g: g.json()["server"] == "running")
        yield r, p, topic, ports


async def test_the_server_runs_with_one_stream_per_source(run_node: NodeFactory, tmp_path: Path) -> None:
    async with multiroom_node(run_node, tmp_path) as (r, p, topic, ports):
        state = p.on(topic)[-1].json()
        assert state["version"] == "0.26.0"
        assert [s["id"] for s in state["streams"]] == ["radio"]
        assert state["settings"] == {
            "preset": "balanced",
            "buffer_ms": 1000,
            "codec": "flac",
            "chunk_ms": 20,
            "sample_format": "48000:16:2",
        }
        assert set(state["presets"]) == {"low_latency", "balanced", "quality"}
        assert (state["enabled"], state["local_running"], state["clients"]) == (False, False, [])
        conf = (r.node.config.data_dir / "snapserver" / "snapserver.conf").read_text()
        assert f"port = {ports.control}" in conf
        assert f"source = pipe://{tmp_path}/radio.fifo?mode=create&name=radio" in conf


async def test_clients_appear_disappear_and_round_trip_both_ways(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    async with multiroom_node(run_node, tmp_path) as (_, p, topic, ports):
        with snapclients(ports.stream, ["kitchen", "attic"]) as (_, attic):
            await p.wait_for(topic, connected("kitchen", "attic"))
            state = p.on(topic)[-1].json()
            seen = client(state, "kitchen")
            assert seen is not None
            assert (seen["version"], seen["ip"], seen["snapcast_id"]) == ("0.26.0", "127.0.0.1", "kitchen")
            assert seen["stream"] == "radio" and seen["local"] is False
            async with Controller(ports.control) as other:
                # MQTT -> snapserver: each field of a client, answered by the retained state.
                cset = f"{topic}/client/kitchen/set"
                for command, shown in (
                    ({"volume": 42}, {"volume": 42}),
                    ({"muted": True}, {"muted": True}),
                    ({"name": "Kitchen"}, {"name": "Kitchen"}),
                    ({"latency": 35}, {"latency": 35}),
                    ("unmute", {"muted": False}),
                    ("-2", {"volume": 40}),
                ):
                    mark = await send(p, cset, command)
                    await p.wait_for(topic, has("kitchen", **shown), after=mark)
                status = await other.call("Client.GetStatus", {"id": "kitchen"})
                config = status["client"]["config"]
                assert (config["volume"], config["name"], config["latency"]) == (
                    {"percent": 40, "muted": False},
                    "Kitchen",
                    35,
                )
                # Another controller -> MQTT, through snapserver's notifications.
                for method, params, shown in (
                    ("Client.SetVolume", {"id": "attic", "volume": {"percent": 17, "muted": True}},
                     {"volume": 17, "muted": True}),
                    ("Client.SetName", {"id": "attic", "name": "Attic"}, {"name": "Attic"}),
                    ("Client.SetLatency", {"id": "attic", "latency": 60}, {"latency": 60}),
                ):  # fmt: skip
                    mark = p.mark()
                    await other.call(method, params)
                    await p.wait_for(topic, has("attic", **shown), after=mark)
            mark = p.mark()
            attic.stop()
            await p.wait_for(topic, has("attic", connected=False, name="Attic"), after=mark)
            mark = p.mark()
            attic.start()
            await p.wait_for(topic, has("attic", connected=True, volume=17, latency=60), after=mark)


async def test_bad_client_commands_get_coded_errors(run_node: NodeFactory, tmp_path: Path) -> None:
    async with multiroom_node(run_node, tmp_path) as (r, p, topic, ports):
        with snapclients(ports.stream, ["den"]):
            await p.wait_for(topic, connected("den"))
            await expect_errors(
                p,
                r.base,
                f"{topic}/client/den/set",
                {
                    '{"latency": -1}': "invalid_payload",
                    '{"latency": 5000}': "invalid_payload",  # over the 1000 ms buffer
                    '{"volume": 101}': "invalid_payload",
                    '{"colour": "red"}': "invalid_payload",
                    "loud": "invalid_payload",
                    "": "empty_payload",
                },
            )
            await expect_errors(p, r.base, f"{topic}/client/nobody/set", {'{"volume": 10}': "unknown_client"})
            await expect_errors(
                p, r.base, f"{topic}/client/den/set", {'{"volume": 10}': "retained_command"}, retain=True
            )
            await p.publish(f"{topic}/client/den/set", b"", retain=True)
            await expect_errors(
                p,
                r.base,
                f"{topic}/set",
                {
                    '{"buffer_ms": 1000000000}': "invalid_payload",
                    '{"codec": "mp3"}': "invalid_payload",
                    '{"preset": "loudest"}': "invalid_payload",
                    "fastest": "invalid_payload",
                },
            )
            assert has("den", volume=100, latency=0)(p.on(topic)[-1])


async def test_a_killed_snapserver_is_back_with_its_clients_within_5_s(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    async with multiroom_node(run_node, tmp_path) as (r, p, topic, ports):
        with snapclients(ports.stream, ["one", "two"]):
            await p.wait_for(topic, connected("one", "two"))
            changes = {"one": {"volume": 30, "latency": 20, "name": "One"}, "two": {"volume": 70}}
            for cid, change in changes.items():
                mark = await send(p, f"{topic}/client/{cid}/set", change)
                await p.wait_for(topic, has(cid, **change), after=mark)
            runner = next(x for x in r.node.runners if x.name == "multiroom")
            instance = runner.instance
            assert isinstance(instance, Multiroom) and instance._server is not None
            pid = instance._server.pid
            assert pid is not None
            mark = p.mark()
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await p.wait_for(topic, lambda g: g.json()["server"] != "running", after=mark)
            back = await p.wait_for(
                topic,
                lambda g: (
                    g.json()["server"] == "running"
                    and has("one", connected=True, volume=30, latency=20, name="One")(g)
                    and has("two", connected=True, volume=70)(g)
                ),
                after=mark,
                timeout=5.0,
            )
            assert time.monotonic() - killed < 5.0
            assert back.json()["restarts"] == 1


async def test_a_new_client_starts_at_the_mean_of_the_unmuted_ones(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    async with multiroom_node(run_node, tmp_path) as (_, p, topic, ports):
        with snapclients(ports.stream, ["a", "b", "c"]):
            await p.wait_for(topic, connected("a", "b", "c"))
            for cid, change in (
                ("a", {"volume": 40}),
                ("b", {"volume": 61}),
                ("c", {"volume": 5, "muted": True}),
            ):
                mark = await send(p, f"{topic}/client/{cid}/set", change)
                await p.wait_for(topic, has(cid, **change), after=mark)
            mark = p.mark()
            with snapclients(ports.stream, ["d"]):
                # (40 + 61) / 2, rounded half up; the muted c does not count.
                await p.wait_for(topic, has("d", connected=True, volume=51), after=mark)


async def test_a_preset_restarts_the_server_with_its_settings(run_node: NodeFactory, tmp_path: Path) -> None:
    async with multiroom_node(run_node, tmp_path) as (r, p, topic, ports):
        with snapclients(ports.stream, ["lounge"]):
            await p.wait_for(topic, connected("lounge"))
            mark = await send(p, f"{topic}/client/lounge/set", {"volume": 33})
            await p.wait_for(topic, has("lounge", volume=33), after=mark)
            mark = await send(p, f"{topic}/set", "low_latency")
            got = await p.wait_for(
                topic, lambda g: g.json()["settings"]["preset"] == "low_latency", after=mark
            )
            assert got.json()["settings"] == {
                "preset": "low_latency",
                "buffer_ms": 300,
                "codec": "pcm",
                "chunk_ms": 10,
                "sample_format": "48000:16:2",
            }
            conf = (r.node.config.data_dir / "snapserver" / "snapserver.conf").read_text()
            assert "buffer = 300" in conf and "codec = pcm" in conf
            await p.wait_for(
                topic,
                lambda g: g.json()["server"] == "running" and has("lounge", connected=True)(g),
                after=mark,
            )
            async with Controller(ports.control) as other:
                status = await other.call("Client.GetStatus", {"id": "lounge"})
                assert status["client"]["config"]["volume"]["percent"] == 33
            # Settings of one's own: the preset says so.
            mark = await send(p, f"{topic}/set", {"buffer_ms": 800})
            got = await p.wait_for(topic, lambda g: g.json()["settings"]["buffer_ms"] == 800, after=mark)
            assert got.json()["settings"]["preset"] == "custom"
            assert got.json()["restarts"] == 0  # restarted on purpose: not a crash
