"""Radio Browser directory client: a small asyncio HTTP/1.1 client, mirror selection and a tolerant model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import socket
import ssl
import unicodedata
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import SplitResult, quote, urlencode, urljoin, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from node import __version__

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
    "http_request",
    "normalise_name",
    "parse_stations",
]

USER_AGENT = f"Milo/{__version__}"
DNS_NAME = "all.api.radio-browser.info"
# Used when DNS gives nothing; the mirror set changes over time, so these are a last resort, not the plan.
FALLBACK_HOSTS = ("de1.api.radio-browser.info", "nl1.api.radio-browser.info", "at1.api.radio-browser.info")
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
# The whole station list is tens of MB; anything far beyond that is a broken or hostile server.
LIST_MAX_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_UUID = re.compile(r"^[0-9a-fA-F-]{8,64}$")


class RadioBrowserError(Exception):
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


# --------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class HTTPResponse:
    """A complete, decoded answer; header names are lower-case."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    url: str

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:  # includes UnicodeDecodeError
            raise RadioBrowserJSONError(f"{self.url}: the answer is not JSON ({exc})") from None


# Given the URL a redirect points to, return the address to connect to (or raise to refuse it).
RedirectCheck = Callable[[str], Awaitable[str | None]]


async def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    connect_address: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_redirects: int = 0,
    redirect_check: RedirectCheck | None = None,
) -> HTTPResponse:
    """One HTTP/1.1 request on a fresh connection, with a total timeout and a cap on the body size.

    `connect_address` is the IP to connect to instead of resolving the URL's host again: urlguard
    validates an address and this connects to that very address (the Host header and the TLS
    certificate check still use the name). Redirects are followed only if `max_redirects` > 0, and
    then only to the same origin unless `redirect_check` vets (and resolves) the new URL.
    """
    try:
        async with asyncio.timeout(timeout):
            for _ in range(max_redirects + 1):
                response = await _exchange(
                    method,
                    url=url,
                    headers=headers or {},
                    body=body,
                    max_bytes=max_bytes,
                    connect_address=connect_address,
                    ssl_context=ssl_context,
                )
                location = response.headers.get("location")
                if response.status not in REDIRECT_STATUSES or not location or max_redirects == 0:
                    return response
                target = urljoin(url, location)
                if redirect_check is not None:
                    connect_address = await redirect_check(target)
                elif _origin(target) != _origin(url):
                    raise RadioBrowserHTTPError(
                        response.status, f"{url} redirects to another site ({target}); not followed"
                    )
                if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                url = target
            raise RadioBrowserHTTPError(response.status, f"{url}: more than {max_redirects} redirects")
    except TimeoutError:
        raise RadioBrowserTimeoutError(f"{method} {url}: no complete answer within {timeout:g} s") from None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port


async def _exchange(
    method: str,
    *,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    max_bytes: int,
    connect_address: str | None,
    ssl_context: ssl.SSLContext | None,
) -> HTTPResponse:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RadioBrowserError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RadioBrowserError(f"bad port in {url!r}") from None
    context = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
    try:
        reader, writer = await asyncio.open_connection(
            connect_address or host,
            port,
            ssl=context,
            server_hostname=host if context is not None else None,
            limit=MAX_HEADER_BYTES,
        )
    except (OSError, ssl.SSLError) as exc:
        raise RadioBrowserConnectionError(f"cannot connect to {host}:{port}: {exc}") from None
    try:
        writer.write(_request_bytes(method, parts, host, port, headers=headers, body=body))
        await writer.drain()
        return await _read_response(reader, method, url, max_bytes)
    except asyncio.IncompleteReadError:
        raise RadioBrowserConnectionError(f"{url}: connection closed before the end of the answer") from None
    except (OSError, ssl.SSLError) as exc:
        raise RadioBrowserConnectionError(f"{url}: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _request_bytes(
    method: str, parts: SplitResult, host: str, port: int, *, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if parts.scheme == "https" else 80):
        host_header += f":{port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    lowered = {k.lower() for k in headers}
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if "accept-encoding" not in lowered:
        lines.append("Accept-Encoding: gzip")
    # One request per connection: simpler than keep-alive and a directory query is rare enough.
    lines.append("Connection: close")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise RadioBrowserError("line breaks in a request header")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise RadioBrowserResponseError("a header or chunk line is too long") from None


async def _read_headers(reader: asyncio.StreamReader, url: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    header_bytes = 0
    while True:
        line = await _read_line(reader)
        header_bytes += len(line)
        if header_bytes > MAX_HEADER_BYTES:
            raise RadioBrowserResponseError(f"{url}: headers larger than {MAX_HEADER_BYTES} bytes")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, sep, value = text.partition(":")
        if not sep:
            raise RadioBrowserResponseError(f"{url}: malformed header line {text[:80]!r}")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


async def _read_response(reader: asyncio.StreamReader, method: str, url: str, max_bytes: int) -> HTTPResponse:
    status_line = (await _read_line(reader)).decode("latin-1").rstrip("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: (.*))?", status_line)
    if match is None:
        raise RadioBrowserResponseError(f"{url}: not an HTTP answer ({status_line[:80]!r})")
    status, reason = int(match.group(1)), match.group(2) or ""
    headers = await _read_headers(reader, url)
    if method == "HEAD" or status in (204, 304) or status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader, url, max_bytes)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise RadioBrowserResponseError(f"{url}: bad Content-Length") from None
        if length > max_bytes:
            raise RadioBrowserTooLargeError(f"{url}: answer of {length} bytes exceeds the cap of {max_bytes}")
        body = await reader.readexactly(length)
    else:
        body = await _read_to_eof(reader, url, max_bytes)

    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip" and body:
        body = _gunzip(body, url, max_bytes)
    elif encoding not in ("identity", "gzip"):
        raise RadioBrowserResponseError(f"{url}: unsupported Content-Encoding {encoding!r}")
    return HTTPResponse(status, reason, headers, body, url)


async def _read_chunked(reader: asyncio.StreamReader, url: str, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_text = (await _read_line(reader)).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise RadioBrowserResponseError(f"{url}: bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            break
        total += size
        if total > max_bytes:
            raise RadioBrowserTooLargeError(f"{url}: answer exceeds the cap of {max_bytes} bytes")
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise RadioBrowserResponseError(f"{url}: chunk not followed by CRLF")
    while (await _read_line(reader)).strip():  # trailers, ignored
        pass
    return b"".join(parts)


async def _read_to_eof(reader: asyncio.StreamReader, url: str, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > max_bytes:
            raise RadioBrowserTooLargeError(f"{url}: answer exceeds the cap of {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _gunzip(data: bytes, url: str, max_bytes: int) -> bytes:
    # Capped decompression: a small gzip body can expand to gigabytes.
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decoder.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise RadioBrowserResponseError(f"{url}: bad gzip body ({exc})") from None
    if len(out) > max_bytes or decoder.unconsumed_tail:
        raise RadioBrowserTooLargeError(f"{url}: decompressed answer exceeds the cap of {max_bytes} bytes")
    if not decoder.eof:
        raise RadioBrowserResponseError(f"{url}: truncated gzip body")
    return out


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
                response = await http_request(
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
