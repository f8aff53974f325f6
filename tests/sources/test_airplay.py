"""The `airplay` source: the real shairport-sync on a private Avahi, a fake sender, its pipe's format."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.alsa_sinks import sink_config, sinks_dir
from harness.net import free_port
from harness.shairport import (
    ACTIVE_REMOTE,
    DACP_ID,
    DacpServer,
    PipeWriter,
    RaopSender,
    encode_item,
    fake_program,
    mdns_missing,
    private_mdns,
    publish_dacp,
)
from node import registry
from node.adapters import shairport
from node.adapters.shairport import Item, MetadataParser, ShairportSettings, progress_ms, render_config
from node.sources import Source
from node.sources.airplay import Airplay, Session
from node.subsystems.info import Info
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from tests.conftest import NodeFactory, Running
from tests.helpers import Probe, probe
from tests.http.test_server import image

pytestmark = pytest.mark.timeout(60)

REAL = shutil.which("shairport-sync")
needs_real = pytest.mark.skipif(REAL is None, reason="shairport-sync is not installed (system-deps.sh)")
WAIT = 8.0
JPEG = image("JPEG", (64, 48), mode="RGB", color=(10, 120, 200))
# A sink that filled up would mean shairport-sync wrote audio nobody paced: it never should here.
SINK_CAP = 1024 * 1024


# The pipe's format ---------------------------------------------------------------------------------


def sample_items() -> list[tuple[str, str, bytes]]:
    return [
        ("ssnc", "snam", "Anna's iPhone ü".encode()),
        ("ssnc", "pbeg", b""),
        ("core", "minm", b"Song"),
        ("ssnc", "PICT", bytes(range(256)) * 40),  # several base64 pieces of 76 characters
        ("ssnc", "prgr", b"1000/45100/8821000"),
    ]


def test_the_parser_reads_items_whatever_the_chunking() -> None:
    stream = b"".join(encode_item(*i) for i in sample_items())
    expected = [Item(*i) for i in sample_items()]
    for size in (1, 3, 7, 64, 4096, len(stream)):
        parser = MetadataParser()
        got: list[Item] = []
        for start in range(0, len(stream), size):
            got += parser.feed(stream[start : start + size])
        assert got == expected, size
        assert parser.dropped == 0


def test_a_damaged_item_is_dropped_and_the_next_one_read() -> None:
    whole = encode_item("core", "minm", b"Second")
    cut = encode_item("ssnc", "PICT", b"x" * 500)[:120]  # a write cut short by a full pipe
    wrong_length = encode_item("core", "asar", b"abc").replace(b"<length>3<", b"<length>4<")
    parser = MetadataParser()
    got = parser.feed(b"garbage" + cut + whole + wrong_length + whole)
    assert got == [Item("core", "minm", b"Second")] * 2
    assert parser.dropped == 2


def test_an_item_larger_than_the_cap_is_skipped_without_being_kept() -> None:
    parser = MetadataParser(max_item_bytes=1000)
    big = encode_item("ssnc", "PICT", b"y" * 5000)
    got: list[Item] = []
    for start in range(0, len(big), 500):
        got += parser.feed(big[start : start + 500])
        assert len(parser._buf) < 3000  # never the whole item in memory
    got += parser.feed(encode_item("core", "minm", b"After"))
    assert got == [Item("core", "minm", b"After")]
    assert parser.dropped == 1


def test_progress_is_rtp_frames_at_44_1_khz_and_wraps() -> None:
    assert progress_ms("1000/45100/8821000") == (1000, 200_000)
    start = 2**32 - 44100
    assert progress_ms(f"{start}/{44100}/{88200 * 10}") == (2000, 21_000)
    assert progress_ms("nonsense") is None


def test_a_session_folds_what_a_sender_causes() -> None:
    now = [100.0]
    s = Session(clock=lambda: now[0])
    parser = MetadataParser()

    def feed(kind: str, code: str, data: str | bytes = b"") -> set[str]:
        raw = data.encode() if isinstance(data, str) else data
        (item,) = parser.feed(encode_item(kind, code, raw))
        return set(s.apply(item))

    feed("ssnc", "snam", "Anna's iPhone")
    assert (s.status, s.sender) == ("connected", "Anna's iPhone")
    for code, value in (("acre", ACTIVE_REMOTE), ("daid", DACP_ID), ("clip", "192.0.2.7")):
        feed("ssnc", code, value)
    assert s.remote() is None  # no DACP port known yet
    feed("ssnc", "pbeg")
    assert feed("ssnc", "pfls", "0") == set()  # the flush after RECORD is no pause
    assert s.status == "buffering"
    feed("ssnc", "mdst", "7")
    assert feed("core", "minm", "Song") == set()  # held until the set is complete
    feed("core", "asar", "Artist")
    feed("ssnc", "mden", "7")
    assert (s.track.title, s.track.artist) == ("Song", "Artist")
    feed("ssnc", "pcst", "7")
    assert feed("ssnc", "PICT", JPEG) == {"cover"}
    feed("ssnc", "prgr", "0/441000/8820000")
    feed("ssnc", "prsm")
    assert (s.status, s.position_ms(), s.track.duration_ms) == ("playing", 10_000, 200_000)
    now[0] += 2.5
    assert s.position_ms() == 12_500
    feed("ssnc", "pfls", "99")
    now[0] += 60
    assert (s.status, s.position_ms()) == ("paused", 12_500)
    feed("ssnc", "dapo", "3689")
    remote = s.remote()
    assert remote is not None and (remote.address, remote.port, remote.active_remote) == (
        "192.0.2.7",
        3689,
        ACTIVE_REMOTE,
    )
    # Another track without its picture yet: the old cover goes.
    feed("ssnc", "mdst", "8")
    feed("core", "minm", "Next")
    assert "cover" in feed("ssnc", "mden", "8")
    assert s.cover is None
    assert feed("ssnc", "pend") == {"state"}
    assert (s.status, s.sender, s.track.title) == ("idle", None, None)
    # The same sender again: its DACP port is not announced twice, and is still known.
    for code, value in (("snam", "Anna's iPhone"), ("acre", "1"), ("daid", DACP_ID), ("clip", "192.0.2.7")):
        feed("ssnc", code, value)
    assert s.remote() is not None


def test_the_config_names_what_the_node_decides_and_quotes_names() -> None:
    text = render_config(
        ShairportSettings(name='Kitchen "AirPlay" \\ ü\n', pipe=Path("/data/airplay/metadata"), port=5005)
    )
    assert 'name = "Kitchen \\"AirPlay\\" \\\\ ü ";' in text
    assert 'pipe_name = "/data/airplay/metadata";' in text
    assert "port = 5005;" in text
    assert 'output_device = "default";' in text


def test_its_loopback_subdevice_moves_none_of_the_pinned_ones() -> None:
    """With the sources that pin 0-3 registered beside it, airplay takes 4 and they keep theirs."""

    def pinned(source_name: str, sub: int) -> type[Source[Any, Any]]:
        return type(f"Pinned_{source_name}", (Airplay,), {"name": source_name, "loopback": sub})

    others = [pinned("spotify", 2), pinned("bluetooth", 0), pinned("roc", 1)]
    radio = next(cls for cls in registry.SOURCES if cls.name == "radio")
    specs = {s.name: s.subdevice for s in registry.source_specs([*others[:2], Airplay, others[2], radio])}
    assert specs == {"spotify": 2, "bluetooth": 0, "airplay": 4, "roc": 1, "radio": 3}
    registered = {s.name: s.subdevice for s in registry.source_specs()}
    assert registered["radio"] == 3
    assert Airplay.loopback is None


# The real binary, on its own -------------------------------------------------------------------------


@needs_real
async def test_the_real_binary_has_the_build_options_the_source_needs() -> None:
    assert REAL is not None
    info = await shairport.build_info(REAL)
    print(f"shairport-sync -V: {info.version} {sorted(info.options)}")
    assert info.version.startswith("3.")
    assert {"metadata", "avahi", "alsa"} <= info.options


@needs_real
def test_the_real_binary_reads_the_config_the_node_renders(tmp_path: Path) -> None:
    """It lists every setting it read with -vv, then stops for want of Avahi: the check needs no more."""
    assert REAL is not None
    conf = tmp_path / "sps.conf"
    pipe = tmp_path / "meta"
    port = free_port()
    settings = ShairportSettings(name="Milo Test ü", pipe=pipe, port=port, output_device="milo_airplay")
    conf.write_text(render_config(settings))
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}"}
    done = subprocess.run(
        [REAL, "-c", str(conf), "-u", "-vv"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    log = done.stderr
    assert f'configuration file name "{conf}"' in log
    assert 'player name is "Milo Test ü"' in log
    assert f"rtsp listening port is {port}." in log
    assert 'output device name is "milo_airplay"' in log
    assert f'metadata pipename is "{pipe}"' in log
    assert "get-coverart is 1" in log
    assert 'disable_standby_mode is "never"' in log
    assert "Could not establish mDNS advertisement" in log and done.returncode != 0
    assert pipe.is_fifo()  # it made the FIFO before it gave up


# On a node ---------------------------------------------------------------------------------------


def airplay_section(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Milo Test",
        "port": free_port(),
        "udp_port_base": free_port(),
        "restart_first_s": 0.05,
        "restart_cap_s": 0.2,
        "remote_timeout_s": 2.0,
        **extra,
    }


@contextlib.asynccontextmanager
async def airplay_node(
    run_node: NodeFactory, tmp_path: Path, *, player: bool = False, **section: Any
) -> AsyncIterator[tuple[Running, Probe]]:
    subsystems: list[Any] = [Info, Routing, Airplay, *([Player] if player else [])]
    sections = {"routing": sink_config(sinks_dir(tmp_path)), "airplay": airplay_section(**section)}
    async with run_node(subsystems=subsystems, sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        yield r, p
        # Nothing paced ever wrote audio: no sink grew beyond its WAV header.
        for wav in sinks_dir(tmp_path).glob("*.wav"):
            assert wav.stat().st_size < SINK_CAP, wav


def state(p: Probe, r: Running, where: Any = lambda s: True, *, after: int = 0) -> Any:
    return p.wait_for(f"{r.base}/source/airplay", lambda g: where(g.json()), after=after, timeout=WAIT)


def pipe_of(r: Running) -> Path:
    return r.node.config.data_dir / "airplay" / "metadata"


async def test_a_missing_binary_is_unavailable_with_how_to_install_it(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    async with airplay_node(run_node, tmp_path, program=str(tmp_path / "no-such-shairport-sync")) as (r, p):
        got = (await state(p, r, lambda s: s["state"] == "unavailable")).json()
        assert "not installed (apt install shairport-sync)" in got["error"]
        assert r.node.board.entries["airplay"][0].value == "unavailable"


@needs_real
async def test_a_failed_start_is_unavailable_with_its_reason(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No Avahi on this bus: the real shairport-sync exits at once, saying why.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    async with airplay_node(run_node, tmp_path) as (r, p):
        got = (await state(p, r, lambda s: s["state"] == "unavailable")).json()
        assert "Could not establish mDNS advertisement" in got["error"], got
        status, detail = r.node.board.entries["airplay"]
        assert status.value == "unavailable" and "mDNS" in detail


@dataclass
class Mdns:
    env: dict[str, str]


@pytest.fixture(scope="module")
def mdns_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mdns]:
    missing = mdns_missing() or (None if REAL else "shairport-sync is not installed")
    if missing:
        pytest.skip(missing)
    try:
        with private_mdns(tmp_path_factory.mktemp("mdns")) as env:
            yield Mdns(env)
    except RuntimeError as exc:  # another Avahi holds /run/avahi-daemon and this is no root
        pytest.skip(str(exc))


@pytest.fixture
def mdns(mdns_env: Mdns, monkeypatch: pytest.MonkeyPatch) -> Mdns:
    """The private bus with Avahi, chosen for the programs the node starts (shairport-sync)."""
    for key, value in mdns_env.env.items():
        monkeypatch.setenv(key, value)
    return mdns_env


async def test_a_sender_plays_with_its_metadata_cover_and_remote_control(
    run_node: NodeFactory, tmp_path: Path, mdns: Mdns
) -> None:
    """Real shairport-sync, a sender on RTSP, its remote control announced through the private Avahi."""
    dacp = DacpServer()
    await dacp.start()
    async with airplay_node(run_node, tmp_path, player=True) as (r, p):
        idle = (await state(p, r, lambda s: s["state"] == "idle")).json()
        assert (idle["name"], idle["version"], idle["commands"]) == ("Milo Test", "3.3.8", [])
        assert idle["device"] == "milo_airplay_direct"  # the PCM routing assigns
        conf = (r.node.config.data_dir / "airplay" / "shairport-sync.conf").read_text()
        assert 'output_device = "milo_airplay";' in conf  # the alias: every reopen follows routing
        sender = RaopSender(int(airplay_config(r)["port"]))
        await sender.connect()
        got = (await state(p, r, lambda s: s["state"] == "buffering")).json()
        assert (got["sender"], got["sender_address"], got["user_agent"]) == (
            "Test iPhone",
            "127.0.0.1",
            "AirPlay/381.13",
        )
        assert (got["remote"], got["commands"]) == (False, ["stop"])
        await sender.metadata("Blue in Green", "Miles Davis", "Kind of Blue", duration_ms=337_000)
        await sender.cover(JPEG)
        await sender.progress(1000, 1000 + 44100 * 30, 1000 + 44100 * 337)
        await sender.volume(-12.5)
        complete = lambda s: s["cover_url"] and s["position_ms"] == 30_000 and s["volume_db"] == -12.5  # noqa: E731
        got = (await state(p, r, complete)).json()
        assert (got["title"], got["artist"], got["album"]) == ("Blue in Green", "Miles Davis", "Kind of Blue")
        assert (got["duration_ms"], got["volume_db"]) == (337_000, -12.5)
        cover = r.node.config.data_dir / got["cover_url"].removeprefix("/")
        assert got["cover_url"].startswith("/logos/") and cover.read_bytes().startswith(b"\x89PNG")
        # Audio flowing is what only real packets cause: the pipe's own writer says it.
        writer = PipeWriter(pipe_of(r))
        mark = p.mark()
        writer.ssnc("prsm")
        await state(p, r, lambda s: s["state"] == "playing", after=mark)
        player = await p.wait_for(f"{r.base}/player", lambda g: g.json()["state"] == "playing", timeout=WAIT)
        assert (player.json()["active"], player.json()["title"]) == ("airplay", "Blue in Green")
        # The sender's remote control is found through mDNS, as a phone announces it.
        async with publish_dacp(DACP_ID, dacp.port, mdns.env):
            got = (await state(p, r, lambda s: s["remote"])).json()
            assert got["commands"] == ["pause", "toggle", "next", "previous", "stop"]
            await p.publish(f"{r.base}/player/set", "pause")
            await dacp.wait_for("pause")
            await p.publish(f"{r.base}/source/airplay/set", "next")
            await dacp.wait_for("pause", "nextitem")
            # The sender pauses (a flush): paused, its position kept.
            mark = p.mark()
            await sender.flush()
            got = (await state(p, r, lambda s: s["state"] == "paused", after=mark)).json()
            assert got["commands"][0] == "play" and got["position_ms"] >= 30_000
            assert dacp.refused == 0
        mark = p.mark()
        await sender.teardown()
        got = (await state(p, r, lambda s: s["state"] == "idle", after=mark)).json()
        assert (got["sender"], got["title"], got["cover_url"], got["commands"]) == (None, None, None, [])
        writer.close()
    await dacp.stop()


def airplay_config(r: Running) -> dict[str, Any]:
    return dict(r.node.config.subsystems["airplay"])


async def test_a_routing_change_while_playing_moves_by_pause_and_resume(
    run_node: NodeFactory, tmp_path: Path, mdns: Mdns
) -> None:
    dacp = DacpServer()
    await dacp.start()
    async with airplay_node(run_node, tmp_path) as (r, p), publish_dacp(DACP_ID, dacp.port, mdns.env):
        await state(p, r, lambda s: s["state"] == "idle")
        pid = running_pid(r)
        sender = await connected(p, r, RaopSender(int(airplay_config(r)["port"])))
        writer = PipeWriter(pipe_of(r))
        writer.ssnc("prsm")
        await state(p, r, lambda s: s["state"] == "playing" and s["remote"])
        mark = p.mark()
        await p.publish(f"{r.base}/routing/set", {"multiroom": True})
        await state(p, r, lambda s: s["device"] == "milo_airplay_multiroom", after=mark)
        # The sender is asked to pause; its flush closes the device, then it is asked to play again.
        await dacp.wait_for("pause")
        await sender.flush()
        await dacp.wait_for("pause", "play")
        assert running_pid(r) == pid  # no restart: the session stayed
        await sender.teardown()
        writer.close()
    await dacp.stop()


async def test_without_remote_control_a_move_while_playing_restarts_it(
    run_node: NodeFactory, tmp_path: Path, mdns: Mdns
) -> None:
    async with airplay_node(run_node, tmp_path) as (r, p):
        await state(p, r, lambda s: s["state"] == "idle")
        pid = running_pid(r)
        sender = await connected(p, r, RaopSender(int(airplay_config(r)["port"]), dacp_id="77777777"))
        writer = PipeWriter(pipe_of(r))
        writer.ssnc("prsm")
        await state(p, r, lambda s: s["state"] == "playing" and not s["remote"])
        mark = p.mark()
        await p.publish(f"{r.base}/routing/set", {"equalizer": True})
        got = (await state(p, r, lambda s: s["state"] == "idle", after=mark)).json()
        assert got["device"] == "milo_airplay_direct_eq" and got["sender"] is None
        assert running_pid(r) not in (None, pid)
        await sender.close()
        writer.close()


async def connected(p: Probe, r: Running, sender: RaopSender) -> RaopSender:
    """The sender has connected and every item that caused has been read.

    shairport-sync writes its items from a queue of its own: a volume change sent last and seen
    in the state means the RECORD's flush has been read too, before the test writes into the pipe.
    """
    await sender.connect()
    await sender.volume(-10.0)
    await state(p, r, lambda s: s["state"] == "buffering" and s["volume_db"] == -10.0)
    return sender


def running_pid(r: Running) -> int | None:
    runner = next(x for x in r.node.runners if x.name == "airplay")
    instance = runner.instance
    assert isinstance(instance, Airplay)
    return instance._process.pid if instance._process is not None else None


async def test_stop_ends_the_session_and_a_killed_daemon_comes_back(
    run_node: NodeFactory, tmp_path: Path, mdns: Mdns
) -> None:
    async with airplay_node(run_node, tmp_path) as (r, p):
        await state(p, r, lambda s: s["state"] == "idle")
        sender = RaopSender(int(airplay_config(r)["port"]))
        await sender.connect()
        await state(p, r, lambda s: s["state"] == "buffering")
        mark = p.mark()
        await p.publish(f"{r.base}/source/airplay/set", "stop")
        await state(p, r, lambda s: s["state"] == "idle", after=mark)
        await sender.close()
        # Killed behind the node's back: said, then started again within the backoff.
        pid = running_pid(r)
        assert pid is not None
        mark = p.mark()
        os.kill(pid, 9)
        down = await state(p, r, lambda s: s["state"] == "unavailable", after=mark)
        assert "signal 9" in down.json()["error"] and "restarting in" in down.json()["error"]
        await state(p, r, lambda s: s["state"] == "idle", after=mark)
        assert running_pid(r) not in (None, pid)
        assert r.node.board.entries["airplay"][0].value == "running"


# The stand-in daemon: what the source does wherever the real one cannot run ----------------------


async def test_with_the_stand_in_daemon_a_sender_takes_over_from_the_radio_player(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    program = fake_program(tmp_path / "bin")
    async with airplay_node(run_node, tmp_path, player=True, program=str(program)) as (r, p):
        await state(p, r, lambda s: s["state"] == "idle")
        writer = PipeWriter(pipe_of(r))
        writer.session("Bob's Mac")
        writer.track("So What", "Miles Davis", "Kind of Blue")
        writer.cover(JPEG)
        writer.ssnc("prgr", "0/0/24255000")
        writer.ssnc("prsm")
        shown = lambda g: g.json()["title"] == "So What" and g.json()["cover_url"]  # noqa: E731
        player = await p.wait_for(f"{r.base}/player", shown, timeout=WAIT)
        assert (player.json()["active"], player.json()["state"]) == ("airplay", "playing")
        assert player.json()["duration_ms"] == 550_000
        # Without remote control the player can only stop it; pause is refused with a reason.
        await p.publish(f"{r.base}/player/set", "pause")
        err = await p.wait_for(f"{r.base}/error", timeout=WAIT)
        assert err.json()["code"] == "unsupported"
        writer.ssnc("pend")
        await state(p, r, lambda s: s["state"] == "idle" and s["title"] is None)
        writer.close()


async def test_old_covers_are_removed_and_only_its_own(run_node: NodeFactory, tmp_path: Path) -> None:
    program = fake_program(tmp_path / "bin")
    logos = tmp_path / "data" / "logos"
    logos.mkdir(parents=True)
    uploaded = logos / ("ab" * 16 + ".png")
    uploaded.write_bytes(b"a station logo")
    async with airplay_node(run_node, tmp_path, program=str(program), covers_kept=2) as (r, p):
        await state(p, r, lambda s: s["state"] == "idle")
        writer = PipeWriter(pipe_of(r))
        writer.session()
        urls: list[str] = []
        for n in range(4):
            mark = p.mark()
            writer.cover(image("PNG", (8, 8), color=(n * 40, 0, 0, 255)), rtptime=str(n))
            got = await state(p, r, lambda s, n=n: s["cover_url"] not in (None, *urls), after=mark)
            urls.append(got.json()["cover_url"])
        kept = sorted(x.name for x in logos.iterdir())
        assert kept == sorted([uploaded.name, *(u.removeprefix("/logos/") for u in urls[-2:])])
        writer.close()


async def test_under_systemd_it_restarts_the_unit_instead_of_starting_a_child(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A systemctl that records its calls stands in for systemd, which this machine does not run."""
    bin_dir = tmp_path / "bin"
    program = fake_program(bin_dir)
    calls = tmp_path / "systemctl.log"
    # Inactive until restarted, as a unit that never ran.
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "$@" >> "{calls}"\n'
        f'case "$1" in is-active) grep -q "^restart" "{calls}" ;; *) exit 0 ;; esac\n'
    )
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    async with airplay_node(run_node, tmp_path, service="systemd", program=str(program)) as (r, p):
        await state(p, r, lambda s: s["state"] == "idle")
        # A new config file: the unit is restarted to read it (an unchanged one running is left alone).
        assert calls.read_text().splitlines() == ["restart shairport-sync.service"]
        assert running_pid(r) is None  # no child of the node
        writer = PipeWriter(pipe_of(r))  # the node made the FIFO the unit's daemon writes
        writer.session()
        await state(p, r, lambda s: s["state"] == "buffering")
        mark = p.mark()
        await p.publish(f"{r.base}/source/airplay/set", "stop")
        await state(p, r, lambda s: s["state"] == "idle", after=mark)
        assert calls.read_text().splitlines()[-1] == "restart shairport-sync.service"
        writer.close()
