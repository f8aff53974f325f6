"""A fake go-librespot v0.9: its command line, config.yml, HTTP API and /events WebSocket, on 127.0.0.1."""

# `python -m harness.go_librespot --config_dir DIR` behaves as `go-librespot --config_dir DIR` does in
# the reference (shared/reference/go-librespot.md): it reads DIR/config.yml (unknown keys are refused, so a
# template typo fails a test), locks the directory, serves the API on `server.address:server.port` with
# go-librespot's status codes (204 "no session", empty-body 200s for the control calls, 400, 404, 405, 500)
# and broadcasts the events of the reference. There is no Spotify behind it: a test plays the phone
# through `/_fake/...` paths, which go-librespot does not have and the node never calls.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import http
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

KNOWN_KEYS = {
    "device_name", "device_type", "audio_backend", "audio_device", "mixer_device", "mixer_control_name",
    "audio_buffer_time", "audio_period_count", "audio_output_pipe", "audio_output_pipe_format",
    "audio_output_pipe_wait_for_reader", "bitrate", "volume_steps", "initial_volume", "ignore_last_volume",
    "external_volume", "disable_autoplay", "normalisation_disabled", "normalisation_use_album_gain",
    "normalisation_pregain", "crossfade_duration", "zeroconf_enabled", "zeroconf_port", "zeroconf_backend",
    "zeroconf_interfaces_to_advertise", "mpris_enabled", "flac_enabled", "server", "cache", "credentials",
    "log_level",
}  # fmt: skip
SERVER_KEYS = {"enabled", "address", "port", "allow_origin", "cert_file", "key_file", "image_size"}
DEVICE_TYPES = {
    "computer", "tablet", "smartphone", "speaker", "tv", "avr", "stb", "audio_dongle", "game_console",
    "cast_video", "cast_audio", "automobile", "smartwatch", "chromebook", "car_thing", "observer",
    "home_thing",
}  # fmt: skip
MAX_VOLUME = 65535
URI = re.compile(r"spotify:(track|album|playlist|artist|episode|show):([0-9A-Za-z]{22})")
UNRESOLVABLE = "0" * 22  # an id no Spotify object has: /player/play answers 500
TRACKS_PER_CONTEXT = 3
MAX_BODY = 1024 * 1024


def fake_id(seed: str, n: int = 22) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[int(digest[i : i + 2], 16) % 62] for i in range(0, 2 * n, 2))


def track_of(uri: str) -> dict[str, Any]:
    """Made-up metadata for a track URI, the same every time: what a `metadata` event carries."""
    tid = uri.rsplit(":", 1)[-1]
    number = int(hashlib.sha256(tid.encode()).hexdigest()[:4], 16)
    return {
        "uri": uri,
        "name": f"Song {tid[:5]}",
        "artist_names": [f"Artist {tid[5:8]}", "Guest Singer"],
        "album_name": f"Album {tid[8:12]}",
        "album_cover_url": f"https://i.scdn.co/image/ab67616d0000b273{hashlib.md5(tid.encode()).hexdigest()[:24]}",
        "position": 0,
        "duration": 150_000 + number % 120_000,
        "release_date": "2021-05-07",
        "track_number": 1 + number % 12,
        "disc_number": 1,
        "format": "OGG_VORBIS_320",
        "codec": "vorbis",
        "bitrate": 320,
        "sample_rate": 44100,
        "bit_depth": None,
    }


def resolve(uri: str) -> list[str] | None:
    """The tracks a context URI plays, None when Spotify would not know it."""
    match = URI.fullmatch(uri)
    if match is None or match.group(2) == UNRESOLVABLE:
        return None
    kind, oid = match.groups()
    if kind in ("track", "episode"):
        return [uri]
    return [f"spotify:track:{fake_id(f'{oid}/{i}')}" for i in range(TRACKS_PER_CONTEXT)]


class BadRequest(Exception):  # noqa: N818 - the HTTP status it stands for
    pass


class Unresolvable(Exception):  # noqa: N818
    pass


@dataclass
class Player:
    """What go-librespot's player loop holds: the session, the context, the position, the volume."""

    config: dict[str, Any]
    session: str | None = None
    sessions: int = 0
    context_uri: str = ""
    tracks: list[str] = field(default_factory=list)
    index: int = 0
    paused: bool = False
    buffering: bool = False
    position_ms: int = 0
    since: float | None = None  # monotonic time the position started moving from position_ms
    volume: int = MAX_VOLUME
    shuffle: bool = False
    repeat_context: bool = False
    repeat_track: bool = False
    output: str = ""
    play_origin: str = ""
    device_name: str = ""

    @property
    def steps(self) -> int:
        return int(self.config.get("volume_steps", 100))

    @property
    def track(self) -> dict[str, Any] | None:
        if not self.tracks:
            return None
        data = track_of(self.tracks[self.index])
        data["position"] = self.position()
        return data

    def position(self) -> int:
        if self.since is None or not self.tracks:
            return self.position_ms
        moved = int((time.monotonic() - self.since) * 1000)
        duration: int = track_of(self.tracks[self.index])["duration"]
        return min(self.position_ms + moved, duration)

    def hold(self) -> None:
        self.position_ms, self.since = self.position(), None

    def steps_volume(self) -> int:
        return round(self.volume * self.steps / MAX_VOLUME)

    def status(self) -> dict[str, Any]:
        return {
            "username": self.session,
            "device_id": hashlib.sha1(self.device_name.encode()).hexdigest(),
            "device_type": str(self.config.get("device_type", "computer")).upper(),
            "device_name": self.device_name,
            "play_origin": self.play_origin,
            "stopped": not self.tracks,
            "paused": self.paused,
            "buffering": self.buffering,
            "volume": self.steps_volume(),
            "volume_steps": self.steps,
            "repeat_context": self.repeat_context,
            "repeat_track": self.repeat_track,
            "shuffle_context": self.shuffle,
            "track": self.track,
        }


class Events:
    """The /events clients: every event goes to all of them."""

    def __init__(self) -> None:
        self.clients: set[asyncio.Queue[str | None]] = set()
        self.sent: list[dict[str, Any]] = []
        # How late events reach the clients (a real daemon tells what it did a little after its 200).
        self.lag_s = 0.0

    def emit(self, kind: str, data: dict[str, Any] | None = None) -> None:
        message = {"type": kind, "data": data}
        self.sent.append(message)
        text = json.dumps(message)
        for queue in list(self.clients):
            queue.put_nowait(text)


class FakeLibrespot:
    def __init__(self, config: dict[str, Any], config_dir: Path) -> None:
        self.config = config
        self.config_dir = config_dir
        self.server_conf: dict[str, Any] = config.get("server") or {}
        self.player = Player(config, output=str(config.get("audio_device", "default")))
        self.player.device_name = str(config.get("device_name") or f"go-librespot {os.uname().nodename}")
        self.events = Events()
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    # The phone's side (not go-librespot's API) --------------------------------------------------------
    def _origin(self) -> dict[str, Any]:
        p = self.player
        return {
            "context_uri": p.context_uri,
            "uri": p.tracks[p.index] if p.tracks else "",
            "play_origin": p.play_origin,
        }

    def connect(self, username: str) -> None:
        """A phone picked this speaker (zeroconf): a session, then `playback_ready`."""
        if self.player.session is not None:
            return
        self.player.session = username
        self.player.sessions += 1
        self.events.emit("playback_ready")

    def load(
        self, uri: str, *, skip_to: str = "", paused: bool = False, position: int = 0, origin: str
    ) -> None:
        tracks = resolve(uri)
        if tracks is None:
            raise Unresolvable(f"failed to resolve {uri}")
        p = self.player
        was_active = bool(p.tracks)
        p.context_uri, p.tracks, p.play_origin = uri, tracks, origin
        p.index = tracks.index(skip_to) if skip_to in tracks else 0
        p.position_ms, p.since, p.paused = position, None, paused
        self._start_track(announce_active=not was_active)

    def _start_track(self, *, announce_active: bool = False) -> None:
        p = self.player
        self.events.emit("will_play", self._origin())
        track = p.track
        assert track is not None
        self.events.emit("metadata", track)
        if announce_active:
            self.events.emit("active")
        if p.paused:
            self.events.emit("paused", self._origin())
        else:
            p.since = time.monotonic()
            self.events.emit("playing", {**self._origin(), "resume": False})

    def pause(self) -> None:
        if self.player.tracks and not self.player.paused:
            self.player.hold()
            self.player.paused = True
            self.events.emit("paused", self._origin())

    def resume(self) -> None:
        if self.player.tracks and self.player.paused:
            self.player.paused = False
            self.player.since = time.monotonic()
            self.events.emit("playing", {**self._origin(), "resume": True})

    def skip(self, step: int) -> None:
        p = self.player
        if not p.tracks:
            return
        p.index = (p.index + step) % len(p.tracks)
        p.position_ms, p.since = 0, None
        self._start_track()

    def end_track(self) -> None:
        """The current track reached its end."""
        if self.player.tracks:
            self.events.emit("not_playing", self._origin())
            self.skip(1)

    def seek(self, position: int) -> None:
        p = self.player
        if not p.tracks:
            return
        duration = track_of(p.tracks[p.index])["duration"]
        p.position_ms = max(0, min(position, duration))
        p.since = None if p.paused else time.monotonic()
        self.events.emit("seek", {**self._origin(), "position": p.position_ms, "duration": duration})

    def set_volume(self, steps_value: int) -> None:
        p = self.player
        p.volume = max(0, min(MAX_VOLUME, round(steps_value * MAX_VOLUME / p.steps)))
        self.events.emit("volume", {"value": p.steps_volume(), "max": p.steps})

    def stop(self) -> None:
        """`/player/stop`: clears the player, emits `inactive`; with zeroconf it logs the session out."""
        p = self.player
        p.tracks, p.context_uri, p.index, p.position_ms, p.since, p.paused = [], "", 0, 0, None, False
        self.events.emit("inactive")
        if self.config.get("zeroconf_enabled"):
            p.session = None

    def disconnect(self) -> None:
        """The phone took the session elsewhere."""
        self.stop()
        self.player.session = None

    # HTTP ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        address = str(self.server_conf.get("address") or "localhost")
        port = int(self.server_conf.get("port") or 0)
        self._server = await asyncio.start_server(self._connection, address, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for queue in list(self.events.clients):
                queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                method, path, headers = parse_head(head)
                if (
                    path == "/events"
                    and method == "GET"
                    and "upgrade" in headers.get("connection", "").lower()
                ):
                    await self._websocket(head, reader, writer)
                    return
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_BODY:
                    await respond(writer, 413, b"")
                    return
                body = await reader.readexactly(length) if length else b""
                status, payload = self.handle(method, path, body)
                await respond(writer, status, payload)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    def handle(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:  # noqa: PLR0911 - one per status
        """(status, JSON body or b"" for an empty 200) of one request, as go-librespot answers it."""
        if not path.startswith("/_fake/"):
            record: dict[str, Any] = {"method": method, "path": path, "body": raw.decode(errors="replace")}
            record["session"] = self.player.session is not None
            self.requests.append(record)
        route = ROUTES.get((method, path))
        if route is None:
            if path.startswith("/web-api/"):
                return (204, b"") if self.player.session is None else (404, {"error": "not found"})
            if any(known == path for _, known in ROUTES):
                return 405, b"Method Not Allowed\n"
            return 404, b"404 page not found\n"
        needs_session, action = route
        if needs_session and self.player.session is None:
            return 204, b""  # no session: before anything else, even a malformed body
        try:
            result = action(self, decode_body(raw))
        except BadRequest as exc:
            return 400, str(exc).encode() + b"\n"
        except Unresolvable as exc:
            return 500, str(exc).encode() + b"\n"
        return 200, b"" if result is None else result

    async def _websocket(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        protocol = ServerProtocol()
        protocol.receive_data(head)
        events = protocol.events_received()
        if not events or not isinstance(events[0], Request):
            await respond(writer, 400, b"bad handshake\n")
            return
        protocol.send_response(protocol.accept(events[0]))
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.events.clients.add(queue)

        def flush() -> None:
            for chunk in protocol.data_to_send():
                if chunk:
                    writer.write(chunk)

        async def read() -> None:
            # Client messages are read and ignored; reading answers pings and notices the close.
            while data := await reader.read(65536):
                protocol.receive_data(data)
                flush()
                for frame in protocol.events_received():
                    if isinstance(frame, Frame) and frame.opcode is Opcode.CLOSE:
                        return
                if protocol.state is State.CLOSED:
                    return

        flush()
        reading = asyncio.create_task(read())
        try:
            while not reading.done():
                getting = asyncio.create_task(queue.get())
                await asyncio.wait({getting, reading}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    break
                text = getting.result()
                if self.events.lag_s and text is not None:
                    await asyncio.sleep(self.events.lag_s)  # the daemon's own delay, modelled
                if text is None:
                    protocol.send_close(1001, "going away")
                    flush()
                    break
                protocol.send_text(text.encode())
                flush()
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.events.clients.discard(queue)
            reading.cancel()
            with contextlib.suppress(Exception):
                await writer.drain()


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = [*lines[0].split(" "), "", ""][:3]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], headers


def decode_body(raw: bytes) -> dict[str, Any]:
    # As Go's json.Decoder on an empty body: every field zero. Anything else must be a JSON object.
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid request body: not an object")
    return body


def _field(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadRequest(f"invalid request body: {name} must be an integer")
    if kind is not int and not isinstance(value, kind):
        raise BadRequest(f"invalid request body: {name} must be a {kind.__name__}")
    return value


async def respond(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
    if isinstance(payload, bytes):
        body, ctype = payload, "text/plain; charset=utf-8"
    else:
        body, ctype = json.dumps(payload).encode(), "application/json"
    phrase = http.HTTPStatus(status).phrase
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}",
    ]
    if status != 204:
        lines.append(f"Content-Length: {len(body)}")
        if body:
            lines.append(f"Content-Type: {ctype}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body if status != 204 else b""))
    await writer.drain()


# Routes: path -> (method, needs a session, action) ------------------------------------------------------
def _root(f: FakeLibrespot, _: dict[str, Any]) -> Any:
    return {"playback_ready": f.player.session is not None}


def _play(f: FakeLibrespot, body: dict[str, Any]) -> None:
    uri = _field(body, "uri", str, "")
    if not uri:
        raise BadRequest("uri must be specified")
    skip_to = _field(body, "skip_to_uri", str, "")
    paused = _field(body, "paused", bool, False)
    position = _field(body, "position", int, 0)
    f.load(uri, skip_to=skip_to, paused=paused, position=max(0, position), origin="go-librespot")


def _seek(f: FakeLibrespot, body: dict[str, Any]) -> None:
    if "position" not in body:
        raise BadRequest("position must be specified")
    position = _field(body, "position", int, 0)
    relative = _field(body, "relative", bool, False)
    if position < 0 and not relative:
        raise BadRequest("position must be positive")
    f.seek(f.player.position() + position if relative else position)


def _volume(f: FakeLibrespot, body: dict[str, Any]) -> None:
    if "volume" not in body:
        raise BadRequest("volume must be specified")
    value = _field(body, "volume", int, 0)
    relative = _field(body, "relative", bool, False)
    if value < 0 and not relative:
        raise BadRequest("volume must be positive")
    target = f.player.steps_volume() + value if relative else value
    f.set_volume(max(0, min(f.player.steps, target)))


def _output(f: FakeLibrespot, body: dict[str, Any]) -> None:
    device = _field(body, "device", str, "") or str(f.config.get("audio_device", "default"))
    check_device(device)
    f.player.output = device


def _device_name(f: FakeLibrespot, body: dict[str, Any]) -> None:
    name = _field(body, "name", str, "")
    if not name:
        raise BadRequest("name must be specified")
    f.player.device_name = name


def _flag(attr: str, key: str) -> Any:
    def action(f: FakeLibrespot, body: dict[str, Any]) -> None:
        value = _field(body, key, bool, False)
        setattr(f.player, attr, value)
        f.events.emit(key, {"value": value})

    return action


def _next(f: FakeLibrespot, body: dict[str, Any]) -> None:
    uri = _field(body, "uri", str, "")
    if uri and uri in f.player.tracks:
        f.skip(f.player.tracks.index(uri) - f.player.index)
    else:
        f.skip(1)


def _prev(f: FakeLibrespot, _: dict[str, Any]) -> None:
    if f.player.position() > 3000:
        f.seek(0)
    else:
        f.skip(-1)


def _queue(_: FakeLibrespot, body: dict[str, Any]) -> None:
    if not _field(body, "uri", str, ""):
        raise BadRequest("uri must be specified")


def _fake_log(f: FakeLibrespot, _: dict[str, Any]) -> Any:
    return {
        "pid": os.getpid(),
        "requests": f.requests,
        "events": f.events.sent,
        "sessions": f.player.sessions,
        "session": f.player.session,
        "output": f.player.output,
        "volume": f.player.steps_volume(),
        "config": f.config,
        "ws_clients": len(f.events.clients),
    }


def _fake_transfer(f: FakeLibrespot, body: dict[str, Any]) -> None:
    f.connect(str(body.get("username", "alice")))
    f.load(
        str(body.get("uri", f"spotify:album:{fake_id('album')}")),
        paused=bool(body.get("paused", False)),
        position=int(body.get("position", 0)),
        origin="your_library",
    )


ROUTES: dict[tuple[str, str], tuple[bool, Any]] = {
    ("GET", "/"): (False, _root),
    ("GET", "/status"): (True, lambda f, _: f.player.status()),
    ("POST", "/token"): (True, lambda f, _: {"token": "fake-access-token"}),
    ("POST", "/set_device_name"): (False, _device_name),
    ("POST", "/player/play"): (True, _play),
    ("POST", "/player/resume"): (True, lambda f, _: f.resume()),
    ("POST", "/player/pause"): (True, lambda f, _: f.pause()),
    ("POST", "/player/playpause"): (True, lambda f, _: f.resume() if f.player.paused else f.pause()),
    ("POST", "/player/stop"): (True, lambda f, _: f.stop()),
    ("POST", "/player/next"): (True, _next),
    ("POST", "/player/prev"): (True, _prev),
    ("POST", "/player/seek"): (True, _seek),
    ("POST", "/player/volume"): (True, _volume),
    ("GET", "/player/volume"): (True, lambda f, _: {"value": f.player.steps_volume(), "max": f.player.steps}),
    ("POST", "/player/repeat_context"): (True, _flag("repeat_context", "repeat_context")),
    ("POST", "/player/repeat_track"): (True, _flag("repeat_track", "repeat_track")),
    ("POST", "/player/shuffle_context"): (True, _flag("shuffle", "shuffle_context")),
    ("POST", "/player/add_to_queue"): (True, _queue),
    ("POST", "/player/output"): (True, _output),
    # The phone and the test's eyes: no such paths in go-librespot.
    ("GET", "/_fake/log"): (False, _fake_log),
    ("POST", "/_fake/connect"): (False, lambda f, b: f.connect(str(b.get("username", "alice")))),
    ("POST", "/_fake/transfer"): (False, _fake_transfer),
    ("POST", "/_fake/pause"): (True, lambda f, _: f.pause()),
    ("POST", "/_fake/resume"): (True, lambda f, _: f.resume()),
    ("POST", "/_fake/volume"): (True, lambda f, b: f.set_volume(int(b["value"]))),
    ("POST", "/_fake/end_track"): (True, lambda f, _: f.end_track()),
    ("POST", "/_fake/event_lag"): (False, lambda f, b: setattr(f.events, "lag_s", float(b["ms"]) / 1000)),
    ("POST", "/_fake/disconnect"): (True, lambda f, _: f.disconnect()),
}


def check_device(device: str) -> None:
    """Open the ALSA PCM as go-librespot would (a PCM the node's asound.conf lacks is a 500)."""
    try:
        import alsaaudio  # noqa: PLC0415 - only the fake's output check needs it
    except ImportError:
        return
    try:
        pcm = alsaaudio.PCM(type=alsaaudio.PCM_PLAYBACK, device=device)
    except alsaaudio.ALSAAudioError as exc:
        raise Unresolvable(f"failed to open audio output {device}: {exc}") from None
    pcm.close()


# Start-up -----------------------------------------------------------------------------------------------
def load_config(config_dir: Path, overrides: list[str]) -> dict[str, Any]:
    path = next((config_dir / n for n in ("config.yml", "config.yaml") if (config_dir / n).exists()), None)
    config: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise SystemExit(f"failed loading config: {path}: not a mapping")
        config = loaded or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"invalid config override: {item}")
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    unknown = sorted(set(config) - KNOWN_KEYS) + sorted(
        f"server.{k}" for k in set(config.get("server") or {}) - SERVER_KEYS
    )
    if unknown:
        raise SystemExit(f"failed loading config: unknown keys {unknown}")
    if config.get("device_type", "computer") not in DEVICE_TYPES:
        raise SystemExit(f"invalid device type: {config.get('device_type')}")
    if int(config.get("volume_steps", 100)) < 1:
        raise SystemExit("volume_steps must be at least 1")
    return config


@contextlib.contextmanager
def locked(config_dir: Path) -> Iterator[None]:
    with (config_dir / "lockfile").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SystemExit("failed locking config directory: is another instance running?") from None
        yield


async def serve(config: dict[str, Any], config_dir: Path) -> None:
    fake = FakeLibrespot(config, config_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if (config.get("server") or {}).get("enabled"):
        await fake.start()
        print(
            f"api server listening on {fake.server_conf.get('address')}:{fake.port}",
            file=sys.stderr,
            flush=True,
        )
    await stop.wait()
    await fake.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="go-librespot")
    parser.add_argument("--config_dir", "-config_dir", default=str(Path.home() / ".config" / "go-librespot"))
    parser.add_argument("-c", "--conf", action="append", default=[], help="override a config key: key=value")
    args = parser.parse_args(argv)
    config_dir = Path(args.config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    config = load_config(config_dir, args.conf)
    with locked(config_dir):
        asyncio.run(serve(config, config_dir))


def install(directory: Path) -> Path:
    """An executable `go-librespot` in `directory` that runs this fake with the command line it is given."""
    return _script(directory / "go-librespot", "harness.go_librespot")


def _script(path: Path, module: str) -> Path:
    root = Path(__file__).resolve().parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nPYTHONPATH={root} exec {sys.executable} -m {module} "$@"\n')
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    main()
