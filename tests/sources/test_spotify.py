"""The `spotify` source on a real node, driving the fake go-librespot (harness/) the node starts itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import go_librespot
from harness.alsa_sinks import sink_config, sinks_dir
from harness.icy_server import IcyServer
from harness.net import free_port
from harness.pulse import Pulse
from node.adapters.http_client import http_request
from node.adapters.librespot import LibrespotSettings, render_config
from node.framework.subsystem import Subsystem
from node.sources.radio import Radio
from node.sources.spotify import Spotify, VolumeLink, spotify_uri
from node.subsystems.info import Info
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from node.subsystems.volume import Volume
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, probe

pytestmark = pytest.mark.timeout(60)

ALBUM = "spotify:album:4aawyAB9vmqN3uQ7FjRGTy"
TRACK = "spotify:track:6rqhFgbbKwnb9MLmUQDhG6"
BACK_WITHIN_S = 5.0
PATHS_SENT = ("/player/resume", "/player/pause", "/player/playpause")


@dataclass
class Phone:
    """The test's side of the fake go-librespot: what a phone does, and what the daemon was asked."""

    port: int

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        response = await http_request(method, f"http://127.0.0.1:{self.port}{path}", body=data, timeout=5)
        return response.status, (response.json() if response.body.strip() else None)

    async def do(self, path: str, body: dict[str, Any] | None = None) -> None:
        status, _ = await self.call("POST", f"/_fake/{path}", body or {})
        assert status == 200, path

    async def log(self) -> dict[str, Any]:
        status, log = await self.call("GET", "/_fake/log")
        assert status == 200
        result: dict[str, Any] = log
        return result

    async def requests(self, path: str) -> list[dict[str, Any]]:
        return [r for r in (await self.log())["requests"] if r["path"] == path]


def section(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """A spotify section whose binary is the fake, on a port of its own, without idle disconnect."""
    fake = go_librespot.install(tmp_path / "bin")
    return {"binary": str(fake), "port": free_port(), "idle_disconnect_s": 0, **extra}


def state_is(name: str, extra: Callable[[dict[str, Any]], bool] = lambda s: True) -> Callable[[Got], bool]:
    return lambda g: bool(g.payload) and g.json()["state"] == name and extra(g.json())


@contextlib.asynccontextmanager
async def spotify_node(
    run_node: NodeFactory,
    tmp_path: Path,
    kind: str = "embedded",
    *,
    subsystems: tuple[type[Subsystem[Any, Any]], ...] = (Info, Routing, Spotify),
    sections: dict[str, dict[str, Any]] | None = None,
    **spotify: Any,
) -> AsyncIterator[tuple[Running, Probe, Phone]]:
    merged = {"routing": sink_config(sinks_dir(tmp_path)), "spotify": section(tmp_path, **spotify)}
    merged.update(sections or {})
    async with run_node(kind, subsystems=subsystems, sections=merged) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        yield r, p, Phone(merged["spotify"]["port"])


def device_is(pcm: str) -> Callable[[Got], bool]:
    return lambda g: bool(g.payload) and g.json()["device"] == pcm


async def send(p: Probe, topic: str, payload: Any) -> int:
    mark = p.mark()
    await p.publish(topic, payload if isinstance(payload, str | bytes) else json.dumps(payload))
    return mark


async def error_for(p: Probe, base: str, mark: int, code: str) -> dict[str, Any]:
    got = await p.wait_for(f"{base}/error", lambda g: g.json()["code"] == code, after=mark)
    result: dict[str, Any] = got.json()
    return result


async def playing(p: Probe, base: str, phone: Phone, **transfer: Any) -> dict[str, Any]:
    """The phone transfers playback to the speaker: the source's state once it plays."""
    mark = p.mark()
    await phone.do("transfer", {"uri": ALBUM, **transfer})
    wanted = "paused" if transfer.get("paused") else "playing"
    got = await p.wait_for(
        f"{base}/source/spotify", state_is(wanted, lambda s: s["title"] is not None), after=mark
    )
    result: dict[str, Any] = got.json()
    return result


# Pure parts --------------------------------------------------------------------------------------------
def test_uri_forms() -> None:
    assert spotify_uri(TRACK) == TRACK
    assert spotify_uri("spotify:user:alice:collection") == "spotify:user:alice:collection"
    link = "https://open.spotify.com/intl-fr/album/4aawyAB9vmqN3uQ7FjRGTy?si=abc123"
    assert spotify_uri(link) == ALBUM
    for bad in ("spotify:track:short", "spotify:banana:4aawyAB9vmqN3uQ7FjRGTy", "https://example.com/a", ""):
        assert spotify_uri(bad) is None, bad


def test_the_config_file_is_yaml_with_what_the_node_decides() -> None:
    text = render_config(
        LibrespotSettings(device_name='Salon: "Pi" #1', audio_device="milo_spotify_direct", port=3999)
    )
    config = yaml.safe_load(text)
    assert config["device_name"] == 'Salon: "Pi" #1'
    assert config["audio_device"] == "milo_spotify_direct"
    assert config["server"] == {"enabled": True, "address": "127.0.0.1", "port": 3999, "image_size": "large"}
    assert (config["external_volume"], config["zeroconf_enabled"]) == (True, True)
    assert config["credentials"]["type"] == "zeroconf"
    assert set(config) <= go_librespot.KNOWN_KEYS


def test_volume_link_drops_echoes_even_late_ones() -> None:
    now = [0.0]
    link = VolumeLink(clock=lambda: now[0])
    link.node_is(30)  # no session yet
    assert link.session_started(100) == 30  # the node's volume wins at the start of a session
    assert link.from_spotify(30) is None  # its echo
    # The phone's slider dragged 31..35: each goes to the node once; the node answers 31, then 35.
    assert [link.from_spotify(v) for v in range(31, 36)] == [31, 32, 33, 34, 35]
    assert link.from_node(31) is None
    assert link.from_node(35) is None  # answers 32-34 were coalesced away: settled too
    # The knob turns the node's volume: one post; its echo, and a late one, go nowhere.
    assert link.from_node(50) == 50
    assert link.from_node(51) == 51
    assert link.from_spotify(50) is None
    assert link.from_spotify(51) is None
    # limit_max clamps the phone's 100 to 80: the phone is told 80, and that is the end of it.
    assert link.from_spotify(100) == 100
    assert link.from_node(80) == 80
    assert link.from_spotify(80) is None
    now[0] += 10  # an echo that never came back is forgotten
    assert link.from_spotify(64) == 64


# The daemon ------------------------------------------------------------------------------------------
async def test_a_missing_binary_is_unavailable_with_the_install_hint(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    sections = {"spotify": {"binary": str(tmp_path / "nowhere" / "go-librespot")}}
    async with run_node(subsystems=(Info, Spotify), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/source/spotify", f"{r.base}/error")
        got = await p.wait_for(f"{r.base}/source/spotify", state_is("unavailable"))
        assert "not found" in got.json()["error"]
        assert "github.com/devgianlu/go-librespot" in got.json()["error"]
        assert r.node.board.entries["spotify"][0].value == "unavailable"
        mark = await send(p, f"{r.base}/source/spotify/set", {"play": ALBUM})
        err = await error_for(p, r.base, mark, "unavailable")
        assert "go-librespot not found" in err["error"]


async def test_the_node_starts_it_with_a_rendered_config_and_it_is_discoverable(
    run_node: NodeFactory, broker_kind: str, tmp_path: Path
) -> None:
    async with spotify_node(run_node, tmp_path, broker_kind) as (r, p, phone):
        got = await p.wait_for(f"{r.base}/source/spotify", state_is("idle"))
        state = got.json()
        assert state["device_name"] == r.node.config.node_id
        assert state["device"] == "milo_spotify_direct"
        assert state["commands"] == []
        log = await phone.log()
        config = log["config"]
        assert config["device_name"] == r.node.config.node_id
        assert config["server"]["port"] == phone.port
        assert config["external_volume"] is True
        # Started before routing spoke: the PCM that follows the mode; the file now names the direct one.
        assert config["audio_device"] == "milo_spotify"
        written = yaml.safe_load((r.node.config.data_dir / "spotify" / "config.yml").read_text())
        assert written["audio_device"] == "milo_spotify_direct"
        assert log["ws_clients"] == 1
        # Nothing but the events stream and status reads: no polling.
        assert {q["path"] for q in log["requests"]} <= {"/status", "/player/output"}


async def test_a_phone_session_shows_track_position_and_commands(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    async with spotify_node(run_node, tmp_path) as (r, p, phone):
        await p.wait_for(f"{r.base}/source/spotify", state_is("idle"))
        before = int(time.time() * 1000)
        state = await playing(p, r.base, phone, username="alice", position=12_000)
        assert state["user"] == "alice"
        assert state["title"].startswith("Song ")
        assert state["artists"][1] == "Guest Singer"
        assert state["artist"] == ", ".join(state["artists"])
        assert state["album"].startswith("Album ")
        assert state["cover_url"].startswith("https://i.scdn.co/image/")
        assert state["uri"].startswith("spotify:track:")
        assert state["duration_ms"] > 150_000
        assert 12_000 <= state["position_ms"] < 14_000
        assert before <= state["position_at"] <= int(time.time() * 1000)
        assert state["commands"] == ["pause", "toggle", "stop", "next", "previous", "seek"]
        # The session's first state: the output moved to routing's PCM (the daemon started on milo_spotify).
        assert [json.loads(q["body"]) for q in await phone.requests("/player/output")] == [
            {"device": "milo_spotify_direct"}
        ]
        mark = p.mark()
        await phone.do("pause")
        paused = (await p.wait_for(f"{r.base}/source/spotify", state_is("paused"), after=mark)).json()
        assert paused["commands"] == ["play", "toggle", "stop", "next", "previous", "seek"]
        assert paused["position_ms"] >= state["position_ms"]
        # Paused, nothing moves: no further state until something happens.
        await p.quiet(f"{r.base}/source/spotify", after=p.mark(), probe_topic=f"{r.base}/test/flush")
        mark = p.mark()
        await phone.do("disconnect")
        idle = (await p.wait_for(f"{r.base}/source/spotify", state_is("idle"), after=mark)).json()
        assert (idle["user"], idle["title"], idle["position_ms"], idle["commands"]) == (None, None, None, [])


async def test_commands_reach_go_librespot(run_node: NodeFactory, tmp_path: Path) -> None:
    async with spotify_node(run_node, tmp_path) as (r, p, phone):
        base, topic = r.base, f"{r.base}/source/spotify"
        await p.wait_for(topic, state_is("idle"))
        first = await playing(p, base, phone)
        mark = await send(p, f"{topic}/set", "pause")
        await p.wait_for(topic, state_is("paused"), after=mark)
        mark = await send(p, f"{topic}/set", "toggle")
        await p.wait_for(topic, state_is("playing"), after=mark)
        mark = await send(p, f"{topic}/set", "next")
        second = await p.wait_for(topic, lambda g: g.json()["uri"] not in (None, first["uri"]), after=mark)
        mark = await send(p, f"{topic}/set", {"seek_ms": 60_000})
        await p.wait_for(topic, lambda g: 60_000 <= (g.json()["position_ms"] or 0) < 62_000, after=mark)
        mark = await send(p, f"{topic}/set", "previous")  # past 3 s: back to the start of the track
        await p.wait_for(topic, lambda g: (g.json()["position_ms"] or 0) < 2_000, after=mark)
        assert p.on(topic)[-1].json()["uri"] == second.json()["uri"]
        mark = await send(p, f"{topic}/set", {"shuffle": True})
        await p.wait_for(topic, lambda g: g.json()["shuffle"] is True, after=mark)
        mark = await send(p, f"{topic}/set", {"repeat": "track"})
        await p.wait_for(topic, lambda g: g.json()["repeat"] == "track", after=mark)
        link = "https://open.spotify.com/track/6rqhFgbbKwnb9MLmUQDhG6?si=x"
        mark = await send(p, f"{topic}/set", link)  # a share link, as plain text
        await p.wait_for(topic, lambda g: g.json()["uri"] == TRACK, after=mark)
        plays = await phone.requests("/player/play")
        assert json.loads(plays[-1]["body"]) == {"uri": TRACK, "paused": False}
        paths = [q["path"] for q in (await phone.log())["requests"]]
        for path in ("/player/pause", "/player/playpause", "/player/next", "/player/seek", "/player/prev",
                     "/player/shuffle_context", "/player/repeat_track"):  # fmt: skip
            assert path in paths
        mark = await send(p, f"{topic}/set", "stop")  # with zeroconf: the session is logged out
        await p.wait_for(topic, state_is("idle"), after=mark)


async def test_a_pause_right_after_a_play_is_not_judged_by_the_old_state(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    """go-librespot says what it did on /events after its 200: taps quicker than that still count."""
    async with spotify_node(run_node, tmp_path) as (r, p, phone):
        base, topic = r.base, f"{r.base}/source/spotify"
        await p.wait_for(topic, state_is("idle"))
        await playing(p, base, phone, paused=True)
        await phone.do("event_lag", {"ms": 300})
        mark = p.mark()
        for command in ("play", "pause", "toggle", "toggle"):  # playing, paused, playing, paused
            await p.publish(f"{topic}/set", command)
        wanted = ["/player/resume", "/player/pause", "/player/playpause", "/player/playpause"]

        async def sent() -> list[str]:
            return [q["path"] for q in (await phone.log())["requests"] if q["path"] in PATHS_SENT]

        async with asyncio.timeout(5):  # what no message announces: the daemon's own log of requests
            while (paths := await sent())[-4:] != wanted:
                errors = [g.payload for g in p.on(f"{base}/error", after=mark)]
                assert not errors, (errors, paths)
                await asyncio.sleep(0.02)
        assert [g.json()["code"] for g in p.on(f"{base}/error", after=mark)] == []
        _, status = await phone.call("GET", "/status")
        assert status["paused"] is True
        await p.wait_for(topic, state_is("paused"))  # and the node's state says so once events came


async def test_bad_commands_get_coded_errors(run_node: NodeFactory, tmp_path: Path) -> None:
    async with spotify_node(run_node, tmp_path) as (r, p, phone):
        base, topic = r.base, f"{r.base}/source/spotify/set"
        await p.wait_for(f"{base}/source/spotify", state_is("idle"))
        mark = await send(p, topic, {"play": ALBUM})  # nobody picked the speaker yet
        await error_for(p, base, mark, "no_session")
        mark = await send(p, topic, "pause")
        await error_for(p, base, mark, "no_session")
        state = await playing(p, base, phone)
        cases = {
            json.dumps({"seek_ms": -5}): "invalid_payload",
            json.dumps({"play": "spotify:banana:4aawyAB9vmqN3uQ7FjRGTy"}): "invalid_uri",
            "spotify:track:tooshort": "invalid_uri",
            json.dumps({"play": ALBUM, "skip_to": "track 3"}): "invalid_uri",
            json.dumps({"play": "spotify:album:" + go_librespot.UNRESOLVABLE}): "spotify_error",
            json.dumps({"seek_ms": state["duration_ms"] + 1}): "out_of_range",
            "play": "unsupported",  # playing already
            "dance": "invalid_payload",
        }
        for payload, code in cases.items():
            mark = await send(p, topic, payload)
            err = await error_for(p, base, mark, code)
            assert err["topic"] == topic and err["error"]
        assert p.on(f"{base}/source/spotify")[-1].json()["state"] == "playing"


async def test_routing_moves_the_session_without_restarting_it(
    run_node: NodeFactory, broker_kind: str, tmp_path: Path
) -> None:
    async with spotify_node(run_node, tmp_path, broker_kind) as (r, p, phone):
        base, topic = r.base, f"{r.base}/source/spotify"
        await p.wait_for(topic, state_is("idle"))
        state = await playing(p, base, phone)
        pid = (await phone.log())["pid"]
        moves = [
            ({"equalizer": True}, "milo_spotify_direct_eq"),
            ({"multiroom": True}, "milo_spotify_multiroom_eq"),
            ({"equalizer": False}, "milo_spotify_multiroom"),
            ({"multiroom": False}, "milo_spotify_direct"),
        ]
        for command, pcm in moves:
            mark = await send(p, f"{base}/routing/set", command)
            await p.wait_for(topic, device_is(pcm), after=mark)
        log = await phone.log()
        outputs = [json.loads(q["body"])["device"] for q in log["requests"] if q["path"] == "/player/output"]
        assert outputs == ["milo_spotify_direct", *(pcm for _, pcm in moves)]
        assert log["output"] == "milo_spotify_direct"
        # The same process, the same session, the same track, still playing where it was.
        assert (log["pid"], log["sessions"], log["session"]) == (pid, 1, "alice")
        assert [q for q in log["requests"] if q["path"] == "/player/play"] == []
        assert [e["type"] for e in log["events"]].count("playback_ready") == 1
        now = p.on(topic)[-1].json()
        assert (now["state"], now["uri"], now["restarts"]) == ("playing", state["uri"], 0)
        assert now["position_ms"] >= state["position_ms"]
        # A restart later would open the current PCM too.
        written = yaml.safe_load((r.node.config.data_dir / "spotify" / "config.yml").read_text())
        assert written["audio_device"] == "milo_spotify_direct"


async def test_a_dead_daemon_is_started_again_and_the_source_is_back_within_5_s(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    async with spotify_node(run_node, tmp_path) as (r, p, phone):
        topic = f"{r.base}/source/spotify"
        await p.wait_for(topic, state_is("idle"))
        await playing(p, r.base, phone)
        pid = (await phone.log())["pid"]
        mark = p.mark()
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        down = await p.wait_for(
            topic, state_is("unavailable", lambda s: "SIGKILL" in (s["error"] or "")), after=mark
        )
        assert down.json()["restarts"] == 1
        assert down.json()["title"] is None  # nothing stale is shown as playing
        await p.wait_for(topic, state_is("idle"), after=mark, timeout=BACK_WITHIN_S)
        back = time.monotonic() - killed
        print(f"go-librespot killed -> source idle again: {back * 1000:.0f} ms")
        assert back < BACK_WITHIN_S
        log = await phone.log()
        assert log["pid"] != pid
        assert log["config"]["audio_device"] == "milo_spotify_direct"  # restarted on routing's PCM
        await playing(p, r.base, phone)  # and a phone can pick it again


async def test_under_systemd_the_node_only_connects(run_node: NodeFactory, tmp_path: Path) -> None:
    """`manage = "systemd"`: go-librespot.service runs it; the node writes its config and waits for it."""
    port = free_port()
    spotify_dir = tmp_path / "unit-dir"
    sections = {
        "routing": sink_config(sinks_dir(tmp_path)),
        "spotify": {
            "manage": "systemd",
            "port": port,
            "config_dir": str(spotify_dir),
            "start_timeout_s": 0.2,
        },
    }
    async with run_node(subsystems=(Info, Routing, Spotify), sections=sections) as r, probe(r.port) as p:
        topic = f"{r.base}/source/spotify"
        await p.subscribe(topic)
        down = await p.wait_for(topic, state_is("unavailable"))
        assert f"127.0.0.1:{port}" in down.json()["error"]
        assert (spotify_dir / "config.yml").exists()
        # What the unit would run, on the config the node wrote.
        unit = await asyncio.create_subprocess_exec(
            str(go_librespot.install(tmp_path / "bin")), "--config_dir", str(spotify_dir)
        )
        try:
            await p.wait_for(topic, state_is("idle"), timeout=BACK_WITHIN_S)
            assert r.node.board.entries["spotify"][0].value == "running"
        finally:
            unit.terminate()
            await unit.wait()
        await p.wait_for(topic, state_is("unavailable"))


async def test_the_device_name_changes_live(run_node: NodeFactory, tmp_path: Path) -> None:
    async with spotify_node(run_node, tmp_path) as (r, p, phone):
        topic = f"{r.base}/source/spotify"
        await p.wait_for(topic, state_is("idle"))
        pid = (await phone.log())["pid"]
        mark = await send(p, f"{topic}/config/set", {"device_name": "Kitchen"})
        await p.wait_for(topic, lambda g: g.json()["device_name"] == "Kitchen", after=mark)
        names = [json.loads(q["body"]) for q in await phone.requests("/set_device_name")]
        assert names == [{"name": "Kitchen"}]
        assert (await phone.log())["pid"] == pid
        written = yaml.safe_load((r.node.config.data_dir / "spotify" / "config.yml").read_text())
        assert written["device_name"] == "Kitchen"


async def test_an_idle_session_is_logged_out(run_node: NodeFactory, tmp_path: Path) -> None:
    async with spotify_node(run_node, tmp_path, idle_disconnect_s=0.3) as (r, p, phone):
        topic = f"{r.base}/source/spotify"
        await p.wait_for(topic, state_is("idle"))
        await playing(p, r.base, phone)
        mark = p.mark()
        await phone.do("pause")
        await p.wait_for(topic, state_is("paused"), after=mark)
        await p.wait_for(topic, state_is("idle"), after=mark)
        log = await phone.log()
        assert log["session"] is None
        assert log["requests"][-1]["path"] in ("/player/stop", "/status")
        assert await phone.requests("/player/stop")


# Volume ------------------------------------------------------------------------------------------------
# The node's one volume on the test PulseAudio's `Master` (the `pulse` fixture).
WITH_VOLUME: dict[str, Any] = {
    "subsystems": (Info, Routing, Volume, Spotify),
    "sections": {"volume": {"device": "pulse", "control": "Master"}},
}


async def volume_is(p: Probe, base: str, percent: int, after: int) -> None:
    await p.wait_for(f"{base}/volume", lambda g: g.json()["percent"] == percent, after=after)


async def test_spotify_and_node_volumes_follow_each_other_without_a_loop(
    run_node: NodeFactory, tmp_path: Path, pulse: Pulse
) -> None:
    async with spotify_node(run_node, tmp_path, **WITH_VOLUME) as (r, p, phone):
        base, topic = r.base, f"{r.base}/source/spotify"
        await p.wait_for(topic, state_is("idle"))
        mark = await send(p, f"{base}/volume/set", "30")
        await volume_is(p, base, 30, mark)
        # A session starts: the phone is told the node's volume.
        state = await playing(p, base, phone)
        await p.wait_for(topic, lambda g: g.json()["volume"] == 30)
        assert (await phone.log())["volume"] == 30
        assert state["state"] == "playing"

        # The phone's slider: the node's volume follows; nothing goes back to the phone.
        posts = len(await phone.requests("/player/volume"))
        mark = p.mark()
        await phone.do("volume", {"value": 45})
        await volume_is(p, base, 45, mark)
        assert [g.json() for g in p.on(f"{base}/volume/set", mark)] == [{"percent": 45}]
        # A drag: every step goes to the node once, and the node ends where the phone ended.
        for value in range(46, 56):
            await phone.do("volume", {"value": value})
        await volume_is(p, base, 55, mark)
        await p.quiet(f"{base}/volume/set", after=p.mark(), probe_topic=f"{base}/test/flush")
        assert len(await phone.requests("/player/volume")) == posts

        # The node's volume (the knob, the UI): the phone follows; its echo is not sent back.
        mark = await send(p, f"{base}/volume/set", "20")
        await p.wait_for(f"{base}/volume/set", lambda g: g.payload == b"20", after=mark)
        own = p.mark()  # what comes on volume/set from here on is not this test's
        await p.wait_for(topic, lambda g: g.json()["volume"] == 20, after=mark)
        assert [json.loads(q["body"]) for q in await phone.requests("/player/volume")][-1] == {"volume": 20}
        await p.quiet(f"{base}/volume/set", after=own, probe_topic=f"{base}/test/flush")
        settled = p.mark()
        await p.quiet(f"{base}/volume", after=settled, probe_topic=f"{base}/test/flush")
        assert len(await phone.requests("/player/volume")) == posts + 1
        assert p.on(f"{base}/volume")[-1].json()["percent"] == 20


async def test_with_the_volume_policy_ignore_the_phone_slider_does_nothing(
    run_node: NodeFactory, tmp_path: Path, pulse: Pulse
) -> None:
    async with spotify_node(run_node, tmp_path, **WITH_VOLUME, volume="ignore") as (r, p, phone):
        base, topic = r.base, f"{r.base}/source/spotify"
        await p.wait_for(topic, state_is("idle"))
        await playing(p, base, phone)
        mark = p.mark()
        await phone.do("volume", {"value": 12})
        await p.wait_for(topic, lambda g: g.json()["volume"] == 12, after=mark)
        await p.quiet(f"{base}/volume/set", after=mark, probe_topic=f"{base}/test/flush")
        await send(p, f"{base}/volume/set", "70")
        await volume_is(p, base, 70, mark)
        assert await phone.requests("/player/volume") == []


# The player --------------------------------------------------------------------------------------------
async def test_a_phone_starting_spotify_while_the_radio_plays_takes_over(
    run_node: NodeFactory, tmp_path: Path, icy: IcyServer
) -> None:
    radio = {"ao": "null", "audio_device": "auto", "allow_private_urls": True, "index_first_delay_s": 3600}
    node: dict[str, Any] = {
        "subsystems": (Info, Routing, Spotify, Radio, Player),
        "sections": {"radio": radio},
    }
    async with spotify_node(run_node, tmp_path, **node) as (r, p, phone):
        base = r.base
        await p.wait_for(f"{base}/source/spotify", state_is("idle"))
        mark = await send(p, f"{base}/source/radio/set", icy.url())
        await p.wait_for(f"{base}/player", lambda g: g.json()["active"] == "radio", after=mark)
        await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
        mark = p.mark()
        await phone.do("transfer", {"uri": ALBUM})
        player = await p.wait_for(
            f"{base}/player",
            lambda g: g.json()["active"] == "spotify" and g.json()["state"] == "playing",
            after=mark,
        )
        assert player.json()["title"].startswith("Song ")
        assert player.json()["commands"] == ["pause", "toggle", "stop", "next", "previous", "seek"]
        await p.wait_for(f"{base}/source/radio", state_is("paused"), after=mark)
        # The player's commands reach go-librespot.
        mark = await send(p, f"{base}/player/set", {"seek_ms": 30_000})
        await p.wait_for(
            f"{base}/player", lambda g: 30_000 <= (g.json()["position_ms"] or 0) < 32_000, after=mark
        )
        mark = await send(p, f"{base}/player/set", "pause")
        await p.wait_for(f"{base}/player", lambda g: g.json()["state"] == "paused", after=mark)
