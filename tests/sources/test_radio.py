"""The `radio` source on a real node: real libmpv, a local paced ICY server and a fake Radio Browser."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from harness.alsa_sinks import sink_config, sinks_dir
from harness.icy_server import BITRATE, MISSING, IcyServer
from harness.radio_browser import FakeRadioBrowser, station
from node.sources.radio import Radio, playlist_entries
from node.subsystems.info import Info
from node.subsystems.routing import Routing
from tests.adapters.test_mpv import refused_url
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, probe
from tests.http.test_server import image, raw, request, upload

pytestmark = pytest.mark.timeout(40)

WAIT = 8.0
JAZZ_ID = "96062a7b-0601-11e8-ae97-52543be04c81"
ROCK_ID = "11111111-2222-3333-4444-555555555555"


def fast(**extra: Any) -> dict[str, Any]:
    """A radio section for tests: null audio, short timeouts, loopback streams allowed."""
    return {
        "ao": "null",
        "audio_device": "auto",
        "allow_private_urls": True,
        "network_timeout_s": 3,
        "start_timeout_s": 3,
        "stall_timeout_s": 3,
        "retry_first_s": 0.05,
        "retry_cap_s": 0.2,
        "retry_attempts": 2,
        "index_first_delay_s": 3600,
        **extra,
    }


def directory_stations(icy: IcyServer) -> list[dict[str, Any]]:
    return [
        station(stationuuid=JAZZ_ID, name="Jazz Corner", tags="jazz,smooth jazz", countrycode="FR",
                language="french", url_resolved=icy.url(), votes=50, clickcount=0),
        station(stationuuid=ROCK_ID, name="Rock Antenne", tags="rock", countrycode="DE",
                url_resolved=icy.url(), votes=40, clickcount=0),
        station(name="Jazz Lounge", tags="jazz", countrycode="DE", votes=10),
    ]  # fmt: skip


def has_station(sid: str) -> Callable[[Got], bool]:
    return lambda g: sid in [x["id"] for x in g.json()["stations"]]


def state_is(name: str, extra: Callable[[dict[str, Any]], bool] = lambda s: True) -> Callable[[Got], bool]:
    return lambda g: g.json()["state"] == name and extra(g.json())


@contextlib.asynccontextmanager
async def radio_node(
    run_node: NodeFactory, kind: str = "embedded", data_dir: Path | None = None, **section: Any
) -> AsyncIterator[tuple[Running, Probe, str]]:
    async with (
        run_node(kind, subsystems=(Info, Radio), sections={"radio": fast(**section)}, data_dir=data_dir) as r,
        probe(r.port) as p,
    ):
        await p.subscribe(f"{r.base}/source/radio", f"{r.base}/radio/#", f"{r.base}/error")
        await p.wait_for(f"{r.base}/source/radio")
        yield r, p, r.base


async def send(p: Probe, topic: str, payload: Any) -> int:
    mark = p.mark()
    await p.publish(topic, payload if isinstance(payload, str | bytes) else json.dumps(payload))
    return mark


async def error_for(p: Probe, base: str, mark: int, code: str) -> dict[str, Any]:
    got = await p.wait_for(f"{base}/error", lambda g: g.json()["code"] == code, after=mark)
    result: dict[str, Any] = got.json()
    return result


async def add_custom(p: Probe, base: str, **fields: Any) -> dict[str, Any]:
    mark = await send(p, f"{base}/radio/custom/set", {"add": fields})
    got = await p.wait_for(
        f"{base}/radio/custom",
        lambda g: any(s["name"] == fields["name"] for s in g.json()["stations"]),
        after=mark,
    )
    found: dict[str, Any] = next(s for s in got.json()["stations"] if s["name"] == fields["name"])
    return found


# Playing ----------------------------------------------------------------------------------------
async def test_a_custom_station_plays_with_its_icy_title(
    run_node: NodeFactory, broker_kind: str, icy: IcyServer
) -> None:
    async with radio_node(run_node, broker_kind) as (_, p, base):
        custom = await add_custom(p, base, name="My Stream", url=icy.url(), country="fr", genre="test")
        assert custom["id"].startswith("custom-")
        assert (custom["country"], custom["custom"]) == ("FR", True)
        mark = await send(p, f"{base}/source/radio/set", {"play": custom["id"]})
        await p.wait_for(f"{base}/source/radio", state_is("buffering"), after=mark)
        got = await p.wait_for(
            f"{base}/source/radio", state_is("playing", lambda s: s["artist"] is not None), after=mark
        )
        radio = got.json()
        assert (radio["artist"], radio["title"], radio["album"]) == ("Artist One", "Song A", "My Stream")
        assert radio["stream_title"] == "Artist One - Song A"
        assert radio["station"]["id"] == custom["id"]
        assert {"pause", "stop", "toggle"} <= set(radio["commands"])
        icy.title = "Artist Two - Song B"
        await p.wait_for(f"{base}/source/radio", lambda g: g.json()["title"] == "Song B", after=mark)
        mark = await send(p, f"{base}/source/radio/set", "pause")
        await p.wait_for(f"{base}/source/radio", state_is("paused"), after=mark)
        mark = await send(p, f"{base}/source/radio/set", "toggle")
        await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
        mark = await send(p, f"{base}/source/radio/set", "stop")
        idle = (await p.wait_for(f"{base}/source/radio", state_is("idle"), after=mark)).json()
        # Stopped, the station stays tuned: `play` brings it back.
        assert idle["station"]["id"] == custom["id"]
        assert "play" in idle["commands"]
        assert icy.connections == 1


async def test_play_a_url_and_text_commands(run_node: NodeFactory, icy: IcyServer) -> None:
    async with radio_node(run_node) as (_, p, base):
        mark = await send(p, f"{base}/source/radio/set", icy.url())
        got = await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
        assert got.json()["station"]["url"] == icy.url()
        mark = await send(p, f"{base}/source/radio/set", "sing")
        err = await error_for(p, base, mark, "invalid_payload")
        assert "play" in err["error"]
        mark = await send(p, f"{base}/source/radio/set", {"seek_ms": 1000})
        await error_for(p, base, mark, "unsupported")


async def test_an_unknown_station_and_bad_input_change_nothing(run_node: NodeFactory) -> None:
    async with FakeRadioBrowser([]) as fake, radio_node(run_node, directory_url=fake.url) as (_, p, base):
        before = p.on(f"{base}/source/radio")[-1].payload
        mark = await send(p, f"{base}/source/radio/set", {"play": JAZZ_ID})
        err = await error_for(p, base, mark, "unknown_station")
        assert JAZZ_ID in err["error"]
        for bad, code in (
            ("{not json", "invalid_payload"),
            ({"play": "../../etc"}, "invalid_payload"),
            ({"url": "file:///etc/passwd"}, "invalid_payload"),
            ({"url": "http://127.0.0.1/x"}, None),  # allowed in this config: plays (and fails) later
        ):
            mark = await send(p, f"{base}/source/radio/set", bad)
            if code:
                await error_for(p, base, mark, code)
        mark = await send(p, f"{base}/radio/favorites/set", {"add": "nope-not-a-station"})
        await error_for(p, base, mark, "unknown_station")
        mark = await send(p, f"{base}/radio/custom/set", {"add": {"name": "", "url": "ftp://x"}})
        err = await error_for(p, base, mark, "invalid_payload")
        assert "name" in err["error"] and "url" in err["error"]
        assert p.on(f"{base}/source/radio")[0].payload == before


async def test_private_addresses_are_refused_unless_allowed(run_node: NodeFactory, icy: IcyServer) -> None:
    async with radio_node(run_node, allow_private_urls=False) as (_, p, base):
        mark = await send(p, f"{base}/source/radio/set", {"url": icy.url()})
        err = await error_for(p, base, mark, "unsafe_url")
        assert "127.0.0.1 is a loopback address" in err["error"]
        for url in (
            "http://10.1.2.3/stream",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8000/",
        ):
            mark = await send(p, f"{base}/radio/custom/set", {"add": {"name": "Sneaky", "url": url}})
            await error_for(p, base, mark, "unsafe_url")
        mark = await send(p, f"{base}/radio/custom/get", "")
        custom = await p.wait_for(f"{base}/radio/custom", after=mark)
        assert custom.json()["stations"] == []
        state = p.on(f"{base}/source/radio")[-1].json()
        assert (state["state"], state["station"]) == ("idle", None)
        # A host that does not resolve is not "not allowed": it has its own code.
        mark = await send(p, f"{base}/source/radio/set", {"url": "http://nosuch.invalid/stream"})
        err = await error_for(p, base, mark, "unresolvable_host")
        assert "cannot be resolved" in err["error"]


# Broken stations -----------------------------------------------------------------------------------
async def test_a_station_that_fails_is_marked_broken_hidden_and_reset(
    run_node: NodeFactory, icy: IcyServer
) -> None:
    stations = directory_stations(icy)
    stations[0]["url_resolved"] = icy.url(MISSING)
    async with (
        FakeRadioBrowser(stations) as fake,
        radio_node(run_node, directory_url=fake.url) as (_, p, base),
    ):
        found = await p.request(f"{base}/radio/search", {"query": "jazz"})
        assert sorted(s["name"] for s in found["result"]["stations"]) == ["Jazz Corner", "Jazz Lounge"]
        mark = await send(p, f"{base}/source/radio/set", {"play": JAZZ_ID})
        failed = await p.wait_for(f"{base}/source/radio", state_is("error"), after=mark)
        assert failed.json()["error"]
        broken = await p.wait_for(
            f"{base}/radio/broken", lambda g: JAZZ_ID in g.json()["stations"], after=mark
        )
        entry = broken.json()["stations"][JAZZ_ID]
        assert entry["name"] == "Jazz Corner"
        assert entry["reason"]
        found = await p.request(f"{base}/radio/search", {"query": "jazz"})
        assert [s["name"] for s in found["result"]["stations"]] == ["Jazz Lounge"]
        mark = await send(p, f"{base}/radio/broken/set", {"reset": JAZZ_ID})
        await p.wait_for(f"{base}/radio/broken", lambda g: g.json()["stations"] == {}, after=mark)
        found = await p.request(f"{base}/radio/search", {"query": "jazz"})
        assert len(found["result"]["stations"]) == 2
        mark = await send(p, f"{base}/radio/broken/set", {"reset": JAZZ_ID})
        await error_for(p, base, mark, "unknown_station")


async def test_a_refused_connection_marks_broken_and_a_later_play_clears_it(
    run_node: NodeFactory, icy: IcyServer
) -> None:
    async with radio_node(run_node) as (_, p, base):
        dead = refused_url()
        custom = await add_custom(p, base, name="Flaky", url=dead)
        mark = await send(p, f"{base}/source/radio/set", {"play": custom["id"]})
        await p.wait_for(f"{base}/radio/broken", lambda g: custom["id"] in g.json()["stations"], after=mark)
        mark = await send(p, f"{base}/radio/custom/set", {"update": {"id": custom["id"], "url": icy.url()}})
        await p.wait_for(
            f"{base}/radio/custom", lambda g: g.json()["stations"][0]["url"] == icy.url(), after=mark
        )
        mark = await send(p, f"{base}/source/radio/set", {"play": custom["id"]})
        await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
        await p.wait_for(f"{base}/radio/broken", lambda g: g.json()["stations"] == {}, after=mark)


# Directory, favorites, index -----------------------------------------------------------------------
async def test_search_click_counting_and_favorites_survive_a_restart_offline(
    run_node: NodeFactory, icy: IcyServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with FakeRadioBrowser(directory_stations(icy)) as fake:
        async with radio_node(run_node, directory_url=fake.url, data_dir=data) as (_, p, base):
            reply = await p.request(f"{base}/radio/search", {"tag": "jazz", "country": "fr", "limit": 5})
            assert reply["ok"] is True
            result = reply["result"]
            assert result["source"] == "directory"
            assert [s["name"] for s in result["stations"]] == ["Jazz Corner"]
            assert result["stations"][0]["genre"] == "jazz, smooth jazz"
            sent = fake.requests[-1]
            assert sent.params["countrycode"] == "FR" and sent.params["tag"] == "jazz"
            assert sent.params["hidebroken"] == "true" and sent.params["limit"] == "5"
            assert sent.headers["user-agent"].startswith("Milo/")
            for sid in (JAZZ_ID, ROCK_ID):
                mark = await send(p, f"{base}/radio/favorites/set", sid)
                await p.wait_for(f"{base}/radio/favorites", has_station(sid), after=mark)
            mark = await send(p, f"{base}/source/radio/set", "next")
            got = await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
            assert got.json()["station"]["id"] == JAZZ_ID
            assert got.json()["favorite"] is True
            clicks = [r for r in fake.requests if r.path == f"/json/url/{JAZZ_ID}"]
            assert len(clicks) <= 1  # counted in the background; checked below once it has been sent
            mark = await send(p, f"{base}/radio/favorites/set", {"move": ROCK_ID, "to": 0})
            moved = await p.wait_for(f"{base}/radio/favorites", after=mark)
            assert [s["id"] for s in moved.json()["stations"]] == [ROCK_ID, JAZZ_ID]
            mark = await send(p, f"{base}/source/radio/set", "next")
            got = await p.wait_for(
                f"{base}/source/radio", lambda g: g.json()["station"]["id"] == ROCK_ID, after=mark
            )
        assert any(r.path == f"/json/url/{JAZZ_ID}" for r in fake.requests)
    # The directory is gone now: favorites still play, search says why it cannot answer.
    async with radio_node(run_node, directory_url=refused_url().rsplit("/", 1)[0], data_dir=data) as (
        _,
        p,
        base,
    ):
        favorites = (await p.wait_for(f"{base}/radio/favorites")).json()["stations"]
        assert [s["name"] for s in favorites] == ["Rock Antenne", "Jazz Corner"]
        assert favorites[1]["url"] == icy.url()
        radio = p.on(f"{base}/source/radio")[-1].json()
        assert radio["station"]["id"] == ROCK_ID  # the last station, ready to play
        mark = await send(p, f"{base}/source/radio/set", {"play": JAZZ_ID})
        await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
        reply = await p.request(f"{base}/radio/search", {"query": "jazz"})
        assert reply["ok"] is False
        assert reply["code"] == "directory_unreachable"


async def test_the_local_index_answers_when_the_directory_is_down(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    stations = [
        station(name=f"Station {i}", tags="news" if i % 2 else "jazz", countrycode="IT") for i in range(40)
    ]
    data = tmp_path / "data"
    async with (
        FakeRadioBrowser(stations) as fake,
        radio_node(run_node, directory_url=fake.url, data_dir=data) as (_, p, base),
    ):
        mark = await send(p, f"{base}/radio/index/set", "refresh")
        await p.wait_for(f"{base}/radio/index", lambda g: g.json()["refreshing"], after=mark)
        done = await p.wait_for(
            f"{base}/radio/index",
            lambda g: not g.json()["refreshing"] and g.json()["stations"],
            after=mark,
        )
        assert done.json()["stations"] == 40
        assert done.json()["error"] is None
    async with radio_node(run_node, directory_url=refused_url().rsplit("/", 1)[0], data_dir=data) as (
        _,
        p,
        base,
    ):
        index = (await p.wait_for(f"{base}/radio/index")).json()
        assert index["stations"] == 40
        reply = await p.request(f"{base}/radio/search", {"tag": "jazz", "limit": 5, "offset": 5})
        result = reply["result"]
        assert (result["source"], result["total"], result["offset"]) == ("index", 20, 5)
        assert len(result["stations"]) == 5
        sid = result["stations"][0]["id"]
        mark = await send(p, f"{base}/radio/favorites/set", {"add": sid})
        await p.wait_for(f"{base}/radio/favorites", lambda g: len(g.json()["stations"]) == 1, after=mark)
        mark = await send(p, f"{base}/radio/index/set", "refresh")
        failed = await p.wait_for(f"{base}/radio/index", lambda g: g.json()["error"] is not None, after=mark)
        assert failed.json()["stations"] == 40  # a failed refresh keeps the old index


async def test_search_request_validation(run_node: NodeFactory) -> None:
    async with FakeRadioBrowser([]) as fake, radio_node(run_node, directory_url=fake.url) as (_, p, base):
        for bad in ({"country": "France"}, {"limit": 0}, {"limit": 100000}, {"colour": "red"}):
            reply = await p.request(f"{base}/radio/search", bad)
            assert reply["ok"] is False and reply["code"] == "invalid_payload", bad


# Routing ---------------------------------------------------------------------------------------------
async def test_the_radio_follows_routing_without_reconnecting(
    run_node: NodeFactory, icy: IcyServer, tmp_path: Path
) -> None:
    out = sinks_dir(tmp_path)
    sections = {"routing": sink_config(out), "radio": fast(ao="", audio_device="")}
    async with run_node(subsystems=(Info, Routing, Radio), sections=sections) as r, probe(r.port) as p:
        base = r.base
        await p.subscribe(f"{base}/source/radio", f"{base}/routing", f"{base}/error")
        await p.wait_for(f"{base}/source/radio", lambda g: g.json()["device"] == "alsa/milo_radio_direct")
        mark = await send(p, f"{base}/source/radio/set", {"url": icy.url()})
        await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
        await icy.wait_sent(icy.sent + BITRATE // 8)
        mark = await send(p, f"{base}/routing/set", {"multiroom": True})
        await p.wait_for(
            f"{base}/source/radio", lambda g: g.json()["device"] == "alsa/milo_radio_multiroom", after=mark
        )
        await icy.wait_sent(icy.sent + BITRATE // 8)
        assert p.on(f"{base}/source/radio")[-1].json()["state"] == "playing"
        mark = await send(p, f"{base}/source/radio/set", "stop")
        await p.wait_for(f"{base}/source/radio", state_is("idle"), after=mark)
    assert icy.connections == 1
    for name in ("direct.wav", "loop_radio.wav"):
        assert (out / name).stat().st_size > 48000, name


# Logos ------------------------------------------------------------------------------------------------
async def test_a_logo_uploaded_to_the_node_goes_on_a_custom_station(
    run_node: NodeFactory, icy: IcyServer
) -> None:
    async with radio_node(run_node) as (r, p, base):
        http_port = r.node.http_port
        assert http_port is not None
        mark = await send(
            p,
            f"{base}/radio/custom/set",
            {"add": {"name": "No Logo", "url": icy.url(), "logo": "/logos/" + "0" * 32 + ".png"}},
        )
        await error_for(p, base, mark, "unknown_logo")
        bad = await upload(http_port, b"this is not a picture at all")
        assert (bad.status, json.loads(bad.body)["code"]) == (415, "not_an_image")
        huge = await raw(
            http_port,
            b"POST /api/logos HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n" + b"\0" * 1024,
        )
        assert (huge.status, json.loads(huge.body)["code"]) == (413, "too_large")
        good = await upload(http_port, image("JPEG", (1200, 600), mode="RGB", color=(10, 120, 200)))
        assert good.status == 201, good.body
        logo = json.loads(good.body)["url"]
        custom = await add_custom(p, base, name="With Logo", url=icy.url(), logo=logo)
        assert custom["logo"] == logo
        served = await request(http_port, "GET", logo)
        assert (served.status, served.headers["content-type"]) == (200, "image/png")
        mark = await send(p, f"{base}/source/radio/set", {"play": custom["id"]})
        got = await p.wait_for(f"{base}/source/radio", state_is("buffering"), after=mark)
        assert got.json()["cover_url"] == logo


# Playlists -----------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def playlist_server(body: str) -> AsyncIterator[str]:
    """Serves `body` as a PLS file at /station.pls; yields its URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        data = body.encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: audio/x-scpls\r\nContent-Length: {len(data)}\r\n\r\n"
        writer.write(head.encode() + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/station.pls"
    finally:
        server.close()
        await server.wait_closed()


def test_playlist_entries_of_every_format() -> None:
    assert playlist_entries(
        "[playlist]\nFile1=http://a.example/x\nTitle1=A\nFile2=https://b.example/y\n"
    ) == [
        "http://a.example/x",
        "https://b.example/y",
    ]
    assert playlist_entries("#EXTM3U\n#EXTINF:-1,A\nhttp://c.example:8000/s\nrtsp://d.example/s\n") == [
        "http://c.example:8000/s"
    ]
    assert playlist_entries('<asx><entry><ref href="http://e.example/s"/></entry></asx>') == [
        "http://e.example/s"
    ]
    assert playlist_entries("<trackList><track><location>http://f.example/s</location></track>") == [
        "http://f.example/s"
    ]
    assert playlist_entries("<html>not a playlist</html>") == []


async def test_a_playlist_is_opened_by_the_node_and_its_entry_checked(
    run_node: NodeFactory, icy: IcyServer
) -> None:
    async with radio_node(run_node) as (_, p, base):
        async with playlist_server(f"[playlist]\nNumberOfEntries=1\nFile1={icy.url()}\n") as pls:
            mark = await send(p, f"{base}/source/radio/set", {"url": pls, "name": "Listed"})
            got = await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
            assert got.json()["station"]["url"] == pls
        # An entry no configuration allows (multicast), listed by a server the user may reach.
        async with playlist_server("[playlist]\nFile1=http://224.0.0.1/stream\n") as pls:
            mark = await send(p, f"{base}/source/radio/set", {"url": pls})
            err = await error_for(p, base, mark, "unsafe_url")
            assert "multicast" in err["error"]
        async with playlist_server("nothing to play here") as pls:
            custom = await add_custom(p, base, name="Empty List", url=pls)
            mark = await send(p, f"{base}/source/radio/set", {"play": custom["id"]})
            err = await error_for(p, base, mark, "station_failed")
            assert "no stream URL" in err["error"]
            await p.wait_for(
                f"{base}/radio/broken", lambda g: custom["id"] in g.json()["stations"], after=mark
            )


async def test_a_redirecting_station_is_followed_by_the_node_each_hop_checked(
    run_node: NodeFactory, icy: IcyServer
) -> None:
    icy.redirects = {"/moved": icy.url(), "/away": "http://224.0.0.1/stream"}
    async with radio_node(run_node) as (_, p, base):
        mark = await send(p, f"{base}/source/radio/set", {"url": icy.url("/moved"), "name": "Moved"})
        got = await p.wait_for(f"{base}/source/radio", state_is("playing"), after=mark)
        assert got.json()["station"]["url"] == icy.url("/moved")
        # mpv was handed where the redirect ends; only the node asked the redirecting URL.
        assert [r for r in icy.requests if r[1] == "/moved"] == [("HEAD", "/moved")]
        assert icy.connections == 1
        # A hop to an address no configuration allows is refused before mpv sees it.
        mark = await send(p, f"{base}/source/radio/set", {"url": icy.url("/away")})
        err = await error_for(p, base, mark, "unsafe_url")
        assert "multicast" in err["error"]
    async with radio_node(run_node, allow_private_urls=False) as (_, p, base):
        # And without allow_private_urls, the loopback target is refused (its first hop too).
        mark = await send(p, f"{base}/source/radio/set", {"url": icy.url("/moved")})
        err = await error_for(p, base, mark, "unsafe_url")
        assert "loopback" in err["error"]
