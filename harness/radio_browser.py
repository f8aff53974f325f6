"""A local fake of the Radio Browser API on 127.0.0.1: shaped like the real JSON, recording every request."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

COUNTRIES = [
    ("DE", "german"), ("FR", "french"), ("GB", "english"), ("US", "english"), ("IT", "italian"),
    ("ES", "spanish"), ("NL", "dutch"), ("AT", "german"), ("CH", "german,french"), ("BR", "portuguese"),
    ("PL", "polish"), ("SE", "swedish"), ("JP", "japanese"), ("CA", "english,french"), ("MX", "spanish"),
]  # fmt: skip
TAGS = [
    "pop", "rock", "jazz", "classical", "news", "talk", "electronic", "dance", "hits", "oldies", "80s",
    "90s", "country", "blues", "soul", "hip-hop", "ambient", "chillout", "metal", "folk", "reggae",
    "latin", "sports", "public radio", "lounge", "house", "techno", "indie", "alternative", "christian",
]  # fmt: skip
WORDS = [
    "Radio", "FM", "Jazz", "Rock", "Classic", "Hits", "Café", "Nova", "Sky", "City", "Wave", "Sun",
    "Blue", "Star", "Metro", "Kiss", "Energy", "Deutschlandfunk", "Bayern", "Antenne", "Groove",
    "Lounge", "Paradise", "Soul", "Nostalgie", "Planet", "Swiss", "Fresh", "Heart", "Capital", "Music",
    "Smooth", "Zürich", "München", "Paris", "Berlin", "Chill", "Dance", "Oldies", "Retro", "Love",
    "Gold", "Top", "Mix", "Live", "Express", "Studio", "Sound", "Beat", "Europa",
]  # fmt: skip


def station(**fields: Any) -> dict[str, Any]:
    """A Radio Browser station object with every documented field; `fields` override the defaults."""
    sid = fields.pop("stationuuid", None) or str(uuid.uuid4())
    base: dict[str, Any] = {
        "changeuuid": str(uuid.uuid4()),
        "stationuuid": sid,
        "serveruuid": None,
        "name": "Test Radio",
        "url": f"http://stream.example.com/{sid[:8]}",
        "url_resolved": f"http://stream.example.com/{sid[:8]}.mp3",
        "homepage": "https://example.com/",
        "favicon": "",
        "tags": "pop,rock",
        "country": "Germany",
        "countrycode": "DE",
        "iso_3166_2": None,
        "state": "",
        "language": "german",
        "languagecodes": "ger",
        "votes": 10,
        "lastchangetime": "2024-01-01 10:00:00",
        "lastchangetime_iso8601": "2024-01-01T10:00:00Z",
        "codec": "MP3",
        "bitrate": 128,
        "hls": 0,
        "lastcheckok": 1,
        "lastchecktime": "2024-01-01 10:00:00",
        "lastchecktime_iso8601": "2024-01-01T10:00:00Z",
        "lastcheckoktime": "2024-01-01 10:00:00",
        "lastcheckoktime_iso8601": "2024-01-01T10:00:00Z",
        "lastlocalchecktime": "",
        "lastlocalchecktime_iso8601": None,
        "clicktimestamp": "",
        "clicktimestamp_iso8601": None,
        "clickcount": 5,
        "clicktrend": 0,
        "ssl_error": 0,
        "geo_lat": None,
        "geo_long": None,
        "has_extended_info": False,
    }
    base.update(fields)
    return base


def generate_stations(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """N plausible stations: names from common radio words, skewed popularity, a few messy fields."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.sample(WORDS, rng.choice((1, 2, 2, 3, 3, 4)))
        cc, language = rng.choice(COUNTRIES)
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        host = f"s{i % 997}.stream{rng.randrange(400)}.example.net"
        out.append(
            station(
                stationuuid=sid,
                name=" ".join(words) + (f" {rng.randrange(100)}" if rng.random() < 0.3 else ""),
                url=f"http://{host}/{sid[:8]}",
                url_resolved=f"http://{host}/{sid[:8]}.mp3" if rng.random() < 0.9 else "",
                tags=",".join(rng.sample(TAGS, rng.randrange(0, 5))),
                countrycode=cc if rng.random() < 0.95 else "",
                language=language if rng.random() < 0.9 else "",
                codec=rng.choice(("MP3", "AAC", "AAC+", "OGG", "UNKNOWN")),
                bitrate=rng.choice((0, 64, 96, 128, 128, 192, 256, 320)),
                votes=int(rng.paretovariate(1.2)) - 1,
                clickcount=int(rng.paretovariate(1.1)) - 1,
                favicon=rng.choice(("", None, f"https://{host}/logo.png")),
            )
        )
    return out


@dataclass
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def params(self) -> dict[str, str]:
        """Query string or form body parameters, whichever the request used."""
        if self.body:
            return {k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}
        return self.query


@dataclass
class FakeRadioBrowser:
    """`async with FakeRadioBrowser(stations) as fake:` serves `fake.url` until the block ends.

    Failure knobs: `status` (answer every request with it), `hang` (never answer), `raw_body` (this body
    verbatim, e.g. bad JSON), `chunked` / `gzip_body` (encode answers so), `lie_length` (announce more
    bytes than sent, then close).
    """

    stations: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None
    hang: bool = False
    raw_body: bytes | None = None
    chunked: bool = False
    gzip_body: bool = False
    lie_length: bool = False
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeRadioBrowser:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        request = Recorded(method, parts.path, query, headers, body)
        self.requests.append(request)
        if self.hang:
            await self._stopping.wait()
            return
        status, payload = (
            (self.status, {"error": "told to fail"})
            if self.status is not None
            else (200, self.raw_body)
            if self.raw_body is not None
            else self._route(request)
        )
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        out_headers = ["Content-Type: application/json", "Connection: close"]
        if self.gzip_body:
            data = gzip.compress(data)
            out_headers.append("Content-Encoding: gzip")
        if self.chunked:
            out_headers.append("Transfer-Encoding: chunked")
            pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
            data = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
        else:
            length = len(data) + (100 if self.lie_length else 0)
            out_headers.append(f"Content-Length: {length}")
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}
        status_line = f"HTTP/1.1 {status} {reason.get(status, 'Status')}"
        writer.write(("\r\n".join([status_line, *out_headers]) + "\r\n\r\n").encode() + data)
        await writer.drain()

    def _route(self, request: Recorded) -> tuple[int, Any]:  # noqa: PLR0911 - one return per endpoint
        params = request.params
        path = request.path
        if path == "/json/stations/search":
            return 200, self._page(self._search(params), params)
        if path == "/json/stations":
            found = self._visible(params)
            if params.get("order") == "name":
                found = sorted(found, key=lambda s: (s["name"].lower(), s["stationuuid"]))
            return 200, self._page(found, params)
        if path == "/json/stations/byuuid":
            wanted = set(params.get("uuids", "").split(","))
            return 200, [s for s in self.stations if s["stationuuid"] in wanted]
        if path.startswith("/json/url/"):
            sid = path.removeprefix("/json/url/")
            for s in self.stations:
                if s["stationuuid"] == sid:
                    s["clickcount"] += 1
                    return 200, {
                        "ok": "true",
                        "message": "retrieved station url",
                        "stationuuid": sid,
                        "name": s["name"],
                        "url": s["url_resolved"] or s["url"],
                    }
            return 200, {"ok": "false", "message": "station not found", "stationuuid": sid}
        if path == "/json/servers":
            return 200, [{"ip": "127.0.0.1", "name": "127.0.0.1"}]
        return 404, {"error": "not found"}

    def _visible(self, params: dict[str, str]) -> list[dict[str, Any]]:
        if params.get("hidebroken") == "true":
            return [s for s in self.stations if s.get("lastcheckok") == 1]
        return list(self.stations)

    def _search(self, params: dict[str, str]) -> list[dict[str, Any]]:
        found = self._visible(params)
        if name := params.get("name"):
            found = [s for s in found if name.lower() in (s.get("name") or "").lower()]
        if cc := params.get("countrycode"):
            found = [s for s in found if (s.get("countrycode") or "").upper() == cc.upper()]
        if tag := params.get("tag"):
            found = [s for s in found if tag.lower() in (s.get("tags") or "").lower()]
        if language := params.get("language"):
            found = [s for s in found if language.lower() in (s.get("language") or "").lower()]
        order = params.get("order", "name")
        if order in ("votes", "clickcount", "bitrate", "name"):
            found.sort(key=lambda s: s.get(order) or 0, reverse=params.get("reverse") == "true")
        return found

    @staticmethod
    def _page(found: list[dict[str, Any]], params: dict[str, str]) -> list[dict[str, Any]]:
        offset = int(params.get("offset", "0"))
        limit = int(params.get("limit", "100000"))
        return found[offset : offset + limit]
