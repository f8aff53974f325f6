"""The Radio subsystem: the glue between its topics, the mpv player, the station lists and the search."""

from __future__ import annotations

import asyncio
import ctypes.util
import secrets
import time
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, TypeAdapter

from node.adapters.http_client import HttpClientError
from node.adapters.radiobrowser import RadioBrowser, RadioBrowserError
from node.adapters.urlguard import UnresolvableHostError, UnsafeURLError
from node.framework.errors import CommandError, SubsystemUnavailableError
from node.framework.subsystem import Owned
from node.sources import Source, SourceCommand, Transport, commands_of, split_title
from node.sources.radio import stations
from node.sources.radio.models import (
    AddCustom,
    AddFavorite,
    BrokenList,
    IndexState,
    MoveFavorite,
    PlayStation,
    PlayUrl,
    RadioConfig,
    RadioData,
    RadioState,
    RadioStation,
    RefreshIndex,
    RemoveStation,
    ResetBroken,
    SearchRequest,
    StationList,
    UpdateCustom,
    is_directory_id,
    is_station_id,
)
from node.sources.radio.playlists import PlaylistError, stream_of
from node.sources.radio.search import StationSearch

if TYPE_CHECKING:
    from node.adapters.mpv import MpvPlayer, PlayerSnapshot


class Radio(Source[RadioState, RadioConfig]):
    name = "radio"
    program = "mpv (libmpv, in the node's process)"
    loopback = 3
    description = "internet radio (mpv, Radio Browser): play, favorites, custom and broken stations, search"
    State = RadioState
    Config = RadioConfig
    Data = RadioData
    Command = commands_of(PlayStation, PlayUrl)
    requests: ClassVar[dict[str, type[BaseModel]]] = {"search": SearchRequest}
    request_topic = "radio"
    owned: ClassVar[dict[str, Owned]] = {
        "radio/favorites": Owned(StationList, TypeAdapter(AddFavorite | RemoveStation | MoveFavorite)),
        "radio/custom": Owned(StationList, TypeAdapter(AddCustom | UpdateCustom | RemoveStation)),
        "radio/broken": Owned(BrokenList, TypeAdapter(ResetBroken)),
        "radio/index": Owned(IndexState, TypeAdapter(RefreshIndex)),
    }

    data: RadioData

    # Lifecycle -------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        # Only looked up here: loading libmpv costs memory the node should not spend before a first play.
        if ctypes.util.find_library("mpv") is None:
            raise SubsystemUnavailableError("libmpv is not installed (apt install libmpv2)")

    async def setup(self) -> None:
        self._player: MpvPlayer | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._paused_at: float | None = None
        self._played = False  # the current station produced audio since it was tuned
        self.directory = RadioBrowser(
            base_url=self.config.directory_url or None, timeout=self.config.directory_timeout_s
        )
        self._search = StationSearch(
            self.config, self.directory, self.ctx.node.data_dir / "radio", self.log, self._publish_index
        )
        self.state = RadioState(
            station=self.data.last,
            favorite=stations.is_favorite(self.data, self.data.last),
            device=self._device(),
        )
        self.state = self.state.model_copy(update={"commands": self._commands(self.state)})
        await self._publish_lists()

    async def run(self) -> None:
        await self._search.refresh_loop()

    async def teardown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        player, self._player = getattr(self, "_player", None), None
        if player is not None:
            await player.close()

    async def on_config(self, old: RadioConfig, new: RadioConfig) -> bool:
        return False  # a new player and directory client with the new settings

    # Player ------------------------------------------------------------------------------------------
    def _device(self) -> str:
        if self.config.audio_device:
            return self.config.audio_device
        if self.pcm:
            return f"alsa/{self.pcm}"
        return "auto"

    async def _ensure_player(self) -> MpvPlayer:
        if self._player is None:
            from node.adapters.mpv import MpvPlayer, PlayerOptions  # noqa: PLC0415 - libmpv on first play

            cfg = self.config
            options = PlayerOptions(
                audio_device=self._device(),
                ao=cfg.ao or None,
                network_timeout=cfg.network_timeout_s,
                start_timeout=cfg.start_timeout_s,
                stall_timeout=cfg.stall_timeout_s,
                retry_attempts=cfg.retry_attempts,
                retry_first=cfg.retry_first_s,
                retry_cap=cfg.retry_cap_s,
                user_agent=self.directory.user_agent,
            )
            self._player = MpvPlayer(options)
        return self._player

    async def _watch(self, player: MpvPlayer) -> None:
        async for snap in player.updates():
            try:
                await self._on_snapshot(snap)
            except Exception:
                self.log.exception("radio: handling a player update failed")

    async def _on_snapshot(self, snap: PlayerSnapshot) -> None:
        station = self.state.station
        if snap.state == "playing" and not self._played:
            self._played = True
            if station is not None and station.id in self.data.broken:
                # It plays again: whatever broke it is over.
                stations.unbreak(self.data, [station.id])
                await self._save_lists()
        failed = snap.state == "error" and station is not None and not self._played and snap.error
        if failed and station is not None and snap.error and not _output_fault(snap.error):
            stations.mark_broken(self.data, station, snap.error)
            await self._save_lists()
        artist, title = split_title(snap.title)
        await self._update(
            state=snap.state,
            stream_title=snap.title,
            title=title or (station.name if station else None),
            artist=artist,
            error=snap.error,
            retries=snap.retries,
        )

    async def _update(self, **changes: Any) -> None:
        merged = self.state.model_copy(update=changes)
        changes["commands"] = self._commands(merged)
        changes["favorite"] = stations.is_favorite(self.data, merged.station)
        await self.set_state(**changes)

    def _commands(self, state: RadioState) -> list[SourceCommand]:
        commands: list[SourceCommand] = []
        if state.station is not None:
            if state.state in ("idle", "paused", "error"):
                commands.append("play")
            if state.state in ("playing", "buffering"):
                commands.append("pause")
            if state.state in ("playing", "paused", "idle"):
                commands.append("toggle")
            if state.state != "idle":
                commands.append("stop")
        elif self.data.favorites:
            commands.append("play")
        others = [f for f in self.data.favorites if state.station is None or f.id != state.station.id]
        if others:
            commands += ["next", "previous"]
        return commands

    async def _tune(self, station: RadioStation) -> None:
        """Validate the URL (SSRF), then play; the outcome arrives as player snapshots."""
        try:
            stream = await stream_of(
                station.url,
                allow_private=self.config.allow_private_urls,
                user_agent=self.directory.user_agent,
                timeout=self.config.network_timeout_s,
            )
        except UnresolvableHostError as exc:
            raise CommandError("unresolvable_host", f"{station.name}: {exc}") from None
        except UnsafeURLError as exc:
            raise CommandError("unsafe_url", f"{station.name}: {exc}") from None
        except (HttpClientError, PlaylistError) as exc:
            stations.mark_broken(self.data, station, f"playlist: {exc}")
            await self._save_lists()
            raise CommandError("station_failed", f"{station.name}: its playlist: {exc}") from None
        player = await self._ensure_player()
        self._played = False
        self._paused_at = None
        self.data.last = station
        self.save_data()
        await self._update(
            station=station,
            state="buffering",
            title=station.name,
            artist=None,
            album=station.name,
            cover_url=station.logo or None,
            stream_title=None,
            error=None,
            retries=0,
        )
        await player.play(stream)
        if self._watcher is None:
            # Only now: its first snapshot is the current one, and a new player's, taken before this
            # play, says `idle`, which would undo the `buffering` above and refuse a pause meanwhile.
            self._watcher = asyncio.create_task(self._watch(player), name="radio-player")
        if self.config.click_counting and not station.custom and is_directory_id(station.id):
            self._spawn(self._click(station.id))

    async def _click(self, station_id: str) -> None:
        try:
            await self.directory.click(station_id)
        except RadioBrowserError as exc:
            self.log.info("radio: click count for %s not sent: %s", station_id, exc)
            await self._search.heard(exc)
        else:
            await self._search.heard(None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Commands --------------------------------------------------------------------------------------
    def parse_source_text(self, text: str) -> Any:
        if text.startswith(("http://", "https://")):
            return {"url": text}
        if is_station_id(text) and (text.startswith("custom-") or "-" in text):
            return {"play": text}
        return text

    async def on_source_command(self, command: Any) -> None:
        if isinstance(command, PlayStation):
            await self._tune(await self._find(command.play))
        elif isinstance(command, PlayUrl):
            await self._tune(
                RadioStation(
                    id=f"url-{secrets.token_hex(4)}",
                    name=command.name or command.url.split("//", 1)[1][:200],
                    url=command.url,
                    custom=True,
                )
            )

    async def seek(self, position_ms: int) -> None:
        raise CommandError("unsupported", "a live radio stream cannot seek")

    async def transport(self, command: Transport) -> None:
        station, state = self.state.station, self.state.state
        command = self.toggled(command)
        if command == "play":
            if state == "paused" and self._player is not None and not self._paused_too_long():
                self._paused_at = None
                await self._player.resume()
                return
            target = station or (self.data.favorites[0] if self.data.favorites else None)
            if target is None:
                raise CommandError("no_station", "no station to play: pick one, or add favorites")
            if state in ("playing", "buffering") and station is not None:
                return  # already on it
            await self._tune(target)
        elif command == "pause":
            if state not in ("playing", "buffering") or self._player is None:
                raise CommandError("unsupported", f"the radio is {state}: nothing to pause")
            self._paused_at = time.monotonic()
            await self._player.pause()
        elif command == "stop":
            if self._player is not None:
                await self._player.stop()
            await self._update(state="idle", error=None, stream_title=None, artist=None, retries=0)
        else:
            await self._tune(stations.neighbour(self.data, station, 1 if command == "next" else -1))

    def _paused_too_long(self) -> bool:
        if self._paused_at is None:
            return False
        return time.monotonic() - self._paused_at > self.config.pause_reload_s

    async def _find(self, station_id: str) -> RadioStation:
        kept = (*self.data.custom, *self.data.favorites, self.state.station, self.data.last)
        return await self._search.find(station_id, kept)

    # Search ------------------------------------------------------------------------------------------
    async def on_request(self, verb: str, request: Any) -> Any:
        assert isinstance(request, SearchRequest)
        return await self._search.search(request, self.data.broken)

    # Owned topics --------------------------------------------------------------------------------------
    def parse_owned_text(self, path: str, text: str) -> Any:
        if path == "radio/broken":
            return {"reset": text}
        if path == "radio/index" and text == "refresh":
            return {"refresh": True}
        if path == "radio/favorites" and is_station_id(text):
            return {"add": text}
        return text

    async def on_owned_command(self, path: str, command: Any) -> None:
        if path == "radio/favorites":
            await self._favorites(command)
        elif path == "radio/custom":
            await self._custom(command)
        elif path == "radio/broken":
            stations.reset_broken(self.data, command.reset)
            await self._save_lists()
        elif path == "radio/index":
            self._search.request_refresh()

    async def _favorites(self, command: Any) -> None:
        if isinstance(command, AddFavorite):
            if stations.has_favorite(self.data, command.add):
                return await self._publish_lists(force=True)  # already there: the echo says so
            stations.check_favorite_room(self.data)
            stations.add_favorite(self.data, await self._find(command.add))
        elif isinstance(command, RemoveStation):
            stations.remove_favorite(self.data, command.remove)
        else:
            stations.move_favorite(self.data, command.move, command.to)
        await self._save_lists()
        await self._update()
        return None

    async def _custom(self, command: Any) -> None:
        allow, data_dir = self.config.allow_private_urls, self.ctx.node.data_dir
        if isinstance(command, AddCustom):
            stations.add_custom(self.data, command.add, allow_private=allow, data_dir=data_dir)
        elif isinstance(command, UpdateCustom):
            stations.update_custom(self.data, command.update, allow_private=allow, data_dir=data_dir)
        else:
            stations.remove_custom(self.data, command.remove)
        await self._save_lists()
        await self._update()

    async def _save_lists(self) -> None:
        self.save_data()
        await self._publish_lists()

    async def _publish_lists(self, *, force: bool = False) -> None:
        await self.publish_owned("radio/favorites", StationList(stations=self.data.favorites), force=force)
        await self.publish_owned("radio/custom", StationList(stations=self.data.custom), force=force)
        await self.publish_owned("radio/broken", BrokenList(stations=self.data.broken), force=force)
        await self.publish_owned("radio/index", self._search.state, force=force)

    async def _publish_index(self, state: IndexState) -> None:
        await self.publish_owned("radio/index", state)

    # Routing -------------------------------------------------------------------------------------------
    async def move_to(self, pcm: str) -> None:
        device = self._device()
        if self._player is not None and not self.config.audio_device:
            # mpv reopens only its audio output: the stream, and the listener's place in it, go on.
            await self._player.set_audio_device(device)
        await self.set_state(device=device)


def _output_fault(error: str) -> bool:
    """An error of the audio output (device busy or missing) is not the station's fault."""
    lowered = error.lower()
    return "audio output" in lowered or "audio device" in lowered or "ao_init" in lowered
