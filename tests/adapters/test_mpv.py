"""MpvPlayer on real libmpv and a local paced ICY server: titles, pause, failures, retries, device moves."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from harness.alsa_sinks import sink_config, sinks_dir
from harness.audio import peak_hz, read_wav
from harness.icy_server import BITRATE, MISSING, PAGE, TONE_HZ, IcyServer
from node.adapters import alsa
from node.adapters.mpv import MpvPlayer, PlayerOptions, PlayerSnapshot, alsa_device

pytestmark = pytest.mark.timeout(20)

WAIT = 5.0  # seconds for anything mpv does against 127.0.0.1
FAST = PlayerOptions(
    ao="null",
    network_timeout=3,
    start_timeout=3,
    stall_timeout=3,
    retry_first=0.05,
    retry_cap=0.2,
    retry_attempts=3,
)


def state(name: str) -> Callable[[PlayerSnapshot], bool]:
    return lambda s: s.state == name


@pytest.fixture
def server(icy: IcyServer) -> IcyServer:
    """The shared `icy` fixture under the name these tests use."""
    return icy


@pytest.fixture
async def player() -> AsyncIterator[MpvPlayer]:
    p = MpvPlayer(FAST)
    yield p
    await p.close()


def refused_url() -> str:
    """A port nobody listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/stream"


async def test_plays_a_station_with_its_icy_title(player: MpvPlayer, server: IcyServer) -> None:
    seen: list[str] = []
    await player.play(server.url())
    async for snap in player.updates():
        seen.append(snap.state)
        if snap.state == "playing" and snap.title:
            break
        assert snap.state in ("buffering", "playing"), snap
    assert seen[0] == "buffering"
    assert player.snapshot.title == "Artist One - Song A"
    assert player.snapshot.url == server.url()
    assert (player.snapshot.error, player.snapshot.retries) == (None, 0)
    server.title = "Artist Two - Song B"
    snap = await player.wait_for(lambda s: s.title == "Artist Two - Song B", WAIT)
    assert snap.state == "playing"
    assert server.connections == 1


async def test_pause_resume_and_stop(player: MpvPlayer, server: IcyServer) -> None:
    await player.play(server.url())
    await player.wait_for(state("playing"), WAIT)
    await player.pause()
    await player.wait_for(state("paused"), WAIT)
    await player.resume()
    await player.wait_for(state("playing"), WAIT)
    await player.stop()
    snap = await player.wait_for(state("idle"), WAIT)
    assert (snap.url, snap.title, snap.error) == (None, None, None)
    assert server.connections == 1


@pytest.mark.parametrize(
    ("path", "reason"),
    [(MISSING, "404"), (PAGE, "format"), (None, "refused")],
    ids=["http-404", "html-page", "connection-refused"],
)
async def test_a_broken_station_ends_in_error(
    player: MpvPlayer, server: IcyServer, path: str | None, reason: str
) -> None:
    url = server.url(path) if path else refused_url()
    await player.play(url)
    snap = await player.wait_for(state("error"), WAIT)
    assert snap.error is not None
    # mpv may log the cause (e.g. the HTTP status) just after reporting the error.
    snap = await player.wait_for(lambda s: reason in (s.error or "").lower(), WAIT)
    assert snap.state == "error"
    assert (snap.url, snap.retries) == (url, 0)
    # Still usable afterwards.
    await player.play(server.url())
    snap = await player.wait_for(state("playing"), WAIT)
    assert snap.error is None


async def test_no_audio_in_time_is_an_error(server: IcyServer) -> None:
    # The server accepts the connection and never answers, so only the start timeout ends it.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        p = MpvPlayer(PlayerOptions(ao="null", start_timeout=1, network_timeout=10))
        try:
            await p.play(f"http://127.0.0.1:{silent.getsockname()[1]}/stream")
            snap = await p.wait_for(state("error"), WAIT)
            assert snap.error is not None
            assert "no audio within 1 s" in snap.error
        finally:
            await p.close()


async def test_a_dropped_stream_is_reconnected(player: MpvPlayer, server: IcyServer) -> None:
    # Two seconds of audio, once: mpv plays it, hits the end, and must come back on its own.
    server.drop(after_bytes=2 * BITRATE // 8, times=1)
    await player.play(server.url())
    await player.wait_for(state("playing"), WAIT)
    snap = await player.wait_for(lambda s: s.retries == 1, WAIT)
    assert snap.state == "buffering"
    await server.wait_connections(2)
    snap = await player.wait_for(state("playing"), WAIT)
    assert (snap.retries, snap.error, snap.title) == (1, None, "Artist One - Song A")


async def test_a_stream_that_keeps_dropping_ends_in_error(player: MpvPlayer, server: IcyServer) -> None:
    server.drop(after_bytes=BITRATE // 8)
    await player.play(server.url())
    await player.wait_for(state("playing"), WAIT)
    snap = await player.wait_for(state("error"), 3 * WAIT)
    assert snap.retries == FAST.retry_attempts
    assert snap.error is not None
    assert "gave up after 3 reconnects" in snap.error
    assert server.connections == 1 + FAST.retry_attempts


@pytest.fixture
def asound(tmp_path: Path) -> Iterator[Path]:
    """The router's asound.conf with WAV file sinks, visible to alsa-lib in this process."""
    out = sinks_dir(tmp_path)
    cfg = sink_config(out)
    plan = alsa.AsoundPlan(
        eq_controls=(tmp_path / "alsaequal.bin").resolve(),
        sources=tuple(cfg["loopback_pcms"]),
        card=alsa.CardSettings(name=cfg["card"], dmix=False, pcm=cfg["output_pcm"]),
        loopback=alsa.LoopbackSettings(pcm=cfg["loopback_pcms"]),
        extra=cfg["extra"],
    )
    conf = tmp_path / "asound.conf"
    conf.write_text(alsa.render_asound(plan))
    old = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{conf}"
    try:
        yield out
    finally:
        if old is None:
            os.environ.pop("ALSA_CONFIG_PATH", None)
        else:
            os.environ["ALSA_CONFIG_PATH"] = old


async def test_moving_the_device_keeps_the_stream(asound: Path, server: IcyServer) -> None:
    # A paced network stream into the unpaced file sinks: the server sets the pace (never a local file).
    direct, multiroom = alsa.pcm_name("radio", "direct"), alsa.pcm_name("radio", "multiroom")
    p = MpvPlayer(PlayerOptions(ao="alsa", audio_device=alsa_device(direct), start_timeout=5))
    try:
        await p.play(server.url())
        await p.wait_for(state("playing"), WAIT)
        first = asound / "direct.wav"
        # Another second of the stream leaving the server is the clock for each sink to be fed.
        await server.wait_sent(server.sent + BITRATE // 8)
        await p.set_audio_device(alsa_device(multiroom))
        moved = asound / "loop_radio.wav"
        await server.wait_sent(server.sent + BITRATE // 8)
        snap = await p.wait_for(state("playing"), WAIT)
        assert snap.title == "Artist One - Song A"
        await p.stop()
        await p.wait_for(state("idle"), WAIT)
    finally:
        await p.close()
    assert server.connections == 1
    for wav in (first, moved):
        samples, rate = read_wav(wav)
        assert len(samples) > rate // 10, wav
        assert abs(peak_hz(samples, rate) - TONE_HZ) < 20, wav


async def test_mpv_follows_no_redirect_itself(player: MpvPlayer, server: IcyServer) -> None:
    # The node follows redirects, checking each hop (radio/playlists.py); mpv, which would connect
    # wherever a station points it, is told to follow none.
    server.redirects["/moved"] = server.url()
    await player.play(server.url("/moved"))
    snap = await player.wait_for(state("error"), WAIT * 2)
    assert snap.error
    assert server.connections == 0
    assert ("GET", "/stream") not in server.requests
