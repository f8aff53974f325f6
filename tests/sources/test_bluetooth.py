"""The `bluetooth` source on a real node and a private dbus-daemon: real bluealsa, fake BlueZ, fake phones."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.alsa_sinks import sink_config, sinks_dir
from harness.bluez import (
    HANDS_FREE,
    BlueAlsaDaemon,
    FakeAplay,
    FakeBlueAlsa,
    FakeBluez,
    FakePhone,
    PrivateBus,
    fake_aplay,
)
from harness.pulse import Pulse
from harness.waits import until
from node.adapters.bluealsa import decode_volume
from node.sources.bluetooth import Bluetooth, to_percent, to_raw
from node.subsystems.info import Info
from node.subsystems.routing import Routing
from node.subsystems.volume import Volume
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, expect_errors, probe

pytestmark = pytest.mark.timeout(60)

PIXEL = ("AA:BB:CC:00:00:01", "Pixel 8")
IPHONE = ("AA:BB:CC:00:00:02", "iPhone")


def where(**fields: Any) -> Callable[[Got], bool]:
    return lambda g: bool(g.payload) and all(g.json().get(k) == v for k, v in fields.items())


def phone_is(state: str, address: str) -> Callable[[Got], bool]:
    def check(g: Got) -> bool:
        s = g.json()
        return s.get("state") == state and (s.get("device") or {}).get("address") == address

    return check


@pytest.fixture
def private_bus(tmp_path: Path) -> Iterator[PrivateBus]:
    bus = PrivateBus(tmp_path).start()
    yield bus
    bus.stop()


@dataclass
class World:
    """Everything on the private bus but the node: BlueZ and bluez-alsa (fakes) and the aplay script."""

    bus: PrivateBus
    bluez: FakeBluez
    bluealsa: FakeBlueAlsa
    aplay: FakeAplay

    async def restart(self) -> None:
        """After the bus came back: bluetoothd and bluealsa connect to it again."""
        await self.bluez.restart()
        await self.bluealsa.stop()
        await self.bluealsa.start()


@pytest.fixture
async def world(private_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[World]:
    bluez = await FakeBluez(private_bus.address).start()
    bluealsa = await FakeBlueAlsa(private_bus.address, bluez).start()
    yield World(private_bus, bluez, bluealsa, fake_aplay(tmp_path))
    await bluealsa.stop()
    await bluez.stop()


def section(w: World, **extra: Any) -> dict[str, Any]:
    return {"dbus_address": w.bus.address, "aplay": str(w.aplay.path), "reconnect_cap_s": 0.3, **extra}


@contextlib.asynccontextmanager
async def bt_node(
    run_node: NodeFactory, w: World, tmp_path: Path, *, volume: bool = False, **extra: Any
) -> AsyncIterator[tuple[Running, Probe, str]]:
    subsystems: list[Any] = [Info, Routing, Bluetooth]
    sections: dict[str, dict[str, Any]] = {
        "routing": sink_config(sinks_dir(tmp_path)),
        "bluetooth": section(w, **extra),
    }
    if volume:
        subsystems.insert(2, Volume)
        sections["volume"] = {"device": "pulse", "control": "Master"}
    async with run_node(subsystems=subsystems, sections=sections) as r, probe(r.port) as p:
        base = r.base
        await p.subscribe(f"{base}/source/bluetooth", f"{base}/error", f"{base}/volume", f"{base}/volume/set")
        yield r, p, base


async def idle(p: Probe, base: str) -> dict[str, Any]:
    state: dict[str, Any] = (await p.wait_for(f"{base}/source/bluetooth", where(state="idle"))).json()
    return state


async def send(p: Probe, base: str, payload: Any) -> int:
    mark = p.mark()
    await p.publish(
        f"{base}/source/bluetooth/set", json.dumps(payload) if not isinstance(payload, str) else payload
    )
    return mark


async def connected(p: Probe, base: str, w: World, who: tuple[str, str] = PIXEL) -> FakePhone:
    """A phone pairs (pairing = accept), connects: the source says connected."""
    phone = w.bluez.add_phone(*who)
    assert await phone.pair()
    assert await phone.connect()
    await p.wait_for(f"{base}/source/bluetooth", phone_is("connected", who[0]))
    return phone


# Daemons ----------------------------------------------------------------------------------------
async def test_the_real_bluealsa_is_read_and_the_adapter_set_up(
    run_node: NodeFactory, private_bus: PrivateBus, tmp_path: Path
) -> None:
    """bluealsa (the real daemon, on the private bus) and a fake BlueZ: idle, visible, agent registered."""
    daemon = BlueAlsaDaemon(private_bus).start()
    bluez = await FakeBluez(private_bus.address).start()
    w = World(private_bus, bluez, FakeBlueAlsa(private_bus.address, bluez), fake_aplay(tmp_path))
    try:
        async with bt_node(run_node, w, tmp_path) as (r, p, base):
            state = await idle(p, base)
            assert state["bluealsa"] == "v4.0.0"  # from the real Manager1
            assert (state["alias"], state["adapter"]) == (r.node.topics.node_id, bluez.adapter_address)
            assert (state["discoverable"], state["pairable"], state["pairable_until"]) == (True, True, None)
            assert (state["device"], state["devices"], state["paired"]) == (None, [], [])
            assert state["commands"] == []
            values = bluez.adapter.values
            assert values["Powered"] is True
            assert (values["DiscoverableTimeout"], values["PairableTimeout"]) == (0, 0)
            assert values["Alias"] == r.node.topics.node_id
            assert await bluez.wait_agent()
            assert (bluez.agents.capability, bluez.agents.default) == ("NoInputNoOutput", True)
    finally:
        await bluez.stop()
        daemon.stop()


async def test_unavailable_with_the_reason_until_each_daemon_is_there(
    run_node: NodeFactory, private_bus: PrivateBus, tmp_path: Path
) -> None:
    bluez = FakeBluez(private_bus.address)
    bluealsa = FakeBlueAlsa(private_bus.address, bluez)
    w = World(private_bus, bluez, bluealsa, fake_aplay(tmp_path))
    topic = "source/bluetooth"
    try:
        async with bt_node(run_node, w, tmp_path) as (_, p, base):
            unavailable = (await p.wait_for(f"{base}/{topic}", where(state="unavailable"))).json()
            assert "bluetoothd is not running" in unavailable["error"]
            await bluez.start(adapter=False)
            await p.wait_for(f"{base}/{topic}", where(state="unavailable", error="no Bluetooth adapter"))
            await bluez.stop()
            await bluez.start()
            await p.wait_for(
                f"{base}/{topic}",
                where(state="unavailable", error="bluealsa is not running (no org.bluealsa on D-Bus)"),
            )
            await bluealsa.start()
            await idle(p, base)
            # A daemon that goes away mid-run: unavailable again, and back when it returns.
            await bluealsa.stop()
            await p.wait_for(f"{base}/{topic}", where(state="unavailable"))
            await bluealsa.start()
            await idle(p, base)
    finally:
        await bluealsa.stop()
        await bluez.stop()


async def test_the_dbus_daemon_killed_and_restarted_the_source_comes_back(
    run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    async with bt_node(run_node, world, tmp_path) as (_, p, base):
        phone = await connected(p, base, world)
        phone.play()
        await p.wait_for(f"{base}/source/bluetooth", where(state="playing"))
        await world.aplay.wait(lambda a: len(a.running()) == 1)
        world.bus.kill()
        lost = await p.wait_for(f"{base}/source/bluetooth", where(state="unavailable"))
        assert lost.json()["error"] == "the connection to D-Bus was lost"
        await world.aplay.wait(lambda a: a.running() == [])  # no player without its phone
        world.bus.start()
        await world.restart()
        await idle(p, base)
        await world.bluez.wait_agent()  # registered with the new bluetoothd
        # The phone, still paired and now trusted, reconnects without asking.
        assert phone.device.values["Trusted"] is True
        assert await phone.connect()
        await p.wait_for(f"{base}/source/bluetooth", phone_is("connected", PIXEL[0]))


# A phone ------------------------------------------------------------------------------------------
async def test_a_phone_pairs_connects_then_plays_into_the_routed_pcm(
    run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    async with bt_node(run_node, world, tmp_path) as (_, p, base):
        await idle(p, base)
        phone = world.bluez.add_phone(*PIXEL)
        assert await phone.pair()
        assert await phone.connect()
        state = (await p.wait_for(f"{base}/source/bluetooth", phone_is("connected", PIXEL[0]))).json()
        assert state["device"]["name"] == "Pixel 8"
        assert state["device"]["codec"] is None  # no audio set up yet
        assert state["paired"] == [
            {"address": PIXEL[0], "name": "Pixel 8", "connected": True, "trusted": True}
        ]
        assert phone.device.values["Trusted"] is True  # it may reconnect without asking
        assert world.aplay.starts() == []  # no PCM, no player

        phone.play(title="Blue in Green", artist="Miles Davis", album="Kind of Blue", duration=337_000)
        state = (await p.wait_for(f"{base}/source/bluetooth", where(state="playing"))).json()
        assert (state["title"], state["artist"], state["album"]) == (
            "Blue in Green",
            "Miles Davis",
            "Kind of Blue",
        )
        assert state["duration_ms"] == 337_000
        assert (state["device"]["codec"], state["device"]["sample_rate"]) == ("SBC", 44100)
        assert state["device"]["player"] == "Music"
        assert set(state["commands"]) == {"pause", "stop", "toggle", "next", "previous"}
        await world.aplay.wait(lambda a: len(a.running()) == 1)
        (started,) = world.aplay.running()
        assert (started["pcm"], started["address"], started["dbus"]) == (
            "milo_bluetooth_direct",
            PIXEL[0],
            None,
        )
        await p.wait_for(f"{base}/source/bluetooth", where(output="milo_bluetooth_direct"))
        # bluez-alsa no longer scales the samples by the phone's volume: the node's volume applies.
        assert phone.pcm is not None
        assert ("SoftVolume", False) in phone.pcm.written

        phone.drop()  # the phone walks away
        await p.wait_for(f"{base}/source/bluetooth", where(state="idle", device=None, output=None))
        await world.aplay.wait(lambda a: a.running() == [])


async def test_routing_moves_the_player_and_the_phone_stays_connected(
    run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    async with bt_node(run_node, world, tmp_path) as (_, p, base):
        phone = await connected(p, base, world)
        phone.play()
        await world.aplay.wait(lambda a: len(a.running()) == 1)
        mark = p.mark()
        await p.publish(f"{base}/routing/set", {"equalizer": True})
        # Routing renders asound.conf first: on a loaded 2-core runner that alone can take seconds.
        await p.wait_for(
            f"{base}/source/bluetooth", where(output="milo_bluetooth_direct_eq"), after=mark, timeout=15
        )
        await world.aplay.wait(lambda a: [e["pcm"] for e in a.running()] == ["milo_bluetooth_direct_eq"])
        events = world.aplay.events()
        stop = next(e for e in events if e["event"] == "stop")
        restart = world.aplay.running()[0]
        gap_ms = (restart["t"] - stop["t"]) * 1000
        print(f"bluealsa-aplay restarted onto the new PCM: {gap_ms:.0f} ms from the old one's stop")
        assert gap_ms < 1000
        assert phone.device.values["Connected"] is True
        assert phone.device.disconnects == 0
        await p.wait_for(f"{base}/source/bluetooth", where(state="playing"))


async def test_transports_go_to_the_phone_through_avrcp(
    run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    async with bt_node(run_node, world, tmp_path) as (_, p, base):
        phone = await connected(p, base, world)
        phone.play()
        await p.wait_for(f"{base}/source/bluetooth", where(state="playing"))
        assert phone.player is not None
        for command, call, state in (
            ("pause", "Pause", "paused"),
            ("play", "Play", "playing"),
            ("toggle", "Pause", "paused"),
            ("next", "Next", None),
            ("previous", "Previous", None),
        ):
            calls = len(phone.player.calls)
            mark = await send(p, base, command)
            await p.wait_for(f"{base}/source/bluetooth", after=mark)  # the echo
            await until(lambda n=calls: len(phone.player.calls) > n)  # type: ignore[misc]
            assert phone.player.calls[calls:] == [call], command
            if state is not None:
                await p.wait_for(f"{base}/source/bluetooth", where(state=state), after=mark)
        await expect_errors(p, base, f"{base}/source/bluetooth/set", {'{"seek_ms": 10}': "unsupported"})


async def test_disconnect_and_forget(run_node: NodeFactory, world: World, tmp_path: Path) -> None:
    async with bt_node(run_node, world, tmp_path) as (_, p, base):
        phone = await connected(p, base, world)
        topic = f"{base}/source/bluetooth/set"
        await expect_errors(
            p,
            base,
            topic,
            {
                '{"disconnect": "11:22:33:44:55:66"}': "not_connected",
                '{"forget": "11:22:33:44:55:66"}': "unknown_device",
                '{"forget": "not an address"}': "invalid_payload",
                '{"accept": true}': "no_pending_pairing",
            },
        )
        mark = await send(p, base, "disconnect")
        await p.wait_for(f"{base}/source/bluetooth", where(state="idle"), after=mark)
        assert phone.device.disconnects == 1
        mark = await send(p, base, {"forget": PIXEL[0].lower()})
        await p.wait_for(f"{base}/source/bluetooth", where(paired=[]), after=mark)
        assert world.bluez.removed == [phone.path]
        await expect_errors(p, base, topic, {"disconnect": "not_connected"})


# Volume -------------------------------------------------------------------------------------------
async def test_the_phones_volume_and_the_nodes_follow_each_other_without_a_loop(
    run_node: NodeFactory, world: World, tmp_path: Path, pulse: Pulse
) -> None:
    assert all(to_percent(to_raw(n)) == n for n in range(101))
    async with bt_node(run_node, world, tmp_path, volume=True) as (_, p, base):
        mark = p.mark()
        await p.publish(f"{base}/volume/set", "40")
        await p.wait_for(f"{base}/volume", where(percent=40), after=mark)
        phone = await connected(p, base, world)
        transport = phone.transport
        assert transport is not None
        # Connected: the phone's slider takes the node's volume.
        await until(lambda: ("Volume", to_raw(40)) in transport.written)
        await p.wait_for(f"{base}/source/bluetooth", lambda g: (g.json()["device"] or {}).get("volume") == 40)

        # The node's volume moves: the phone's follows.
        mark = p.mark()
        await p.publish(f"{base}/volume/set", "55")
        await p.wait_for(f"{base}/volume", where(percent=55), after=mark)
        await until(lambda: transport.written[-1] == ("Volume", to_raw(55)))

        # The phone's slider moves: the node's follows, through volume/set like any client.
        writes = len(transport.written)
        mark = p.mark()
        phone.set_volume(100)
        await p.wait_for(f"{base}/volume", where(percent=to_percent(100)), after=mark)
        await p.wait_for(f"{base}/source/bluetooth", lambda g: g.json()["device"]["volume"] == 79, after=mark)
        assert [g.json() for g in p.on(f"{base}/volume/set", after=mark)] == [{"percent": 79}]
        # No feedback: the node's new volume is what the phone shows; nothing is sent back to it.
        await p.quiet(f"{base}/volume/set", after=p.mark(), probe_topic=f"{base}/test/flush")
        assert len(transport.written) == writes
    assert decode_volume(0x7F7F) == (100, False)
    assert decode_volume(0x4080 | 0x4000) == (50, True)


# Several phones ------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["newest", "refuse", "several"])
async def test_a_second_phone_wins_is_refused_or_joins(
    policy: str, run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    async with bt_node(run_node, world, tmp_path, connections=policy) as (_, p, base):
        first = await connected(p, base, world, PIXEL)
        second = world.bluez.add_phone(*IPHONE)
        assert await second.pair()
        assert await second.connect()
        if policy == "newest":
            await p.wait_for(f"{base}/source/bluetooth", phone_is("connected", IPHONE[0]))
            await until(lambda: first.device.values["Connected"] is False)
            assert (first.device.disconnects, second.device.disconnects) == (1, 0)
        elif policy == "refuse":
            await until(lambda: second.device.values["Connected"] is False)
            assert (first.device.disconnects, second.device.disconnects) == (0, 1)
            state = (await p.wait_for(f"{base}/source/bluetooth", phone_is("connected", PIXEL[0]))).json()
            assert [d["address"] for d in state["devices"]] == [PIXEL[0]]
        else:
            state = await p.wait_for(f"{base}/source/bluetooth", lambda g: len(g.json()["devices"]) == 2)
            assert [d["address"] for d in state.json()["devices"]] == [IPHONE[0], PIXEL[0]]
            first.play()
            second.play()
            await world.aplay.wait(lambda a: {e["address"] for e in a.running()} == {PIXEL[0], IPHONE[0]})
            assert (first.device.disconnects, second.device.disconnects) == (0, 0)


# Pairing -----------------------------------------------------------------------------------------------
async def test_pairing_by_asking_accepted_refused_and_timed_out(
    run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    async with bt_node(run_node, world, tmp_path, pairing="ask", pairing_timeout_s=1) as (_, p, base):
        await idle(p, base)
        topic = f"{base}/source/bluetooth"
        for answer in ("accept", "refuse"):
            phone = world.bluez.add_phone(*(PIXEL if answer == "accept" else IPHONE))
            mark = p.mark()
            pairing = asyncio.ensure_future(phone.pair(passkey=4321))
            pending = (
                await p.wait_for(topic, lambda g: g.json()["pending_pairing"] is not None, after=mark)
            ).json()
            assert pending["pending_pairing"]["name"] == phone.name
            assert pending["pending_pairing"]["address"] == phone.address
            assert pending["pending_pairing"]["passkey"] == "004321"
            mark = await send(p, base, answer)
            assert await asyncio.wait_for(pairing, 5) is (answer == "accept")
            await p.wait_for(topic, where(pending_pairing=None), after=mark)
        # Nobody answers: refused when the time is up.
        late = world.bluez.add_phone("AA:BB:CC:00:00:03", "Tablet")
        pairing = asyncio.ensure_future(late.pair(passkey=None))
        await p.wait_for(topic, lambda g: (g.json()["pending_pairing"] or {}).get("name") == "Tablet")
        mark = p.mark()
        assert await asyncio.wait_for(pairing, 5) is False
        await p.wait_for(topic, where(pending_pairing=None), after=mark)
        state = (await p.wait_for(topic, after=mark)).json()
        assert [d["address"] for d in state["paired"]] == [PIXEL[0]]


async def test_what_is_no_audio_source_is_refused(
    run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    async with bt_node(run_node, world, tmp_path) as (_, p, base):
        await idle(p, base)
        headset = world.bluez.add_phone("AA:BB:CC:00:00:09", "Car kit", uuids=[HANDS_FREE])
        assert await headset.pair() is False
        phone = world.bluez.add_phone(*PIXEL)
        # A service other than audio, asked for by an untrusted device, is refused too.
        reply = await world.bluez.call_agent("AuthorizeService", "os", phone.path, HANDS_FREE)
        assert reply.error_name == "org.bluez.Error.Rejected"


async def test_a_pairing_window_opens_on_command_and_closes_by_itself(
    run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    async with bt_node(run_node, world, tmp_path, visibility="window") as (_, p, base):
        state = await idle(p, base)
        assert (state["discoverable"], state["pairable"]) == (False, False)
        topic = f"{base}/source/bluetooth"
        await expect_errors(p, base, f"{topic}/set", {'{"pairable": true}': "invalid_payload"})
        mark = await send(p, base, {"pairable": 2})
        opened = (await p.wait_for(topic, where(discoverable=True, pairable=True), after=mark)).json()
        assert opened["pairable_until"] is not None
        assert world.bluez.adapter.values["DiscoverableTimeout"] == 2 + 5  # BlueZ's own, a safety net
        await p.wait_for(topic, where(discoverable=False, pairable=False, pairable_until=None), after=mark)
        mark = await send(p, base, "pairable")  # the configured window (180 s)
        await p.wait_for(topic, where(discoverable=True), after=mark)
        mark = await send(p, base, {"pairable": 0})
        await p.wait_for(topic, where(discoverable=False, pairable_until=None), after=mark)


async def test_a_player_that_exits_is_started_again(
    run_node: NodeFactory, world: World, tmp_path: Path
) -> None:
    crashing = fake_aplay(tmp_path, stays=False)
    w = World(world.bus, world.bluez, world.bluealsa, crashing)
    async with bt_node(run_node, w, tmp_path) as (_, p, base):
        phone = await connected(p, base, w)
        phone.play()
        await crashing.wait(lambda a: len(a.starts()) >= 2, timeout=5)
        assert phone.device.values["Connected"] is True
