"""go-librespot: its config file, its HTTP API and its `/events` WebSocket (v0.9, shared/reference)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jinja2
import websockets

from node.adapters.http_client import HttpClientConnectionError, HttpClientError, http_request
from node.framework.errors import DaemonError
from node.resources import data_dir

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventStream",
    "LibrespotApi",
    "LibrespotError",
    "LibrespotRefusedError",
    "LibrespotSettings",
    "LibrespotUnreachableError",
    "NoSessionError",
    "Status",
    "Track",
    "render_config",
]

CONFIG_TEMPLATE = "go-librespot.yml.j2"
MAX_EVENT = 256 * 1024  # a metadata event is a few hundred bytes; anything near this is not go-librespot
# The events of the reference; any other type (a newer go-librespot) is passed on and ignored by callers.
EVENT_TYPES = frozenset(
    {
        "playback_ready",
        "active",
        "inactive",
        "metadata",
        "will_play",
        "playing",
        "paused",
        "not_playing",
        "stopped",
        "seek",
        "volume",
        "shuffle_context",
        "repeat_context",
        "repeat_track",
    }
)


class LibrespotError(DaemonError):
    """go-librespot did not do what was asked."""


class LibrespotUnreachableError(LibrespotError):
    """Nothing answers on its API port (not started yet, dead, or another program there)."""


class NoSessionError(LibrespotError):
    """204: no Spotify session yet (nobody picked this speaker in a Spotify app)."""


class LibrespotRefusedError(LibrespotError):
    """400 (a bad value) or 500 (e.g. a URI it cannot resolve): the request was refused."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Config ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LibrespotSettings:
    """What the node decides of go-librespot's config.yml; the template holds the rest."""

    device_name: str
    audio_device: str
    port: int
    address: str = "127.0.0.1"
    device_type: str = "speaker"
    bitrate: int = 320
    volume_steps: int = 100
    disable_autoplay: bool = False
    zeroconf_port: int = 0
    persist_credentials: bool = False
    image_size: str = "large"
    log_level: str = "info"


def render_config(settings: LibrespotSettings) -> str:
    """The text of go-librespot's config.yml for `settings`."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(data_dir("daemons")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, not HTML
    )
    # JSON scalars are YAML scalars: a device name with a colon or a quote stays one string.
    env.filters["json"] = json.dumps
    values = {name: getattr(settings, name) for name in settings.__dataclass_fields__}
    return env.get_template(CONFIG_TEMPLATE).render(**values)


# Answers ----------------------------------------------------------------------------------------------
def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class Track:
    """A track (or episode) as `GET /status` and the `metadata` event describe it."""

    uri: str
    name: str
    artists: tuple[str, ...]
    album: str
    cover_url: str | None
    position_ms: int | None
    duration_ms: int | None

    @classmethod
    def parse(cls, data: Any) -> Track | None:
        """Lenient: a field missing or of another type is empty; extra ones (v0.9's codec...) are ignored."""
        if not isinstance(data, Mapping):
            return None
        artists = data.get("artist_names")
        cover = data.get("album_cover_url")
        return cls(
            uri=_str(data.get("uri")),
            name=_str(data.get("name")),
            artists=tuple(a for a in artists if isinstance(a, str)) if isinstance(artists, list) else (),
            album=_str(data.get("album_name")),
            cover_url=cover if isinstance(cover, str) and cover.startswith(("http://", "https://")) else None,
            position_ms=_int(data.get("position")),
            duration_ms=_int(data.get("duration")),
        )


@dataclass(frozen=True)
class Status:
    """`GET /status` with a session."""

    username: str
    device_name: str
    stopped: bool
    paused: bool
    buffering: bool
    volume: int | None
    volume_steps: int | None
    shuffle: bool
    repeat_context: bool
    repeat_track: bool
    track: Track | None

    @classmethod
    def parse(cls, data: Any) -> Status:
        if not isinstance(data, Mapping):
            raise LibrespotError(f"GET /status: expected an object, got {type(data).__name__}")
        return cls(
            username=_str(data.get("username")),
            device_name=_str(data.get("device_name")),
            stopped=data.get("stopped") is True,
            paused=data.get("paused") is True,
            buffering=data.get("buffering") is True,
            volume=_int(data.get("volume")),
            volume_steps=_int(data.get("volume_steps")),
            shuffle=data.get("shuffle_context") is True,
            repeat_context=data.get("repeat_context") is True,
            repeat_track=data.get("repeat_track") is True,
            track=Track.parse(data.get("track")),
        )


@dataclass(frozen=True)
class Event:
    """One `/events` message: `{"type": ..., "data": {...}}` (data is {} for the events without any)."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | bytes) -> Event | None:
        try:
            message = json.loads(text)
        except ValueError:
            return None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return None
        data = message.get("data")
        return cls(message["type"], data if isinstance(data, dict) else {})


# The API ------------------------------------------------------------------------------------------------
class LibrespotApi:
    """go-librespot's HTTP API on `host:port`: one short request per call, and the events stream."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.base = f"http://{host}:{port}"

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The JSON of the answer, None for an empty 200; NoSessionError for 204."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            response = await http_request(
                method, self.base + path, headers=headers, body=payload, timeout=self.timeout
            )
        except HttpClientConnectionError as exc:
            raise LibrespotUnreachableError(f"go-librespot on {self.host}:{self.port}: {exc}") from None
        except HttpClientError as exc:
            raise LibrespotError(f"{method} {path}: {exc}") from None
        if response.status == 204:
            raise NoSessionError("no Spotify session: pick this speaker in a Spotify app first")
        if response.status != 200:
            text = response.body.decode(errors="replace").strip()[:200]
            raise LibrespotRefusedError(
                response.status, f"{method} {path}: {response.status} {text}".rstrip()
            )
        if not response.body.strip():
            return None
        try:
            return response.json()
        except HttpClientError as exc:
            raise LibrespotError(str(exc)) from None

    async def post(self, path: str, body: Mapping[str, Any] | None = None) -> None:
        await self._call("POST", path, body)

    async def ready(self) -> bool:
        """`GET /`: whether a session is up and takes `/player/play`; answers without a session too."""
        info = await self._call("GET", "/")
        return isinstance(info, dict) and info.get("playback_ready") is True

    async def status(self) -> Status | None:
        """The whole player state, None while there is no session."""
        try:
            return Status.parse(await self._call("GET", "/status"))
        except NoSessionError:
            return None

    async def play(self, uri: str, *, skip_to: str = "", paused: bool = False, position_ms: int = 0) -> None:
        body: dict[str, Any] = {"uri": uri, "paused": paused}
        if skip_to:
            body["skip_to_uri"] = skip_to
        if position_ms:
            body["position"] = position_ms
        await self.post("/player/play", body)

    async def seek(self, position_ms: int) -> None:
        await self.post("/player/seek", {"position": position_ms})

    async def set_volume(self, value: int) -> None:
        await self.post("/player/volume", {"volume": value})

    async def output(self, device: str) -> None:
        """Reopen the audio output on `device`, keeping the track, the position and the session."""
        await self.post("/player/output", {"device": device})

    async def set_device_name(self, name: str) -> None:
        await self.post("/set_device_name", {"name": name})

    async def open_events(self) -> EventStream:
        """The `/events` stream, open; LibrespotUnreachableError when nothing answers there."""
        from websockets.asyncio.client import connect  # noqa: PLC0415 - only where go-librespot runs

        url = f"ws://{self.host}:{self.port}/events"
        try:
            ws = await connect(url, open_timeout=self.timeout, max_size=MAX_EVENT, ping_interval=20)
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise LibrespotUnreachableError(f"{url}: {exc}") from None
        return EventStream(ws, url)


class EventStream:
    """go-librespot's events as they come; iterating ends with LibrespotUnreachableError when it closes."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self._ws = ws
        self.url = url

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            async for message in self._ws:
                event = Event.parse(message)
                if event is not None:
                    yield event
        except websockets.ConnectionClosed as exc:
            raise LibrespotUnreachableError(f"{self.url} closed: {exc}") from None
        raise LibrespotUnreachableError(f"{self.url} closed")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()
