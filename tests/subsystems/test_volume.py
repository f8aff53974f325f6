"""The volume subsystem against a real mixer: PulseAudio's `Master` through the ALSA `pulse` plug-in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import alsaaudio
import pytest

from harness.pulse import Pulse, running_pulse, stop_pulse
from node.adapters.mixer import MixerControl
from node.framework.store import Store, StoredFile
from node.subsystems.info import Info
from node.subsystems.volume import Volume
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, expect_errors, probe

PULSE = {"device": "pulse", "control": "Master"}
FULL = 65536  # the pulse plug-in's raw range is 0..65536 (PA_VOLUME_NORM)


def raw_of(percent: float, low: int = 0, high: int = FULL) -> int:
    """Where a percent must land in a raw window, rounded half up (independent of the code under test)."""
    return low + math.floor((high - low) * percent / 100 + 0.5)


def status_of(name: str, status: str) -> Any:
    return lambda g: g.json()["subsystems"].get(name, {}).get("status") == status


def percent_is(percent: int, muted: bool | None = None) -> Any:
    def check(g: Got) -> bool:
        state = g.json()
        return bool(state["percent"] == percent and (muted is None or state["muted"] == muted))

    return check


@contextlib.asynccontextmanager
async def volume_node(
    run_node: NodeFactory, *, data_dir: Path | None = None, **section: Any
) -> AsyncIterator[tuple[Running, Probe, str]]:
    """A node with info and volume on the fixture's PulseAudio; yields once the first state is out."""
    sections = {"volume": {**PULSE, **section}}
    async with (
        run_node(subsystems=(Info, Volume), sections=sections, data_dir=data_dir) as r,
        probe(r.port) as p,
    ):
        topic = f"{r.base}/volume"
        await p.subscribe(topic, f"{r.base}/error")
        await p.wait_for(topic)
        yield r, p, topic


async def command(p: Probe, topic: str, payload: str, where: Any) -> dict[str, Any]:
    mark = p.mark()
    await p.publish(f"{topic}/set", payload)
    got = await p.wait_for(topic, where, after=mark)
    state: dict[str, Any] = got.json()
    return state


async def amixer(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "amixer", "-q", "-D", "pulse", *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


# Start ---------------------------------------------------------------------------------------------
async def test_whole_state_is_published_at_start(run_node: NodeFactory, pulse: Pulse) -> None:
    pulse.set(raw_of(64))
    async with volume_node(run_node) as (r, p, topic):
        state = p.on(topic)[0]
        assert state.retain
        assert state.json() == {
            "percent": 64,
            "muted": False,
            "limit_max": 100,
            "step": 5,
            "device": "pulse",
            "control": "Master",
            "raw": raw_of(64),
            "raw_min": 0,
            "raw_max": FULL,
            "window_raw_min": 0,
            "window_raw_max": FULL,
            "steps": FULL,
            "multiroom": False,
        }
        await p.subscribe(f"{r.base}/info")
        await p.wait_for(f"{r.base}/info", status_of("volume", "running"))


async def test_auto_detect_uses_the_sound_server_when_there_is_no_card(
    run_node: NodeFactory, pulse: Pulse
) -> None:
    if alsaaudio.card_indexes():
        pytest.skip("this machine has a sound card, which auto-detection rightly prefers")
    async with volume_node(run_node, device="", control="") as (_, p, topic):
        state = p.on(topic)[0].json()
        assert (state["device"], state["control"]) == ("pulse", "Master")


# Commands ------------------------------------------------------------------------------------------
async def test_every_command_form_changes_the_real_mixer(run_node: NodeFactory, pulse: Pulse) -> None:
    async with volume_node(run_node) as (_, p, topic):
        cases = [
            ("40", 40, False),
            ("+5", 45, False),
            ("-3", 42, False),
            ('{"percent": 20}', 20, False),
            ('{"delta": -2}', 18, False),
            ("up", 23, False),
            ("down", 18, False),
            ("mute", 18, True),
            ("+2", 20, True),  # the volume moves under the mute
            ("unmute", 20, False),
            ("toggle_mute", 20, True),
            ('{"muted": false}', 20, False),
            ("TOGGLE_MUTE", 20, True),
            ('{"percent": 0, "muted": false}', 0, False),
            ('"100"', 100, False),
        ]
        for payload, percent, muted in cases:
            await command(p, topic, payload, percent_is(percent, muted))
            assert pulse.raw() == [raw_of(percent)] * 2, payload
            assert pulse.muted() is muted, payload


async def test_bad_commands_get_an_error_and_change_nothing(run_node: NodeFactory, pulse: Pulse) -> None:
    async with volume_node(run_node, limit_max=80) as (r, p, topic):
        await command(p, topic, "30", percent_is(30))
        mark = p.mark()
        cases = {
            "loud": "invalid_payload",
            "101": "invalid_payload",
            '{"percent": 1e9}': "invalid_payload",
            '{"percent": 40, "delta": 2}': "invalid_payload",
            '{"volume": 3}': "invalid_payload",
            "{}": "invalid_payload",
            "true": "invalid_payload",
            "+2.5": "invalid_payload",
            "40.5": "invalid_payload",
            "[40]": "invalid_payload",
            "": "empty_payload",
            "90": "over_limit",
            '{"percent": 81}': "over_limit",
        }
        await expect_errors(p, r.base, f"{topic}/set", cases)
        await p.quiet(topic, after=mark, probe_topic=f"{r.base}/test/flush")
        assert pulse.raw() == [raw_of(30)] * 2


async def test_limit_clamps_steps_and_caps_every_writer(run_node: NodeFactory, pulse: Pulse) -> None:
    async with volume_node(run_node, limit_max=80) as (_r, p, topic):
        assert p.on(topic)[0].json()["limit_max"] == 80
        # The fixture left the mixer at 100 %: over the limit, so the start brought it down.
        assert p.on(topic)[0].json()["percent"] == 80
        await command(p, topic, "75", percent_is(75))
        await command(p, topic, "+10", percent_is(80))
        await command(p, topic, "0", percent_is(0))
        # Already at 0: nothing changes, and the state is published all the same (the acknowledgement).
        mark = p.mark()
        await p.publish(f"{topic}/set", "-5")
        await p.wait_for(topic, percent_is(0), after=mark)
        assert pulse.raw() == [raw_of(0)] * 2
        await command(p, topic, '{"delta": 100}', percent_is(80))
        assert pulse.raw() == [raw_of(80)] * 2
        # Another program turning the mixer over the cap is put back to it.
        await command(p, topic, "50", percent_is(50))
        mark = p.mark()
        await amixer("sset", "Master", "95%")
        await p.wait_for(topic, percent_is(80), after=mark)
        assert pulse.raw() == [raw_of(80)] * 2
        assert all(g.json()["percent"] <= 80 for g in p.on(topic, mark))


async def test_config_changes_apply_without_a_restart(run_node: NodeFactory, pulse: Pulse) -> None:
    async with volume_node(run_node) as (r, p, topic):
        await command(p, topic, "70", percent_is(70))
        mark = p.mark()
        await p.publish(f"{topic}/config/set", {"limit_max": 50})
        state = (await p.wait_for(topic, percent_is(50), after=mark)).json()
        assert state["limit_max"] == 50
        assert pulse.raw() == [raw_of(50)] * 2
        mark = p.mark()
        await p.publish(f"{topic}/config/set", {"window_max": 50.0})
        state = (
            await p.wait_for(topic, lambda g: g.json()["window_raw_max"] == FULL // 2, after=mark)
        ).json()
        assert state["percent"] == 50
        assert pulse.raw() == [raw_of(50, 0, FULL // 2)] * 2
        mark = p.mark()
        await p.publish(f"{topic}/config/set", {"step": 7})
        await p.wait_for(topic, lambda g: g.json()["step"] == 7, after=mark)
        await command(p, topic, "down", percent_is(43))
        mark = p.mark()
        await p.publish(f"{topic}/config/set", {"window_min": 60.0})
        err = (await p.wait_for(f"{r.base}/error", after=mark)).json()
        assert err["code"] == "invalid_config"
        assert "window_min" in err["error"]


# Mapping -------------------------------------------------------------------------------------------
async def test_percent_maps_linearly_onto_the_window(run_node: NodeFactory, pulse: Pulse) -> None:
    low, high = raw_of(20), raw_of(60)
    async with volume_node(run_node, window_min=20, window_max=60) as (_, p, topic):
        first = p.on(topic)[0].json()
        assert (first["window_raw_min"], first["window_raw_max"], first["steps"]) == (low, high, high - low)
        for percent in (0, 50, 100, 33):
            state = await command(p, topic, str(percent), percent_is(percent))
            assert pulse.raw() == [raw_of(percent, low, high)] * 2
            assert state["raw"] == raw_of(percent, low, high)
        # And back: a raw value set by someone else is read through the same window.
        mark = p.mark()
        pulse.set(raw_of(25, low, high))
        await p.wait_for(topic, percent_is(25), after=mark)
        mark = p.mark()
        pulse.set(raw_of(10))  # under the window
        await p.wait_for(topic, percent_is(0), after=mark)
        mark = p.mark()
        pulse.set(raw_of(90))  # over the window: that is where the gain stage clips, so it is put back
        await p.wait_for(topic, lambda g: g.json()["percent"] == 100 and g.json()["raw"] == high, after=mark)
        assert pulse.raw() == [high] * 2


async def test_mute_without_a_switch_parks_the_control_at_its_minimum(
    run_node: NodeFactory, pulse: Pulse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MixerControl, "switchable", property(lambda self: False))
    async with volume_node(run_node, window_min=10) as (_, p, topic):
        await command(p, topic, "40", percent_is(40))
        state = await command(p, topic, "mute", percent_is(40, True))
        assert state["raw"] == 0
        assert pulse.raw() == [0, 0]
        assert not pulse.muted()  # the switch was never touched
        await command(p, topic, "+5", percent_is(45, True))
        assert pulse.raw() == [0, 0]
        await command(p, topic, "unmute", percent_is(45, False))
        assert pulse.raw() == [raw_of(45, raw_of(10), FULL)] * 2
        # Someone turning a parked control up unmutes it.
        await command(p, topic, "mute", percent_is(45, True))
        mark = p.mark()
        pulse.set(raw_of(10 + 90 * 0.3))
        await p.wait_for(topic, percent_is(30, False), after=mark)


# Changes made by others ----------------------------------------------------------------------------
async def test_changes_by_other_programs_are_republished(run_node: NodeFactory, pulse: Pulse) -> None:
    async with volume_node(run_node) as (_, p, topic):
        await command(p, topic, "50", percent_is(50))
        mark = p.mark()
        await amixer("sset", "Master", "30%")
        await p.wait_for(topic, percent_is(30), after=mark)
        mark = p.mark()
        pulse.set(raw_of(70))  # another pyalsaaudio client
        await p.wait_for(topic, percent_is(70, False), after=mark)
        mark = p.mark()
        await amixer("sset", "Master", "mute")
        await p.wait_for(topic, percent_is(70, True), after=mark)
        # Commands carry on from what the mixer holds now.
        await command(p, topic, "+5", percent_is(75, True))
        assert pulse.raw() == [raw_of(75)] * 2


# Persistence ---------------------------------------------------------------------------------------
async def test_last_volume_is_restored_at_start(run_node: NodeFactory, pulse: Pulse, tmp_path: Path) -> None:
    data = tmp_path / "persist"
    async with volume_node(run_node, data_dir=data) as (_, p, topic):
        await command(p, topic, "40", percent_is(40))
        await command(p, topic, "mute", percent_is(40, True))
        # Stopped right away: the coalesced save must not be lost with the process.
    stored = Store(data).load("volume").file
    assert stored.data == {"percent": 40, "muted": True}
    pulse.set(raw_of(90))
    async with volume_node(run_node, data_dir=data) as (_, p, topic):
        assert p.on(topic)[0].json()["percent"] == 40
        assert p.on(topic)[0].json()["muted"] is True
        assert pulse.raw() == [raw_of(40)] * 2
        assert pulse.muted()
    async with volume_node(run_node, data_dir=data, startup="fixed", startup_percent=25) as (_, p, topic):
        assert p.on(topic)[0].json()["percent"] == 25
        assert p.on(topic)[0].json()["muted"] is False
        assert pulse.raw() == [raw_of(25)] * 2


# Bursts --------------------------------------------------------------------------------------------
async def test_a_burst_converges_exactly_with_fewer_publishes(run_node: NodeFactory, pulse: Pulse) -> None:
    async with volume_node(run_node) as (r, p, topic):
        await command(p, topic, "0", percent_is(0))
        store = r.node.runners[1].store
        saves: list[StoredFile] = []
        original = store.save

        def counting(name: str, stored: StoredFile) -> None:
            saves.append(stored)
            original(name, stored)

        store.save = counting  # type: ignore[method-assign]
        mark = p.mark()
        # QoS 0 without waiting for acknowledgements: as fast as a knob or a script can send.
        for _ in range(100):
            await p.client.publish(f"{topic}/set", "+1", qos=0)
        sent = time.monotonic()
        await p.wait_for(topic, percent_is(100), after=mark)
        latency = time.monotonic() - sent
        await p.quiet(topic, after=p.mark(), probe_topic=f"{r.base}/test/flush")
        published = [g.json()["percent"] for g in p.on(topic, mark)]
        assert published[-1] == 100
        assert published == sorted(published)  # never an older value after a newer one
        assert len(published) < 50, published
        assert pulse.raw() == [FULL, FULL]
        assert len(saves) <= 1  # saved after a short delay, not once per command
        # Generous for a loaded CI machine; `python -m bench.volume` measures the real figure.
        assert latency < 0.5


async def test_commands_in_one_burst_build_on_each_other(run_node: NodeFactory, pulse: Pulse) -> None:
    async with volume_node(run_node) as (r, p, topic):
        await command(p, topic, "50", percent_is(50, False))
        mark = p.mark()
        for payload in ("mute", "toggle_mute", "toggle_mute", "+3", "-1", "+3"):
            await p.client.publish(f"{topic}/set", payload, qos=0)
        await p.wait_for(topic, percent_is(55, True), after=mark)
        await p.quiet(topic, after=p.mark(), probe_topic=f"{r.base}/test/flush")
        assert p.on(topic)[-1].json()["muted"] is True
        assert pulse.raw() == [raw_of(55)] * 2
        assert pulse.muted()


# Multiroom -----------------------------------------------------------------------------------------
def clients(*rows: tuple[str, int, bool, bool]) -> dict[str, Any]:
    return {
        "enabled": True,
        "clients": [
            {"id": cid, "name": cid, "volume": v, "muted": m, "connected": c, "latency": 0}
            for cid, v, m, c in rows
        ],
    }


async def test_multiroom_master_is_the_mean_and_moves_every_client(
    run_node: NodeFactory, pulse: Pulse
) -> None:
    async with volume_node(run_node) as (r, p, topic):
        await command(p, topic, "35", percent_is(35))
        client_sets = f"{r.base}/multiroom/client/+/set"
        await p.subscribe(client_sets)
        state = [
            ("a", 40, False, True),
            ("b", 60, False, True),
            ("c", 90, True, True),
            ("d", 10, False, False),
        ]
        await p.publish(f"{r.base}/multiroom", clients(*state), retain=True)
        mark = p.mark()
        await p.publish(f"{r.base}/routing", {"multiroom": True, "equalizer": False}, retain=True)
        # The mean of the connected, unmuted clients (a, b); the muted c and disconnected d do not count.
        await p.wait_for(topic, lambda g: g.json()["multiroom"] and g.json()["percent"] == 50, after=mark)

        def sets_after(mark: int) -> dict[str, Any]:
            return {
                g.topic.split("/")[-2]: json.loads(g.payload)
                for g in p.seen[mark:]
                if g.topic.startswith(f"{r.base}/multiroom/client/")
            }

        mark = p.mark()
        await command(p, topic, "+10", percent_is(60))
        await p.wait_for(f"{r.base}/multiroom/client/c/set", after=mark)
        assert sets_after(mark) == {"a": {"volume": 50}, "b": {"volume": 70}, "c": {"volume": 100}}
        assert pulse.raw() == [raw_of(35)] * 2  # the local mixer is a client's business now
        # The multiroom subsystem confirms: nothing moves, nothing is sent again.
        mark = p.mark()
        confirmed = [
            ("a", 50, False, True),
            ("b", 70, False, True),
            ("c", 100, True, True),
            ("d", 10, False, False),
        ]
        await p.publish(f"{r.base}/multiroom", clients(*confirmed), retain=True)
        await p.quiet(f"{r.base}/multiroom/client/a/set", after=mark, probe_topic=f"{r.base}/test/flush")
        assert all(g.json()["percent"] == 60 for g in p.on(topic, mark))

        mark = p.mark()
        await command(p, topic, '{"percent": 30}', percent_is(30))
        await p.wait_for(f"{r.base}/multiroom/client/c/set", after=mark)
        assert sets_after(mark) == {"a": {"volume": 20}, "b": {"volume": 40}, "c": {"volume": 70}}
        mark = p.mark()
        await command(p, topic, "mute", percent_is(30, True))
        await p.wait_for(f"{r.base}/multiroom/client/b/set", after=mark)
        assert sets_after(mark) == {"a": {"muted": True}, "b": {"muted": True}}

        # Back to one room: the local mixer's volume again.
        mark = p.mark()
        await p.publish(f"{r.base}/routing", {"multiroom": False, "equalizer": False}, retain=True)
        await p.wait_for(topic, lambda g: not g.json()["multiroom"] and g.json()["percent"] == 35, after=mark)


async def test_multiroom_without_connected_clients_refuses_commands(
    run_node: NodeFactory, pulse: Pulse
) -> None:
    async with volume_node(run_node) as (r, p, topic):
        await p.publish(f"{r.base}/multiroom", clients(("a", 40, False, False)), retain=True)
        mark = p.mark()
        await p.publish(f"{r.base}/routing", {"multiroom": True}, retain=True)
        await p.wait_for(topic, lambda g: g.json()["multiroom"], after=mark)
        mark = p.mark()
        await p.publish(f"{topic}/set", "+5")
        assert (await p.wait_for(f"{r.base}/error", after=mark)).json()["code"] == "no_clients"


# Unavailable ---------------------------------------------------------------------------------------
async def test_unavailable_without_a_card_or_a_sound_server(
    run_node: NodeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if alsaaudio.card_indexes():
        pytest.skip("this machine has a sound card")
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-such-socket")
    sections: dict[str, dict[str, Any]] = {"volume": {}}
    async with run_node(subsystems=(Info, Volume), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info", f"{r.base}/error")
        info = (await p.wait_for(f"{r.base}/info", status_of("volume", "unavailable"))).json()
        detail = info["subsystems"]["volume"]["detail"]
        assert "no sound card" in detail
        assert "pulse" in detail
        assert "Connection refused" in detail
        assert info["subsystems"]["info"]["status"] == "running"
        await p.publish(f"{r.base}/volume/set", "40")
        err = (await p.wait_for(f"{r.base}/error")).json()
        assert err["code"] == "unavailable"
        assert "no sound card" in err["error"]


async def test_a_configured_control_that_cannot_open_is_unavailable_with_the_reason(
    run_node: NodeFactory, pulse: Pulse
) -> None:
    sections = {"volume": {"device": "pulse", "control": "Digital"}}
    async with run_node(subsystems=(Info, Volume), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info")
        info = (await p.wait_for(f"{r.base}/info", status_of("volume", "unavailable"))).json()
        assert "'Digital' on 'pulse'" in info["subsystems"]["volume"]["detail"]


async def test_unavailable_without_any_sound_server_never_loads_the_pulse_plugin(
    run_node: NodeFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if alsaaudio.card_indexes():
        pytest.skip("this machine has a sound card")
    monkeypatch.delenv("PULSE_SERVER", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no pulse/native socket there
    async with run_node(subsystems=(Info, Volume), sections={"volume": {}}) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info")
        info = (await p.wait_for(f"{r.base}/info", status_of("volume", "unavailable"))).json()
        detail = info["subsystems"]["volume"]["detail"]
        assert "no sound card" in detail
        assert "no sound server" in detail
        assert "Connection refused" not in detail  # the plug-in was not even tried


async def test_losing_the_sound_server_makes_it_unavailable_not_the_node(
    run_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pulse() as own:  # its own server: this one is killed
        monkeypatch.setenv("PULSE_SERVER", own.server)
        sections = {"volume": PULSE}
        async with run_node(subsystems=(Info, Volume), sections=sections) as r, probe(r.port) as p:
            await p.subscribe(f"{r.base}/info", f"{r.base}/error")
            await p.wait_for(f"{r.base}/info", status_of("volume", "running"))
            mark = p.mark()
            stop_pulse(own)
            # Seen through the mixer's event descriptor, not by polling.
            err = await p.wait_for(f"{r.base}/error", lambda g: g.json()["code"] == "crashed", after=mark)
            assert "pulse" in err.json()["error"]
            info = (await p.wait_for(f"{r.base}/info", status_of("volume", "unavailable"), after=mark)).json()
            assert "'Master' on 'pulse'" in info["subsystems"]["volume"]["detail"]
            assert info["subsystems"]["info"]["status"] == "running"
