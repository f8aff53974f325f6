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

import numpy as np
import pytest

from harness.alsa_sinks import sink_config, sinks_dir
from harness.audio import peak_hz
from harness.icy_server import BITRATE, TONE_HZ, IcyServer
from harness.net import free_port
from harness.pulse import Pulse
from harness.snapcast import (
    BYTES_PER_SECOND,
    Controller,
    Ports,
    fifo_routing,
    multiroom_section,
    snapclients,
    snapserver,
)
from node import registry
from node.framework.subsystem import Subsystem
from node.sources.radio import Radio
from node.subsystems.info import Info
from node.subsystems.multiroom import Multiroom
from node.subsystems.multiroom.models import PRESETS
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from node.subsystems.volume import Volume
from tests.conftest import NodeFactory, Running
from tests.fakes.fake_source import make_source
from tests.helpers import Got, Probe, expect_errors, probe

pytestmark = pytest.mark.timeout(60)
# As in tests/sources/test_radio.py: libmpv's first load and a stream's start take seconds on a busy box.
RADIO_WAIT = 10.0
PRESET_SETTINGS: dict[str, dict[str, Any]] = {name: s.model_dump() for name, s in PRESETS.items()}


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


def preset_is(name: str) -> Callable[[Got], bool]:
    return lambda g: bool(g.json()["settings"]["preset"] == name)


def settled(*cids: str) -> Callable[[Got], bool]:
    """The server restarted with the latest settings, and every one of `cids` is back on it."""
    return lambda g: g.json()["server"] == "running" and not g.json()["applying"] and connected(*cids)(g)


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
    radio: dict[str, Any] | None = None,
    preset: str | None = None,
    **section: Any,
) -> AsyncIterator[tuple[Running, Probe, str, Ports]]:
    ports = Ports()
    sections = {
        "routing": routing or sink_config(sinks_dir(tmp_path)),
        "multiroom": multiroom_section(tmp_path, ports, **section),
        "radio": radio or {},
    }
    if preset is not None:
        # The settings are the subsystem's data (multiroom/set), not its config: stored before start.
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        stored = {"config": {}, "data": {"settings": PRESET_SETTINGS[preset]}}
        (data / "multiroom.json").write_text(json.dumps(stored))
    async with run_node(subsystems=subsystems, sections=sections) as r, probe(r.port) as p:
        topic = f"{r.base}/multiroom"
        await p.subscribe(f"{r.base}/#")
        await p.wait_for(topic, lambda g: g.json()["server"] == "running")
        yield r, p, topic, ports


async def test_the_server_runs_with_one_stream_per_source(run_node: NodeFactory, tmp_path: Path) -> None:
    async with multiroom_node(run_node, tmp_path) as (r, p, topic, ports):
        state = p.on(topic)[-1].json()
        assert state["version"] == "0.26.0"
        assert [s["id"] for s in state["streams"]] == sorted(registry.source_names())
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
            # With no source active yet, snapserver puts a new client on its first stream.
            assert seen["stream"] == registry.source_names()[0] and seen["local"] is False
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


async def test_info_lists_each_satellites_snapclient_version(run_node: NodeFactory, tmp_path: Path) -> None:
    # Info reads the multiroom state (a view, no import): each client's version as snapserver reports it.
    async with multiroom_node(run_node, tmp_path) as (r, p, topic, ports):
        with snapclients(ports.stream, ["porch", "loft"]) as (_, loft):
            await p.wait_for(topic, connected("porch", "loft"))
            info = await p.wait_for(
                f"{r.base}/info", lambda g: {"porch", "loft"} <= set(g.json()["satellites"])
            )
            porch = client(p.on(topic)[-1].json(), "porch")
            assert porch is not None
            assert info.json()["satellites"]["porch"] == {
                "name": porch["name"],  # no name set: its host's
                "host": porch["host"],
                "version": "0.26.0",
                "connected": True,
                "local": False,
            }
            mark = p.mark()
            loft.stop()
            await p.wait_for(
                f"{r.base}/info", lambda g: not g.json()["satellites"]["loft"]["connected"], after=mark
            )


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
            changes: dict[str, dict[str, Any]] = {
                "one": {"volume": 30, "latency": 20, "name": "One"},
                "two": {"volume": 70},
            }
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
            elapsed = time.monotonic() - killed
            print(f"snapserver SIGKILL -> every client back as it was in {elapsed:.2f} s")
            assert elapsed < 5.0
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
            await p.wait_for(topic, lambda g: g.json()["applying"], after=mark)
            await p.wait_for(topic, settled("lounge"), after=mark)
            async with Controller(ports.control) as other:
                status = await other.call("Client.GetStatus", {"id": "lounge"})
                assert status["client"]["config"]["volume"]["percent"] == 33
            # Settings of one's own: the preset says so.
            mark = await send(p, f"{topic}/set", {"buffer_ms": 800})
            got = await p.wait_for(topic, lambda g: g.json()["settings"]["buffer_ms"] == 800, after=mark)
            assert got.json()["settings"]["preset"] == "custom"
            assert got.json()["restarts"] == 0  # restarted on purpose: not a crash


async def test_settings_changed_in_quick_succession_restart_the_server_once_and_every_client_returns(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    # snapclient 0.26 stops reconnecting for good when its server goes away during its handshake:
    # restarts right after one another left a client off in about one round in ten.
    async with multiroom_node(run_node, tmp_path, settle_s=2.0) as (r, p, topic, ports):
        names = ["kitchen", "attic", "porch"]
        with snapclients(ports.stream, names):
            await p.wait_for(topic, connected(*names))
            for _ in range(3):
                for preset in ("quality", "balanced", "quality", "low_latency"):
                    mark = await send(p, f"{topic}/set", preset)
                    got = await p.wait_for(topic, preset_is(preset), after=mark)
                    assert got.json()["applying"]
                conf = (r.node.config.data_dir / "snapserver" / "snapserver.conf").read_text()
                assert "buffer = 300" in conf and "codec = pcm" in conf
                await p.wait_for(topic, settled(*names), after=mark, timeout=15.0)
            assert (await p.wait_for(topic, settled(*names))).json()["restarts"] == 0


def tone_in(raw: bytes) -> float:
    """The strongest frequency of raw s16le stereo (what a snapclient's file player writes)."""
    samples = np.frombuffer(raw, dtype="<i2").reshape(-1, 2).astype(np.float64) / 32768
    return peak_hz(samples, 48000)


async def test_routing_moves_the_playing_radio_to_its_stream_and_back_without_restarting_it(
    run_node: NodeFactory, tmp_path: Path, icy: IcyServer
) -> None:
    out = sinks_dir(tmp_path)
    radio = {
        "ao": "",  # ALSA, into the PCM routing names
        "audio_device": "",
        "allow_private_urls": True,
        "index_first_delay_s": 3600,
        "index_refresh_h": 0,
        "directory_url": f"http://127.0.0.1:{free_port()}",
    }
    with fifo_routing(out, {"radio": tmp_path / "radio.fifo"}) as routing:
        await _radio_through_multiroom(run_node, tmp_path, icy=icy, out=out, routing=routing, radio=radio)


async def _radio_through_multiroom(
    run_node: NodeFactory,
    tmp_path: Path,
    *,
    icy: IcyServer,
    out: Path,
    routing: dict[str, Any],
    radio: dict[str, Any],
) -> None:
    # The player makes the radio the active source when it plays: every room follows the active one.
    subsystems = (Info, Routing, Radio, Multiroom, Player)
    async with multiroom_node(
        run_node, tmp_path, subsystems=subsystems, routing=routing, radio=radio, preset="low_latency"
    ) as (r, p, topic, _):
        base = r.base
        mark = await send(p, f"{base}/source/radio/set", {"url": icy.url()})
        await p.wait_for(
            f"{base}/source/radio", lambda g: g.json()["state"] == "playing", after=mark, timeout=RADIO_WAIT
        )
        await icy.wait_sent(icy.sent + BITRATE // 8)
        before = (out / "direct.wav").stat().st_size
        assert before > 48000

        mark = await send(p, f"{base}/routing/set", {"multiroom": True})
        on = await p.wait_for(
            topic,
            lambda g: g.json()["enabled"] and has(r.node.config.node_id, connected=True, local=True)(g),
            after=mark,
            timeout=RADIO_WAIT,
        )
        assert on.json()["local_running"] is True
        await p.wait_for(
            f"{base}/source/radio", lambda g: g.json()["device"] == "alsa/milo_radio_multiroom", after=mark
        )
        await p.wait_for(
            topic, lambda g: {"id": "radio", "status": "playing"} in g.json()["streams"], after=mark
        )
        # Two seconds of the station later (its server paces it), the local client has played it.
        await icy.wait_sent(icy.sent + 2 * BITRATE // 8, timeout=8)
        played = (tmp_path / "local.raw").read_bytes()
        assert len(played) > BYTES_PER_SECOND // 2
        assert abs(tone_in(played[-BYTES_PER_SECOND // 2 :]) - TONE_HZ) < 10

        mark = await send(p, f"{base}/routing/set", {"multiroom": False})
        await p.wait_for(
            topic,
            lambda g: not g.json()["enabled"] and has(r.node.config.node_id, connected=False)(g),
            after=mark,
            timeout=RADIO_WAIT,
        )
        await p.wait_for(
            f"{base}/source/radio", lambda g: g.json()["device"] == "alsa/milo_radio_direct", after=mark
        )
        # The DAC's file sink starts afresh when mpv reopens it: a second of the station, then another.
        await icy.wait_sent(icy.sent + BITRATE // 8)
        back = (out / "direct.wav").stat().st_size
        await icy.wait_sent(icy.sent + BITRATE // 8)
        assert (out / "direct.wav").stat().st_size > back
        assert p.on(f"{base}/source/radio")[-1].json()["state"] == "playing"
        # Stopped before the node stops, as the radio's own routing test does: libmpv terminated
        # while it plays into an ALSA file sink it reopened can abort the whole process.
        mark = await send(p, f"{base}/source/radio/set", "stop")
        await p.wait_for(f"{base}/source/radio", lambda g: g.json()["state"] == "idle", after=mark)
    assert icy.connections == 1


async def test_the_node_volume_is_the_mean_of_the_clients_and_moves_them_alike(
    run_node: NodeFactory, tmp_path: Path, pulse: Pulse
) -> None:
    subsystems = (Info, Routing, Volume, Multiroom)
    local = None
    async with multiroom_node(run_node, tmp_path, subsystems=subsystems) as (r, p, topic, ports):
        local = r.node.config.node_id
        volume = f"{r.base}/volume"
        with snapclients(ports.stream, ["a", "b"]):
            await p.wait_for(topic, connected("a", "b"))
            for cid, level in (("a", 40), ("b", 60)):
                mark = await send(p, f"{topic}/client/{cid}/set", {"volume": level})
                await p.wait_for(topic, has(cid, volume=level), after=mark)
            mark = await send(p, f"{r.base}/routing/set", {"multiroom": True})
            # This node's own client is new: it starts at the mean of the others.
            await p.wait_for(topic, has(local, connected=True, volume=50), after=mark)
            await p.wait_for(
                volume, lambda g: g.json()["multiroom"] and g.json()["percent"] == 50, after=mark
            )
            mark = await send(p, f"{volume}/set", "+10")
            await p.wait_for(
                topic,
                lambda g: has("a", volume=50)(g) and has("b", volume=70)(g) and has(local, volume=60)(g),
                after=mark,
            )
            await p.wait_for(volume, lambda g: g.json()["percent"] == 60, after=mark)
            async with Controller(ports.control) as other:
                status = await other.call("Server.GetStatus")
            levels = {
                c["id"]: c["config"]["volume"]["percent"]
                for g in status["server"]["groups"]
                for c in g["clients"]
            }
            assert levels == {"a": 50, "b": 70, local: 60}
            mark = await send(p, f"{volume}/set", "mute")
            await p.wait_for(topic, lambda g: all(c["muted"] for c in g.json()["clients"]), after=mark)
            await p.wait_for(volume, lambda g: g.json()["muted"] is True, after=mark)


async def test_every_client_plays_the_active_sources_stream(run_node: NodeFactory, tmp_path: Path) -> None:
    alpha = make_source("alpha")
    subsystems = (Info, Routing, alpha, Multiroom, Player)
    names = [*registry.source_names(), "alpha"]
    async with multiroom_node(run_node, tmp_path, subsystems=subsystems, sources=names) as (
        r,
        p,
        topic,
        ports,
    ):
        assert [s["id"] for s in p.on(topic)[-1].json()["streams"]] == sorted(
            [*registry.source_names(), "alpha"]
        )
        with snapclients(ports.stream, ["x", "y"]):
            await p.wait_for(topic, connected("x", "y"))
            mark = await send(p, f"{r.base}/source/set", "alpha")
            await p.wait_for(
                topic,
                lambda g: (
                    g.json()["stream"] == "alpha"
                    and has("x", stream="alpha")(g)
                    and has("y", stream="alpha")(g)
                ),
                after=mark,
            )
            # A client joining later goes to the same stream (snapserver puts it on its first one).
            mark = p.mark()
            with snapclients(ports.stream, ["z"]):
                await p.wait_for(topic, has("z", connected=True, stream="alpha"), after=mark)
            # Another controller moves a group away: it is brought back to what plays here.
            async with Controller(ports.control) as other:
                status = await other.call("Server.GetStatus")
                group = next(g for g in status["server"]["groups"] if g["clients"][0]["id"] == "x")
                await other.call("Group.SetStream", {"id": group["id"], "stream_id": "radio"})
                # The node's own change reaches this controller as a notification.
                await other.notified("Group.OnStreamChanged", id=group["id"], stream_id="alpha")
                assert has("x", stream="alpha")(p.on(topic)[-1])
                status = await other.call("Server.GetStatus")
                streams = {c["id"]: g["stream_id"] for g in status["server"]["groups"] for c in g["clients"]}
                assert streams == {"x": "alpha", "y": "alpha", "z": "alpha"}


async def test_multiroom_set_on_and_off_goes_through_routing(run_node: NodeFactory, tmp_path: Path) -> None:
    async with multiroom_node(run_node, tmp_path) as (r, p, topic, _):
        local = r.node.config.node_id
        mark = await send(p, f"{topic}/set", "on")
        await p.wait_for(f"{r.base}/routing", lambda g: g.json()["multiroom"] is True, after=mark)
        await p.wait_for(topic, lambda g: g.json()["enabled"] and has(local, connected=True)(g), after=mark)
        mark = await send(p, f"{topic}/set", {"enabled": False})
        await p.wait_for(f"{r.base}/routing", lambda g: g.json()["multiroom"] is False, after=mark)
        await p.wait_for(topic, lambda g: not g.json()["local_running"] and has(local, connected=False)(g))


FAKE_SYSTEMCTL = """#!/bin/sh
# Stands in for systemctl: records each call; the test starts what the units would run.
echo "$@" >> "$(dirname "$0")/calls"
"""


async def test_under_systemd_the_node_renders_the_files_and_drives_the_units(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    systemctl = tmp_path / "bin" / "systemctl"
    systemctl.parent.mkdir()
    systemctl.write_text(FAKE_SYSTEMCTL)
    systemctl.chmod(0o755)
    calls = tmp_path / "bin" / "calls"
    section: dict[str, Any] = {
        "manage": "systemd",
        "systemctl": str(systemctl),
        "client_player": "alsa",
        "client_mixer": "none",
        "settle_s": 0,  # restarted at once: the fake systemctl restarts nothing, so nothing to space
    }
    ports = Ports()
    sections = {
        "routing": sink_config(sinks_dir(tmp_path)),
        "multiroom": multiroom_section(tmp_path, ports, **section),
    }
    async with run_node(subsystems=(Info, Routing, Multiroom), sections=sections) as r, probe(r.port) as p:
        topic = f"{r.base}/multiroom"
        await p.subscribe(f"{r.base}/#")
        assert calls.read_text().splitlines()[0] == "start snapserver.service"
        assert (await p.wait_for(topic)).json()["server"] == "starting"
        # What the unit would run, from the file the node rendered for it.
        conf = r.node.config.data_dir / "snapserver" / "snapserver.conf"
        with snapserver(conf):
            await p.wait_for(
                topic,
                lambda g: g.json()["server"] == "running" and g.json()["managed"] == "systemd",
                timeout=10,  # its reconnection backoff has reached 1 s by now
            )
            mark = await send(p, f"{r.base}/routing/set", {"multiroom": True})
            await p.wait_for(topic, lambda g: g.json()["local_running"] is True, after=mark)
            assert calls.read_text().splitlines()[-1] == "start snapclient.service"
            env = (r.node.config.data_dir / "snapclient.env").read_text()
            assert env == (
                f"SNAPCLIENT_OPTS=-h 127.0.0.1 -p {ports.stream} --hostID {r.node.config.node_id} "
                "--player alsa -s test_direct --mixer none --latency 0\n"
            )
            mark = await send(p, f"{topic}/set", "quality")
            await p.wait_for(topic, lambda g: g.json()["settings"]["preset"] == "quality", after=mark)
            assert calls.read_text().splitlines()[-1] == "restart snapserver.service"
            assert "buffer = 2500" in conf.read_text()
    assert calls.read_text().splitlines()[-1] == "stop snapclient.service"


async def test_an_external_server_is_followed_but_its_settings_are_its_own(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    ports = Ports()
    sections = {
        "routing": sink_config(sinks_dir(tmp_path)),
        "multiroom": multiroom_section(tmp_path, ports, manage="external", local_client=False),
    }
    async with run_node(subsystems=(Info, Routing, Multiroom), sections=sections) as r, probe(r.port) as p:
        topic = f"{r.base}/multiroom"
        await p.subscribe(f"{r.base}/#")
        down = await p.wait_for(topic)
        assert (down.json()["server"], down.json()["managed"]) == ("unreachable", "external")
        assert "cannot reach snapserver" in down.json()["error"]
        await expect_errors(p, r.base, f"{topic}/client/anyone/set", {"40": "unknown_client"})
        conf = tmp_path / "external.conf"
        conf.write_text(
            f"[server]\ndatadir = {tmp_path}\n[http]\nenabled = false\n"
            f"[tcp]\nbind_to_address = 127.0.0.1\nport = {ports.control}\n"
            f"[stream]\nbind_to_address = 127.0.0.1\nport = {ports.stream}\n"
            f"source = pipe://{tmp_path}/ext.fifo?name=ext\n"
        )
        with snapserver(conf):
            up = await p.wait_for(topic, lambda g: g.json()["server"] == "running", timeout=10)
            assert [s["id"] for s in up.json()["streams"]] == ["ext"]
            await expect_errors(p, r.base, f"{topic}/set", {"low_latency": "read_only"})
        await p.wait_for(topic, lambda g: g.json()["server"] == "unreachable")
