"""The Spotify source: go-librespot driven through its HTTP API and `/events` WebSocket, always running."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, ClassVar

from node.adapters.alsa import alias_name
from node.adapters.child import Child, describe_exit, executable
from node.adapters.librespot import (
    Event,
    EventStream,
    LibrespotApi,
    LibrespotError,
    LibrespotRefusedError,
    LibrespotSettings,
    LibrespotUnreachableError,
    NoSessionError,
    Status,
    Track,
    render_config,
)
from node.framework.bus import Message
from node.framework.errors import CommandError, SubsystemUnavailableError
from node.framework.files import write_atomic
from node.framework.views import VolumeView, read_view
from node.sources import Source, SourceCommand, Transport, commands_of
from node.sources.spotify.models import (
    AddToQueue,
    PlayUri,
    SetRepeat,
    SetShuffle,
    SpotifyConfig,
    SpotifyState,
    looks_like_spotify,
    spotify_uri,
)
from node.sources.spotify.volume import VolumeLink

INSTALL_HINT = (
    "install it from https://github.com/devgianlu/go-librespot/releases (README: Spotify and ROC), "
    "or set spotify.binary"
)
PATHS: dict[Transport, str] = {
    "play": "/player/resume",
    "pause": "/player/pause",
    "toggle": "/player/playpause",
    "stop": "/player/stop",
    "next": "/player/next",
    "previous": "/player/prev",
}
# Events after which the whole state is read again (GET /status): the position and flags they imply.
REFRESHING = frozenset(
    {"playback_ready", "active", "inactive", "will_play", "playing", "paused", "not_playing", "stopped"}
    | {"repeat_context", "repeat_track"}
)
RECONNECT_FIRST = 0.05
# The state a transport command leads to once go-librespot has done it (None: it keeps the state).
LEADS_TO: dict[str, str | None] = {"play": "playing", "pause": "paused", "stop": None}
# How long an accepted command's outcome stands in for the state if no event ever confirms it.
EXPECTED_S = 2.0
RECONNECT_CAP = 1.0  # a restarted go-librespot is found again within a second of answering
NO_TRACK: dict[str, Any] = {
    "title": None,
    "artist": None,
    "artists": [],
    "album": None,
    "cover_url": None,
    "uri": None,
    "position_ms": None,
    "position_at": None,
    "duration_ms": None,
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _track_fields(track: Track | None) -> dict[str, Any]:
    if track is None:
        return dict(NO_TRACK)
    return {
        "title": track.name or None,
        "artist": ", ".join(track.artists) or None,
        "artists": list(track.artists),
        "album": track.album or None,
        "cover_url": track.cover_url,
        "uri": track.uri or None,
        "position_ms": track.position_ms,
        "position_at": _now_ms() if track.position_ms is not None else None,
        "duration_ms": track.duration_ms,
    }


def _status_of(status: Status) -> str:
    if status.track is None or status.stopped:
        return "connected"
    if status.buffering:
        return "buffering"
    return "paused" if status.paused else "playing"


def commands_for(state: str) -> list[SourceCommand]:
    """What go-librespot honours in each state (it answers 200 to everything, so we say it here)."""
    if state == "playing":
        return ["pause", "toggle", "stop", "next", "previous", "seek"]
    if state == "paused":
        return ["play", "toggle", "stop", "next", "previous", "seek"]
    if state == "buffering":
        return ["pause", "toggle", "stop", "next", "previous"]
    if state == "connected":
        return ["stop"]  # logs the session out: the speaker is free for another phone
    return []


class Spotify(Source[SpotifyState, SpotifyConfig]):
    name = "spotify"
    program = "go-librespot (its HTTP API and /events WebSocket)"
    loopback = 2
    unit = "go-librespot.service"
    description = "Spotify Connect through go-librespot, discoverable all the time"
    State = SpotifyState
    Config = SpotifyConfig
    Command = commands_of(PlayUri, SetShuffle, SetRepeat, AddToQueue)
    watches: ClassVar[tuple[str, ...]] = ("volume",)
    _expected: tuple[str | None, float] = (None, 0.0)  # what the last command leads to, and when

    # Lifecycle -------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        if self.config.manage == "child" and executable(self.config.binary) is None:
            raise SubsystemUnavailableError(f"go-librespot not found ({self.config.binary}): {INSTALL_HINT}")

    async def setup(self) -> None:
        cfg = self.config
        configured = Path(cfg.config_dir) if cfg.config_dir else self.ctx.node.data_dir / "spotify"
        self._dir = configured.expanduser()
        self._dir.mkdir(parents=True, exist_ok=True)
        self.api = LibrespotApi(cfg.address, cfg.port)
        self.link = VolumeLink() if cfg.volume == "node" else None
        self._expected = (None, 0.0)
        self._events: EventStream | None = None
        self._dirty = asyncio.Event()  # the whole state is to be read again
        self._session = False
        self._started_device = ""  # the audio_device of the config the running daemon read
        self._idle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._daemon: Child | None = None
        self._daemon_task: asyncio.Task[None] | None = None
        self.state = SpotifyState(state="unavailable", device_name=self._device_name(), device=self._device())
        if cfg.manage == "child":
            binary = executable(cfg.binary) or cfg.binary
            self._daemon = Child(
                "go-librespot",
                lambda: [binary, "--config_dir", str(self._dir)],
                log=self.log,
                on_exit=self._daemon_died,
            )
            self._write_config()
            self._daemon_task = asyncio.create_task(self._daemon.run(), name="spotify-daemon")
        else:
            self._write_config()  # read by go-librespot.service when it (re)starts
        await self._first_contact()

    async def _first_contact(self) -> None:
        """Wait (bounded) for the API, so the first state published is the daemon's, not a guess."""
        deadline = time.monotonic() + self.config.start_timeout_s
        delay = RECONNECT_FIRST
        while True:
            try:
                self._events = await self.api.open_events()
                await self._refresh()
            except LibrespotUnreachableError as exc:
                if time.monotonic() + delay > deadline:
                    await self._lost(f"go-librespot does not answer on {self.api.base}: {exc}")
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_CAP)
            else:
                return

    async def run(self) -> None:
        refresher = asyncio.create_task(self._refresher(), name="spotify-refresh")
        self._tasks.add(refresher)
        delay = RECONNECT_FIRST
        while True:
            try:
                if self._events is None:
                    self._events = await self.api.open_events()
                    await self._refresh()  # nothing is replayed on connect: what happened meanwhile
                delay = RECONNECT_FIRST
                async for event in self._events:
                    await self._on_event(event)
            except LibrespotUnreachableError as exc:
                await self._lost(f"go-librespot does not answer on {self.api.base}: {exc}")
            except LibrespotError as exc:
                self.log.warning("spotify: go-librespot answered something unexpected: %s", exc)
            if self._events is not None:
                await self._events.close()
                self._events = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_CAP)

    async def _refresher(self) -> None:
        """One `GET /status` for a burst of events (a track change is four of them)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._refresh()
            except LibrespotError as exc:  # the events stream notices a dead daemon and says so
                self.log.debug("spotify: status not read: %s", exc)

    async def teardown(self) -> None:
        self._cancel_idle()
        for task in list(getattr(self, "_tasks", ())):
            task.cancel()
        events = getattr(self, "_events", None)
        if events is not None:
            await events.close()
        daemon_task = getattr(self, "_daemon_task", None)
        if daemon_task is not None:
            daemon_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await daemon_task  # the process is gone (and its lock file free) before a new start

    async def on_config(self, old: SpotifyConfig, new: SpotifyConfig) -> bool:
        live = {"device_name", "volume", "idle_disconnect_s"}
        changed = {k for k in SpotifyConfig.model_fields if getattr(old, k) != getattr(new, k)}
        if not changed <= live:
            return False  # a new config file and a new go-librespot
        self._write_config()
        if "device_name" in changed:
            # Renamed live, session or not: the zeroconf advert follows.
            await self._call(self.api.set_device_name(self._device_name()))
            await self.set_state(device_name=self._device_name())
        if "volume" in changed:
            self.link = VolumeLink() if new.volume == "node" else None
        self._schedule_idle()
        return True

    async def on_get(self) -> None:
        with contextlib.suppress(LibrespotError):
            await self._refresh()

    # The daemon ------------------------------------------------------------------------------------
    def _device_name(self) -> str:
        return self.config.device_name or self.ctx.node.node_id

    def _device(self) -> str:
        # Before routing has spoken: the PCM that follows the current mode.
        return self.pcm or alias_name(self.name)

    def _write_config(self) -> None:
        cfg = self.config
        settings = LibrespotSettings(
            device_name=self._device_name(),
            device_type=cfg.device_type,
            audio_device=self._device(),
            address=cfg.address,
            port=cfg.port,
            bitrate=cfg.bitrate,
            disable_autoplay=cfg.disable_autoplay,
            zeroconf_port=cfg.zeroconf_port,
            persist_credentials=cfg.persist_credentials,
            log_level=cfg.log_level,
        )
        write_atomic(self._dir / "config.yml", render_config(settings).encode())
        if self._daemon is not None and self._daemon.pid is None:
            self._started_device = settings.audio_device  # what the next start reads

    async def _daemon_died(self, code: int, delay: float) -> None:
        self._session = False
        self._write_config()  # the next start opens the PCM routing assigns now
        await self._update(
            state="unavailable",
            error=f"go-librespot exited with {describe_exit(code)}; started again in {delay:.1f} s",
            restarts=self.state.restarts + 1,
            user=None,
            **NO_TRACK,
        )

    async def _lost(self, reason: str) -> None:
        self._session = False
        if self.state.state != "unavailable" or self.state.error is None:
            await self._update(state="unavailable", error=reason, user=None, **NO_TRACK)

    # State -----------------------------------------------------------------------------------------
    async def _update(self, **changes: Any) -> None:
        if "state" in changes:
            changes["commands"] = commands_for(changes["state"])
            if changes["state"] == self._expected[0] or changes["state"] in ("idle", "unavailable"):
                self._expected = (None, 0.0)
        await self.set_state(**changes)
        self._schedule_idle()

    async def _refresh(self) -> None:
        """Read the whole player state (on connect, and after each event that changes it)."""
        status = await self.api.status()
        if status is None:
            self._session = False
            await self._update(
                state="idle", error=None, user=None, volume=None, device_name=self._device_name(), **NO_TRACK
            )
            return
        if not self._session:
            self._session = True
            await self._session_started(status)
        repeat = "track" if status.repeat_track else "context" if status.repeat_context else "off"
        steps = status.volume_steps or 100
        state, track = _status_of(status), _track_fields(status.track)
        if state != "playing" and (state, track["position_ms"]) == (self.state.state, self.state.position_ms):
            track["position_at"] = self.state.position_at  # nothing moved: the same state, not a new one
        await self._update(
            state=state,
            error=None,
            user=status.username or None,
            device_name=status.device_name or self._device_name(),
            shuffle=status.shuffle,
            repeat=repeat,
            volume=round(status.volume * 100 / steps) if status.volume is not None else None,
            **track,
        )

    async def _session_started(self, status: Status) -> None:
        """A phone picked this speaker: the PCM routing assigns now, and the node's volume."""
        if self.pcm and self.pcm != self._started_device:
            try:
                await self.api.output(self.pcm)
                self._started_device = self.pcm
            except LibrespotError as exc:
                self.log.warning("spotify: cannot move the new session to %s: %s", self.pcm, exc)
        if self.link is not None:
            if status.volume_steps:
                self.link.steps = status.volume_steps
            value = self.link.session_started(status.volume)
            if value is not None:
                await self._post_volume(value)

    async def _on_event(self, event: Event) -> None:
        data = event.data
        if event.type == "metadata":
            await self._update(**_track_fields(Track.parse(data)))
        elif event.type == "seek":
            position = data.get("position")
            if isinstance(position, int) and position >= 0:
                await self.set_state(position_ms=position, position_at=_now_ms())
        elif event.type == "volume":
            await self._on_spotify_volume(data)
        elif event.type == "shuffle_context":
            await self.set_state(shuffle=data.get("value") is True)
        elif event.type in REFRESHING:
            self._dirty.set()

    # Volume ----------------------------------------------------------------------------------------
    async def _on_spotify_volume(self, data: Any) -> None:
        value, top = data.get("value"), data.get("max")
        if not isinstance(value, int) or isinstance(value, bool):
            return
        steps = top if isinstance(top, int) and top > 0 else 100
        await self.set_state(volume=round(value * 100 / steps))
        if self.link is None or self.link.node is None:
            return  # ignored, or this node has no volume to drive
        self.link.steps = steps
        percent = self.link.from_spotify(value)
        if percent is not None:
            # The phone's slider moved: the node's one volume follows (and answers on `volume`).
            await self.ctx.bus.publish(self.ctx.topics.of("volume/set"), f'{{"percent": {percent}}}'.encode())

    async def on_source_topic(self, message: Message, path: str) -> None:
        if path != "volume" or self.link is None:
            return
        view = read_view(VolumeView, message.payload, self.log)
        if view is None or not message.payload:
            return
        if not self._session:
            self.link.node_is(view.percent)
            return
        value = self.link.from_node(view.percent)
        if value is not None:
            await self._post_volume(value)

    async def _post_volume(self, value: int) -> None:
        try:
            await self.api.set_volume(value)
        except LibrespotError as exc:
            self.log.info("spotify: volume %d not sent: %s", value, exc)

    # Idle disconnect -------------------------------------------------------------------------------
    def _schedule_idle(self) -> None:
        idle = self.state.state in ("connected", "paused")
        if not idle or self.config.idle_disconnect_s <= 0:
            self._cancel_idle()
        elif self._idle is None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.config.idle_disconnect_s, self._idle_expired)

    def _cancel_idle(self) -> None:
        idle, self._idle = getattr(self, "_idle", None), None
        if idle is not None:
            idle.cancel()

    def _idle_expired(self) -> None:
        self._idle = None
        task = asyncio.create_task(self._disconnect_idle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _disconnect_idle(self) -> None:
        if self.state.state not in ("connected", "paused"):
            return
        self.log.info("spotify: idle for %.0f s; logging the session out", self.config.idle_disconnect_s)
        with contextlib.suppress(LibrespotError):
            await self.api.post("/player/stop")  # with zeroconf this frees the speaker

    # Commands --------------------------------------------------------------------------------------
    async def _call(self, request: Any) -> Any:
        """Await an API call; its failures as coded errors on `<base>/error`."""
        try:
            return await request
        except NoSessionError as exc:
            raise CommandError("no_session", str(exc)) from None
        except LibrespotUnreachableError as exc:
            raise CommandError("unavailable", str(exc)) from None
        except LibrespotRefusedError as exc:
            code = "invalid_payload" if exc.status == 400 else "spotify_error"
            raise CommandError(code, str(exc)) from None
        except LibrespotError as exc:
            raise CommandError("spotify_error", str(exc)) from None

    def _need_session(self) -> None:
        if self.state.state == "unavailable":
            raise CommandError(
                "unavailable", f"go-librespot is not running: {self.state.error or ''}".rstrip(": ")
            )
        if self.state.state == "idle":
            raise CommandError("no_session", "no Spotify session: pick this speaker in a Spotify app first")

    def _judged_state(self) -> str:
        """The state a command is judged by: what the last accepted one leads to, until events say.

        go-librespot answers a POST at once and tells what it did on /events a little later: a pause
        tapped right after a play must not be refused because the state still says paused.
        """
        expected, at = self._expected
        if expected is not None and time.monotonic() - at < EXPECTED_S:
            return expected
        return self.state.state

    async def transport(self, command: Transport) -> None:
        self._need_session()
        now = self._judged_state()
        can = commands_for(now)
        if command not in can:
            listed = ", ".join(can) or "nothing"
            raise CommandError("unsupported", f"spotify is {now}: it cannot {command} now ({listed})")
        await self._call(self.api.post(PATHS[command]))
        if command == "toggle":
            command = "pause" if now in ("playing", "buffering") else "play"
        if command in LEADS_TO:
            self._expected = (LEADS_TO[command], time.monotonic())

    async def seek(self, position_ms: int) -> None:
        self._need_session()
        if "seek" not in self.state.commands:
            raise CommandError("unsupported", f"spotify is {self.state.state}: nothing to seek in")
        duration = self.state.duration_ms
        if duration is not None and position_ms > duration:
            raise CommandError(
                "out_of_range", f"{position_ms} ms is past the end of the track ({duration} ms)"
            )
        await self._call(self.api.seek(position_ms))

    def parse_source_text(self, text: str) -> Any:
        if looks_like_spotify(text):
            return {"play": text}
        return text

    async def on_source_command(self, command: Any) -> None:
        if isinstance(command, PlayUri):
            uri = self._uri(command.play)
            skip_to = self._uri(command.skip_to) if command.skip_to else ""
            self._need_session()
            await self._call(
                self.api.play(uri, skip_to=skip_to, paused=command.paused, position_ms=command.position_ms)
            )
        elif isinstance(command, AddToQueue):
            uri = self._uri(command.queue)
            self._need_session()
            await self._call(self.api.post("/player/add_to_queue", {"uri": uri}))
        elif isinstance(command, SetShuffle):
            self._need_session()
            await self._call(self.api.post("/player/shuffle_context", {"shuffle_context": command.shuffle}))
            await self.publish_state(force=True)
        elif isinstance(command, SetRepeat):
            self._need_session()
            await self._call(
                self.api.post("/player/repeat_track", {"repeat_track": command.repeat == "track"})
            )
            if command.repeat != "track":
                context = command.repeat == "context"
                await self._call(self.api.post("/player/repeat_context", {"repeat_context": context}))
            await self.publish_state(force=True)

    @staticmethod
    def _uri(text: str) -> str:
        uri = spotify_uri(text)
        if uri is None:
            raise CommandError(
                "invalid_uri",
                f"not a Spotify URI or link: {text[:100]!r} (spotify:track:<22 characters>, "
                "spotify:album:..., spotify:playlist:..., https://open.spotify.com/...)",
            )
        return uri

    # Routing -----------------------------------------------------------------------------------------
    async def move_to(self, pcm: str) -> None:
        self._write_config()  # a restart (or the unit's) opens the new PCM at once
        if self._session:
            try:
                # The session, the track and its position stay: only the ALSA output is reopened.
                await self.api.output(pcm)
                self._started_device = pcm
            except NoSessionError:
                self._session = False
            except LibrespotError as exc:
                self.log.warning("spotify: /player/output %s failed: %s", pcm, exc)
        await self.set_state(device=pcm)
