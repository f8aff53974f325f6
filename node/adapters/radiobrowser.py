"""Radio Browser directory: mirror discovery and failover, a tolerant station model, search and clicks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import ssl
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ParamSpec, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from node import __version__
from node.adapters import http_client
from node.adapters.http_client import (
    DEFAULT_MAX_BYTES,
    HttpClientConnectionError,
    HttpClientError,
    HttpClientJSONError,
    HttpClientResponseError,
    HttpClientStatusError,
    HttpClientTimeoutError,
    HttpClientTooLargeError,
    HTTPResponse,
)
from node.framework.errors import DaemonError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DNS_NAME",
    "FALLBACK_HOSTS",
    "USER_AGENT",
    "HTTPResponse",
    "RadioBrowser",
    "RadioBrowserConnectionError",
    "RadioBrowserError",
    "RadioBrowserHTTPError",
    "RadioBrowserJSONError",
    "RadioBrowserResponseError",
    "RadioBrowserTimeoutError",
    "RadioBrowserTooLargeError",
    "Station",
    "dedupe",
    "discover_servers",
    "normalise_name",
    "parse_stations",
]

USER_AGENT = f"Milo/{__version__}"
DNS_NAME = "all.api.radio-browser.info"
# Used when DNS gives nothing; the mirror set changes over time, so these are a last resort, not the plan.
FALLBACK_HOSTS = ("de1.api.radio-browser.info", "nl1.api.radio-browser.info", "at1.api.radio-browser.info")
# The whole station list is tens of MB; anything far beyond that is a broken or hostile server.
LIST_MAX_BYTES = 256 * 1024 * 1024
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_UUID = re.compile(r"^[0-9a-fA-F-]{8,64}$")

P = ParamSpec("P")
T = TypeVar("T")


class RadioBrowserError(DaemonError):
    """Anything that kept a directory request from giving a usable answer."""


class RadioBrowserConnectionError(RadioBrowserError):
    """No connection, or the connection broke before the answer was complete."""


class RadioBrowserTimeoutError(RadioBrowserConnectionError):
    """The request as a whole (connect, send, read) took longer than its timeout."""


class RadioBrowserHTTPError(RadioBrowserError):
    """The server answered with a status other than 2xx (or a redirect we would not follow)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RadioBrowserResponseError(RadioBrowserError):
    """The answer was not valid HTTP or not what the API documents."""


class RadioBrowserTooLargeError(RadioBrowserResponseError):
    """The answer (after decompression) exceeded the size cap."""


class RadioBrowserJSONError(RadioBrowserResponseError):
    """The body was not JSON, or not JSON of the expected shape."""


# Most specific first: a timeout is also a connection error, too large and bad JSON are bad answers.
_COUNTERPARTS: tuple[tuple[type[HttpClientError], type[RadioBrowserError]], ...] = (
    (HttpClientTimeoutError, RadioBrowserTimeoutError),
    (HttpClientConnectionError, RadioBrowserConnectionError),
    (HttpClientTooLargeError, RadioBrowserTooLargeError),
    (HttpClientJSONError, RadioBrowserJSONError),
    (HttpClientResponseError, RadioBrowserResponseError),
)


def _converted(exc: HttpClientError) -> RadioBrowserError:
    """The RadioBrowser* error for one of the HTTP client's, with the same message (and status)."""
    if isinstance(exc, HttpClientStatusError):
        return RadioBrowserHTTPError(exc.status, str(exc))
    for theirs, ours in _COUNTERPARTS:
        if isinstance(exc, theirs):
            return ours(str(exc))
    return RadioBrowserError(str(exc))


@contextlib.contextmanager
def _radio_browser_errors() -> Iterator[None]:
    try:
        yield
    except HttpClientError as exc:
        raise _converted(exc) from exc


# --------------------------------------------------------------------------------------------- model


def _loose_str(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text.upper() == "UNKNOWN" else text


def _loose_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        number = int(float(value))
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(number, 0)


def _loose_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(_loose_int(value)) if value is not None else False


def _comma_list(value: Any) -> list[str]:
    items: Iterable[Any]
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else []
    seen: dict[str, None] = {}
    for item in items:
        text = _loose_str(item).lower()
        if text:
            seen.setdefault(text, None)
    return list(seen)


def _country_code(value: Any) -> str:
    text = _loose_str(value).upper()
    return text if len(text) == 2 and text.isalpha() else ""


LooseStr = Annotated[str, BeforeValidator(_loose_str)]
LooseInt = Annotated[int, BeforeValidator(_loose_int)]
LooseBool = Annotated[bool, BeforeValidator(_loose_bool)]
CommaList = Annotated[list[str], BeforeValidator(_comma_list)]


class Station(BaseModel):
    """One directory entry, cleaned up: empty strings, nulls and "UNKNOWN" become neutral values."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    id: str = Field(alias="stationuuid", min_length=1)
    name: LooseStr = ""
    url: LooseStr = ""
    url_resolved: LooseStr = ""
    homepage: LooseStr = ""
    favicon: LooseStr = ""
    tags: CommaList = Field(default_factory=list)
    countrycode: Annotated[str, BeforeValidator(_country_code)] = ""
    language: CommaList = Field(default_factory=list)
    codec: LooseStr = ""
    bitrate: LooseInt = 0
    hls: LooseBool = False
    votes: LooseInt = 0
    clickcount: LooseInt = 0
    lastcheckok: LooseBool = True

    @property
    def stream_url(self) -> str:
        """The URL to play: the server-resolved one when there is one (`url` may be a playlist)."""
        return self.url_resolved or self.url


def parse_stations(data: Any) -> list[Station]:
    """Stations from a decoded JSON array; entries without a usable id are skipped, not fatal."""
    if not isinstance(data, list):
        raise RadioBrowserJSONError(f"expected a JSON array of stations, got {type(data).__name__}")
    stations: list[Station] = []
    for item in data:
        try:
            stations.append(Station.model_validate(item))
        except ValidationError:
            logger.debug("skipping a malformed station entry: %.200r", item)
    return stations


def normalise_name(name: str) -> str:
    """Case-, accent- and punctuation-insensitive form of a name, words separated by single spaces."""
    if name.isascii():  # most names: skip the per-character Unicode work (the index loads 50,000)
        return " ".join(_NON_ALNUM.sub(" ", name.lower()).split())
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    kept = "".join(c if c.isalnum() else " " for c in decomposed if not unicodedata.combining(c))
    return " ".join(kept.split())


def _stream_host(station: Station) -> str:
    try:
        host = urlsplit(station.stream_url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


def dedupe(stations: Iterable[Station]) -> list[Station]:
    """One station per (normalised name, stream host): the one most likely to play well wins.

    The winner takes the place of the first of its duplicates, so an ordered list stays ordered.
    """
    best: dict[tuple[str, str], int] = {}
    out: list[Station] = []
    for station in stations:
        key = (normalise_name(station.name), _stream_host(station))
        if not key[0]:
            key = (station.id, "")
        index = best.get(key)
        if index is None:
            best[key] = len(out)
            out.append(station)
        elif _quality(station) > _quality(out[index]):
            out[index] = station
    return out


def _quality(s: Station) -> tuple[bool, int, int]:
    return s.lastcheckok, s.bitrate, s.votes


# --------------------------------------------------------------------------------------------- client


async def discover_servers(
    *, dns_name: str = DNS_NAME, fallback: Sequence[str] = FALLBACK_HOSTS, timeout: float = 5.0
) -> list[str]:
    """Base URLs of the current mirrors, shuffled, followed by the known fallback hosts.

    HTTPS needs host names, so each address of the round-robin name is looked up in reverse.
    """
    loop = asyncio.get_running_loop()
    names: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(dns_name, 443, type=socket.SOCK_STREAM)
            for address in dict.fromkeys(str(info[4][0]) for info in infos):
                try:
                    name, _ = await loop.getnameinfo((address, 443), socket.NI_NAMEREQD)
                except OSError:
                    continue
                name = name.rstrip(".").lower()
                # A PTR record is whatever the address owner says; only names in the API's own domain
                # are trusted to be mirrors.
                if name.endswith(".radio-browser.info") and name not in names:
                    names.append(name)
    except (OSError, TimeoutError) as exc:
        logger.info("radio browser discovery via %s failed (%s); using the fallback hosts", dns_name, exc)
    random.shuffle(names)
    rest = [h for h in fallback if h not in names]
    random.shuffle(rest)
    return [f"https://{h}" for h in names + rest]


@dataclass
class RadioBrowser:
    """The directory API: search, click counting and the full list, failing over between mirrors.

    `base_url` (one URL or several) pins the servers, as tests and private mirrors need; without it
    the mirrors are discovered through DNS on first use and again after every mirror failed.
    """

    base_url: str | Sequence[str] | None = None
    user_agent: str = USER_AGENT
    timeout: float = 10.0
    list_timeout: float = 120.0
    max_bytes: int = DEFAULT_MAX_BYTES
    list_max_bytes: int = LIST_MAX_BYTES
    ssl_context: ssl.SSLContext | None = None
    discover: Callable[[], Awaitable[list[str]]] = discover_servers
    _servers: list[str] | None = field(default=None, init=False, repr=False)
    _current: int = field(default=0, init=False, repr=False)

    async def servers(self) -> list[str]:
        if self._servers is None:
            if self.base_url is None:
                found = await self.discover()
            elif isinstance(self.base_url, str):
                found = [self.base_url]
            else:
                found = list(self.base_url)
            self._servers = [s.rstrip("/") for s in found]
            self._current = 0
        if not self._servers:
            raise RadioBrowserConnectionError("no Radio Browser server known")
        return self._servers

    @property
    def server(self) -> str | None:
        """The mirror the next request goes to first (None before the first request)."""
        return self._servers[self._current] if self._servers else None

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None = None,
        *,
        timeout: float | None = None,
        max_bytes: int | None = None,
    ) -> Any:
        """Decoded JSON of `method path`, trying each mirror in turn on connection and server errors."""
        servers = await self.servers()
        query = urlencode(params or {})
        body: bytes | None = None
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if method == "POST":
            body = query.encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            query = ""
        last: RadioBrowserError | None = None
        for attempt in range(len(servers)):
            index = (self._current + attempt) % len(servers)
            url = servers[index] + path + (f"?{query}" if query else "")
            try:
                with _radio_browser_errors():
                    response = await http_client.http_request(
                        method,
                        url,
                        headers=headers,
                        body=body,
                        timeout=timeout or self.timeout,
                        max_bytes=max_bytes or self.max_bytes,
                        ssl_context=self.ssl_context,
                    )
                    data = _ok(response, method).json()
            except RadioBrowserHTTPError as exc:
                # A 4xx is about the request, and every mirror would say the same.
                if exc.status < 500 and exc.status != 429:
                    raise
                last = exc
            except (RadioBrowserConnectionError, RadioBrowserResponseError) as exc:
                last = exc
            else:
                self._current = index
                return data
            logger.info("radio browser server %s failed: %s", servers[index], last)
        if self.base_url is None:
            self._servers = None  # the mirror set may have changed: discover again next time
        assert last is not None
        raise last

    async def search(
        self,
        *,
        name: str | None = None,
        countrycode: str | None = None,
        tag: str | None = None,
        language: str | None = None,
        limit: int = 50,
        offset: int = 0,
        order: str = "clickcount",
        reverse: bool = True,
        unique: bool = True,
    ) -> list[Station]:
        """`/json/stations/search`, most clicked first by default; broken stations never listed."""
        params: dict[str, str | int] = {}
        if name:
            params["name"] = name
        if countrycode:
            params["countrycode"] = countrycode.upper()
        if tag:
            params["tag"] = tag.lower()  # the directory's tags are lower-case
        if language:
            params["language"] = language.lower()
        params.update(
            order=order,
            reverse=_flag(reverse),
            hidebroken="true",
            offset=max(offset, 0),
            limit=min(max(limit, 1), 1000),
        )
        stations = parse_stations(await self.request("GET", "/json/stations/search", params))
        return dedupe(stations) if unique else stations

    async def by_ids(self, station_ids: Sequence[str]) -> list[Station]:
        """The stations with these ids (unknown ids are left out), in no particular order."""
        ids = [i for i in station_ids if _UUID.fullmatch(i)]
        if not ids:
            return []
        data = await self.request("GET", "/json/stations/byuuid", {"uuids": ",".join(ids)})
        return parse_stations(data)

    async def click(self, station_id: str) -> str | None:
        """Count a play of the station (API etiquette) and return the URL the server says to play."""
        if not _UUID.fullmatch(station_id):
            raise RadioBrowserError(f"not a station id: {station_id!r}")
        data = await self.request("GET", f"/json/url/{quote(station_id, safe='')}")
        if not isinstance(data, dict):
            raise RadioBrowserJSONError("click answer is not a JSON object")
        if str(data.get("ok", "")).lower() != "true":
            raise RadioBrowserError(
                f"click on {station_id} refused: {data.get('message', 'no reason given')}"
            )
        url = data.get("url")
        return url if isinstance(url, str) and url else None

    async def all_stations(self, *, page_size: int | None = 10_000) -> list[Station]:
        """Every working station, for the local index; paged so no single answer is huge.

        `page_size=None` asks for the whole list in one answer.
        """
        if page_size is None:
            data = await self.request(
                "GET",
                "/json/stations",
                {"hidebroken": "true"},
                timeout=self.list_timeout,
                max_bytes=self.list_max_bytes,
            )
            return parse_stations(data)
        stations: list[Station] = []
        offset = 0
        while True:
            params: dict[str, str | int] = {
                "hidebroken": "true",
                "order": "name",  # a stable order, so pages neither overlap nor skip
                "offset": offset,
                "limit": page_size,
            }
            data = await self.request(
                "GET", "/json/stations", params, timeout=self.list_timeout, max_bytes=self.list_max_bytes
            )
            if not isinstance(data, list):
                raise RadioBrowserJSONError("station list is not a JSON array")
            stations.extend(parse_stations(data))
            if len(data) < page_size:
                return stations
            offset += page_size


def _ok(response: HTTPResponse, method: str) -> HTTPResponse:
    if not 200 <= response.status < 300:
        message = f"{method} {response.url}: HTTP {response.status} {response.reason}".rstrip()
        raise RadioBrowserHTTPError(response.status, message)
    return response


def _flag(value: bool) -> str:
    return "true" if value else "false"
