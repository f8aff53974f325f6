"""The Radio Browser client against a local fake: parameters, etiquette, errors, failover, encodings."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from harness.net import free_port
from harness.radio_browser import FakeRadioBrowser, generate_stations, station
from node import __version__
from node.adapters.radiobrowser import (
    RadioBrowser,
    RadioBrowserConnectionError,
    RadioBrowserError,
    RadioBrowserHTTPError,
    RadioBrowserJSONError,
    RadioBrowserResponseError,
    RadioBrowserTimeoutError,
    RadioBrowserTooLargeError,
    Station,
    dedupe,
    discover_servers,
)
from node.framework.errors import DaemonError


@pytest.fixture
async def fake() -> AsyncIterator[FakeRadioBrowser]:
    stations = [
        station(stationuuid="11111111-1111-1111-1111-111111111111", name="Jazz FM", tags="jazz,smooth jazz"),
        station(
            stationuuid="22222222-2222-2222-2222-222222222222", name="Rock Antenne", tags="rock", votes=99
        ),
        station(
            stationuuid="33333333-3333-3333-3333-333333333333", name="Broken", lastcheckok=0, tags="jazz"
        ),
    ]
    async with FakeRadioBrowser(stations) as f:
        yield f


def client(*urls: str, **kw: Any) -> RadioBrowser:
    return RadioBrowser(list(urls), timeout=kw.pop("timeout", 2.0), **kw)


async def test_search_sends_exact_parameters_and_user_agent(fake: FakeRadioBrowser) -> None:
    rb = client(fake.url)
    found = await rb.search(name="jazz", countrycode="de", tag="Jazz", language="German", limit=20, offset=40)
    assert len(fake.requests) == 1
    req = fake.requests[0]
    assert req.method == "GET"
    assert req.path == "/json/stations/search"
    assert req.query == {
        "name": "jazz",
        "countrycode": "DE",
        "tag": "jazz",
        "language": "german",
        "order": "clickcount",
        "reverse": "true",
        "hidebroken": "true",
        "offset": "40",
        "limit": "20",
    }
    assert req.headers["user-agent"] == f"Milo/{__version__}"
    assert req.headers["accept-encoding"] == "gzip"
    assert found == []  # offset 40 is past the two matches


async def test_search_always_limits_and_hides_broken(fake: FakeRadioBrowser) -> None:
    found = await client(fake.url).search(tag="jazz", limit=0)
    assert fake.requests[0].query["limit"] == "1"
    assert fake.requests[0].query["hidebroken"] == "true"
    assert [s.name for s in found] == ["Jazz FM"]
    assert isinstance(found[0], Station)
    assert found[0].tags == ["jazz", "smooth jazz"]


async def test_post_sends_form_body(fake: FakeRadioBrowser) -> None:
    data = await client(fake.url).request("POST", "/json/stations/search", {"name": "rock", "limit": 5})
    req = fake.requests[0]
    assert req.method == "POST"
    assert req.query == {}
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.params == {"name": "rock", "limit": "5"}
    assert [s["name"] for s in data] == ["Rock Antenne"]


async def test_click_counts_and_returns_url(fake: FakeRadioBrowser) -> None:
    rb = client(fake.url)
    url = await rb.click("22222222-2222-2222-2222-222222222222")
    assert fake.requests[0].path == "/json/url/22222222-2222-2222-2222-222222222222"
    assert fake.requests[0].headers["user-agent"] == f"Milo/{__version__}"
    assert url == fake.stations[1]["url_resolved"]
    assert fake.stations[1]["clickcount"] == 6
    with pytest.raises(RadioBrowserError, match="refused"):
        await rb.click("99999999-9999-9999-9999-999999999999")
    with pytest.raises(RadioBrowserError, match="not a station id"):
        await rb.click("../../json/vote/x")
    assert len(fake.requests) == 2


async def test_all_stations_paged_and_whole() -> None:
    stations = generate_stations(25, seed=3)
    stations[4]["lastcheckok"] = 0
    async with FakeRadioBrowser(stations) as fake:
        paged = await client(fake.url).all_stations(page_size=10)
        assert [r.query["offset"] for r in fake.requests] == ["0", "10", "20"]
        assert all(r.query["hidebroken"] == "true" and r.query["limit"] == "10" for r in fake.requests)
        whole = await client(fake.url).all_stations(page_size=None)
        assert fake.requests[-1].query == {"hidebroken": "true"}
    assert len(paged) == len(whole) == 24
    assert {s.id for s in paged} == {s.id for s in whole}


def test_station_model_tolerates_messy_data() -> None:
    s = Station.model_validate(
        station(
            stationuuid="abc",
            name=None,
            tags="Pop, ,ROCK,pop,",
            language=None,
            countrycode="",
            codec="UNKNOWN",
            bitrate="",
            votes=None,
            clickcount="12",
            hls="1",
            lastcheckok=None,
            favicon=None,
            url_resolved="",
        )
    )
    assert s.id == "abc"
    assert s.name == ""
    assert s.tags == ["pop", "rock"]
    assert s.language == []
    assert s.countrycode == ""
    assert s.codec == ""
    assert (s.bitrate, s.votes, s.clickcount) == (0, 0, 12)
    assert s.hls is True
    assert s.lastcheckok is False
    assert s.favicon == ""
    assert s.stream_url == s.url
    assert Station.model_validate({"stationuuid": "x", "countrycode": "deu"}).countrycode == ""


def test_dedupe_keeps_the_best_stream() -> None:
    def make(sid: str, name: str, host: str, **kw: Any) -> Station:
        return Station.model_validate(
            station(stationuuid=sid, name=name, url_resolved=f"http://{host}/s", **kw)
        )

    stations = [
        make("a", "Radio Nova", "nova.example", bitrate=128, votes=5),
        make("b", "RADIO  NOVA!", "nova.example", bitrate=320, votes=1),
        make("c", "Radio Nová", "www.nova.example", bitrate=320, votes=9, lastcheckok=0),
        make("d", "Radio Nova", "other.example"),
        make("e", "Jazz", "j.example", bitrate=64),
        make("f", "jazz", "j.example", bitrate=64, votes=70),
    ]
    assert [s.id for s in dedupe(stations)] == ["b", "d", "f"]


async def test_search_merges_duplicates(fake: FakeRadioBrowser) -> None:
    fake.stations.append(
        station(name="jazz fm", url_resolved=fake.stations[0]["url_resolved"], bitrate=320, tags="jazz")
    )
    found = await client(fake.url).search(tag="jazz")
    assert len(found) == 1
    assert found[0].bitrate == 320
    assert len(await client(fake.url).search(tag="jazz", unique=False)) == 2


@pytest.mark.parametrize(
    ("knob", "error"),
    [
        (lambda f: setattr(f, "status", 503), RadioBrowserHTTPError),
        (lambda f: setattr(f, "raw_body", b"<html>oops</html>"), RadioBrowserJSONError),
        (lambda f: setattr(f, "raw_body", b"\xff\xfe{"), RadioBrowserJSONError),
        (lambda f: setattr(f, "raw_body", b'{"not": "a list"}'), RadioBrowserJSONError),
        (lambda f: setattr(f, "raw_body", b"[" * 100_000), RadioBrowserJSONError),
        (lambda f: setattr(f, "lie_length", True), RadioBrowserConnectionError),
    ],
)
async def test_errors_are_mapped(
    fake: FakeRadioBrowser, knob: Callable[[FakeRadioBrowser], None], error: type[Exception]
) -> None:
    knob(fake)
    with pytest.raises(error):
        await client(fake.url).search(name="x")


async def test_http_status_keeps_the_code(fake: FakeRadioBrowser) -> None:
    fake.status = 404
    with pytest.raises(RadioBrowserHTTPError) as info:
        await client(fake.url).search(name="x")
    assert info.value.status == 404


async def test_timeout_is_total_and_mapped(fake: FakeRadioBrowser) -> None:
    fake.hang = True
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(RadioBrowserTimeoutError):
        await client(fake.url, timeout=0.2).search(name="x")
    assert loop.time() - start < 1.5


async def test_connection_refused_is_mapped() -> None:
    with pytest.raises(RadioBrowserConnectionError):
        await client(f"http://127.0.0.1:{free_port()}").search(name="x")


async def test_falls_back_to_the_next_server_and_sticks_to_it(fake: FakeRadioBrowser) -> None:
    async with FakeRadioBrowser(status=500) as broken:
        dead = f"http://127.0.0.1:{free_port()}"
        rb = client(dead, broken.url, fake.url)
        assert [s.name for s in await rb.search(tag="rock")] == ["Rock Antenne"]
        assert len(broken.requests) == 1
        assert rb.server == fake.url
        await rb.search(tag="rock")
        assert len(broken.requests) == 1  # the working mirror is asked first from now on
        assert len(fake.requests) == 2


async def test_client_errors_do_not_fail_over(fake: FakeRadioBrowser) -> None:
    async with FakeRadioBrowser(status=400) as bad:
        with pytest.raises(RadioBrowserHTTPError):
            await client(bad.url, fake.url).search(name="x")
    assert fake.requests == []


async def test_every_server_failing_raises_the_last_error() -> None:
    async with FakeRadioBrowser(status=503) as a, FakeRadioBrowser(raw_body=b"nope") as b:
        with pytest.raises(RadioBrowserJSONError):
            await client(a.url, b.url).search(name="x")
        assert len(a.requests) == len(b.requests) == 1


async def test_discovered_servers_are_used_and_rediscovered(fake: FakeRadioBrowser) -> None:
    calls: list[int] = []

    async def discover() -> list[str]:
        calls.append(1)
        return [fake.url]

    rb = RadioBrowser(discover=discover, timeout=2.0)
    await rb.search(name="jazz")
    await rb.search(name="jazz")
    assert len(calls) == 1
    fake.status = 503
    with pytest.raises(RadioBrowserHTTPError):
        await rb.search(name="jazz")
    fake.status = None
    await rb.search(name="jazz")
    assert len(calls) == 2


async def test_discover_servers_resolves_then_reverse_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    asked: list[str] = []

    async def getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
        asked.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.2", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.3", port)),
        ]

    async def getnameinfo(sockaddr: tuple[str, int], flags: int = 0) -> tuple[str, str]:
        names = {"192.0.2.1": "de1.api.radio-browser.info.", "192.0.2.2": "evil.example.com"}
        if sockaddr[0] not in names:
            raise socket.gaierror("no PTR")
        return names[sockaddr[0]], "443"

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(loop, "getnameinfo", getnameinfo)
    servers = await discover_servers(fallback=("nl1.api.radio-browser.info", "de1.api.radio-browser.info"))
    assert asked == ["all.api.radio-browser.info"]
    assert servers == ["https://de1.api.radio-browser.info", "https://nl1.api.radio-browser.info"]

    async def failing(host: str, port: int, **kw: Any) -> list[Any]:
        raise socket.gaierror("no network")

    monkeypatch.setattr(loop, "getaddrinfo", failing)
    assert sorted(await discover_servers(fallback=("a.example", "b.example"))) == [
        "https://a.example",
        "https://b.example",
    ]


@pytest.mark.parametrize(("chunked", "gzipped"), [(True, False), (False, True), (True, True)])
async def test_chunked_and_gzip_answers(fake: FakeRadioBrowser, chunked: bool, gzipped: bool) -> None:
    fake.stations = generate_stations(300, seed=7)  # several chunks of 1000 bytes
    fake.chunked, fake.gzip_body = chunked, gzipped
    found = await client(fake.url).all_stations(page_size=None)
    assert len(found) == sum(1 for s in fake.stations if s["lastcheckok"] == 1)


async def test_size_cap(fake: FakeRadioBrowser) -> None:
    fake.stations = generate_stations(200, seed=1)
    size = len(json.dumps(fake.stations).encode())
    for chunked, gzipped in [(False, False), (True, False), (False, True)]:
        fake.chunked, fake.gzip_body = chunked, gzipped
        rb = client(fake.url, list_max_bytes=size // 2)
        with pytest.raises(RadioBrowserTooLargeError):
            await rb.all_stations(page_size=None)
    fake.chunked = fake.gzip_body = False
    assert len(await client(fake.url, list_max_bytes=size).all_stations(page_size=None)) == 200


def test_errors_are_the_nodes_daemon_errors() -> None:
    for error in (RadioBrowserConnectionError, RadioBrowserHTTPError, RadioBrowserResponseError):
        assert issubclass(error, RadioBrowserError)
    assert issubclass(RadioBrowserError, DaemonError)
    assert issubclass(RadioBrowserTimeoutError, RadioBrowserConnectionError)
    assert issubclass(RadioBrowserTooLargeError, RadioBrowserResponseError)
    assert issubclass(RadioBrowserJSONError, RadioBrowserResponseError)
