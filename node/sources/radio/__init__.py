"""The `radio` source: internet radio through libmpv; favorites, custom and broken stations; search."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes.util
import json
import re
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, TypeAdapter

from node.adapters.radiobrowser import (
    RadioBrowser,
    RadioBrowserError,
    RadioBrowserHTTPError,
    Station,
    dedupe,
    http_request,
)
from node.adapters.urlguard import UnsafeURLError, check_address, redirect_checker, resolve_url
from node.framework.bus import Message
from node.framework.contract import TRANSPORTS, SourceCommand, split_title
from node.framework.errors import CommandError, SubsystemUnavailableError
from node.framework.files import write_atomic
from node.framework.subsystem import Owned, Subsystem
from node.sources.radio.index import StationIndex
from node.sources.radio.models import (
    LOCAL_LOGO,
    MAX_BROKEN,
    MAX_CUSTOM,
    MAX_FAVORITES,
    RECENT_MAX,
    AddCustom,
    AddFavorite,
    BrokenList,
    BrokenStation,
    IndexState,
    MoveFavorite,
    PlayStation,
    PlayUrl,
    RadioCommand,
    RadioConfig,
    RadioData,
    RadioState,
    RadioStation,
    RefreshIndex,
    RemoveStation,
    ResetBroken,
    SearchRequest,
    SearchResult,
    Seek,
    StationFields,
    StationList,
    UpdateCustom,
    from_directory,
    is_directory_id,
    is_station_id,
)

if TYPE_CHECKING:
    from node.adapters.mpv import MpvPlayer, PlayerSnapshot

# Played through our own fetch and check; `.m3u8` is HLS, which mpv must open itself.
PLAYLIST_EXTENSIONS = (".pls", ".m3u", ".asx", ".xspf")
PLAYLIST_MAX_BYTES = 64 * 1024
_PLAYLIST_URL = re.compile(
    r"^\s*File\d+\s*=\s*(\S+)\s*$"  # PLS
    r"|^\s*([a-z][a-z0-9+.-]*://\S+)\s*$"  # M3U: a URL alone on its line
    r"|<ref\s+href\s*=\s*\"([^\"]+)\""  # ASX
    r"|<location>\s*([^<\s]+)\s*</location>",  # XSPF
    re.IGNORECASE | re.MULTILINE,
)


# The subsystem -----------------------------------------------------------------------------------
class Radio(Subsystem[RadioState, RadioConfig]):
    name = "radio"
    topic = "source/radio"
    description = "internet radio (mpv, Radio Browser): play, favorites, custom and broken stations, search"
    State = RadioState
    Config = RadioConfig
    Data = RadioData
    Command = TypeAdapter(RadioCommand)
    requests: ClassVar[dict[str, type[BaseModel]]] = {"search": SearchRequest}
    request_topic = "radio"
    owned: ClassVar[dict[str, Owned]] = {
        "radio/favorites": Owned(StationList, TypeAdapter(AddFavorite | RemoveStation | MoveFavorite)),
        "radio/custom": Owned(StationList, TypeAdapter(AddCustom | UpdateCustom | RemoveStation)),
        "radio/broken": Owned(BrokenList, TypeAdapter(ResetBroken)),
        "radio/index": Owned(IndexState, TypeAdapter(RefreshIndex)),
    }
    watches: ClassVar[tuple[str, ...]] = ("routing",)

    data: RadioData

    @classmethod
    def absent_state(cls, reason: str) -> BaseModel | None:
        return RadioState(state="unavailable", error=reason)

    async def check_environment(self) -> None:
        # Only looked up here: loading libmpv costs memory the node should not spend before a first play.
        if ctypes.util.find_library("mpv") is None:
            raise SubsystemUnavailableError("libmpv is not installed (apt install libmpv2)")

    async def setup(self) -> None:
        self._player: MpvPlayer | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._routed_pcm = ""
        self._paused_at: float | None = None
        self._played = False  # the current station produced audio since it was tuned
        self._recent: OrderedDict[str, RadioStation] = OrderedDict()
        self._refresh_now = asyncio.Event()
        self._index_state = IndexState()
        directory = self.ctx.node.data_dir / "radio"
        self.index = StationIndex(directory, max_age=max(self.config.index_refresh_h, 0.001) * 3600)
        self.directory = RadioBrowser(
            base_url=self.config.directory_url or None, timeout=self.config.directory_timeout_s
        )
        built = self.index.built_at()
        self._index_state = IndexState(built_at=built, stations=self._index_count() if built else 0)
        self.state = RadioState(
            station=self.data.last, favorite=self._is_favorite(self.data.last), device=self._device()
        )
        self.state = self.state.model_copy(update={"commands": self._commands(self.state)})
        await self._publish_lists()

    def _index_count(self) -> int:
        # The count is kept next to the index so showing it never loads 50,000 stations.
        try:
            return int(json.loads((self.ctx.node.data_dir / "radio" / "index-count.json").read_text()))
        except (OSError, ValueError, TypeError):
            return 0

    async def run(self) -> None:
        await self._index_loop()

    async def teardown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        player, self._player = getattr(self, "_player", None), None
        if player is not None:
            await player.close()

    # Player ------------------------------------------------------------------------------------------
    def _device(self) -> str:
        if self.config.audio_device:
            return self.config.audio_device
        if self._routed_pcm:
            return f"alsa/{self._routed_pcm}"
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
            self._watcher = asyncio.create_task(self._watch(self._player), name="radio-player")
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
                await self._unbreak([station.id])
        failed = snap.state == "error" and station is not None and not self._played and snap.error
        if failed and station is not None and snap.error and not _output_fault(snap.error):
            await self._mark_broken(station, snap.error)
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
        changes["favorite"] = self._is_favorite(merged.station)
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
            stream = await self._stream_of(station.url)
        except UnsafeURLError as exc:
            raise CommandError("unsafe_url", f"{station.name}: {exc}") from None
        except RadioBrowserError as exc:
            await self._mark_broken(station, f"playlist: {exc}")
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
        if self.config.click_counting and not station.custom and is_directory_id(station.id):
            self._spawn(self._click(station.id))

    async def _stream_of(self, url: str) -> str:
        """The URL to hand to mpv: the station's, or the first entry of its playlist, each one checked.

        mpv would expand a playlist itself and open its entries unchecked; those URLs come from the
        station's server, not from the user or the directory, so they get the same SSRF check here.
        """
        allow = self.config.allow_private_urls
        safe = await resolve_url(url, allow_private=allow)
        if not urlsplit(url).path.lower().endswith(PLAYLIST_EXTENSIONS):
            return url
        response = await http_request(
            "GET",
            url,
            headers={"User-Agent": self.directory.user_agent},
            timeout=self.config.network_timeout_s,
            max_bytes=PLAYLIST_MAX_BYTES,
            connect_address=safe.address,
            max_redirects=3,
            redirect_check=redirect_checker(allow_private=allow),
        )
        if not 200 <= response.status < 300:
            raise RadioBrowserHTTPError(response.status, f"HTTP {response.status} {response.reason}")
        entries = playlist_entries(response.body.decode("utf-8", errors="replace"))
        if not entries:
            raise RadioBrowserError("no stream URL in it")
        entry = entries[0]
        await resolve_url(entry, allow_private=allow)
        return entry

    async def _click(self, station_id: str) -> None:
        try:
            await self.directory.click(station_id)
        except RadioBrowserError as exc:
            self.log.info("radio: click count for %s not sent: %s", station_id, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Commands --------------------------------------------------------------------------------------
    def parse_text(self, text: str) -> Any:
        if text in TRANSPORTS:
            return text
        if text.startswith(("http://", "https://")):
            return {"url": text}
        if is_station_id(text) and (text.startswith("custom-") or "-" in text):
            return {"play": text}
        return text

    async def on_command(self, command: Any) -> None:
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
        elif isinstance(command, Seek):
            raise CommandError("unsupported", "a live radio stream cannot seek")
        else:
            await self._transport(command)

    async def _transport(self, command: str) -> None:
        station, state = self.state.station, self.state.state
        if command == "toggle":
            command = "pause" if state in ("playing", "buffering") else "play"
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
            await self._tune(self._neighbour(1 if command == "next" else -1))

    def _paused_too_long(self) -> bool:
        if self._paused_at is None:
            return False
        return time.monotonic() - self._paused_at > self.config.pause_reload_s

    def _neighbour(self, step: int) -> RadioStation:
        favorites = self.data.favorites
        if not favorites:
            raise CommandError("unsupported", "next and previous go through the favorites: there are none")
        current = self.state.station
        ids = [f.id for f in favorites]
        if current is None or current.id not in ids:
            return favorites[0 if step > 0 else -1]
        return favorites[(ids.index(current.id) + step) % len(favorites)]

    async def _find(self, station_id: str) -> RadioStation:
        """The station with this id, from what the node keeps, then the local index, then the directory."""
        for station in (*self.data.custom, *self.data.favorites, self.state.station, self.data.last):
            if station is not None and station.id == station_id:
                return station
        if station_id in self._recent:
            return self._recent[station_id]
        if self.index.path.exists():
            found = from_directory(
                [s] if (s := await asyncio.to_thread(self.index.get, station_id)) else [], ()
            )
            if found:
                return found[0]
        if is_directory_id(station_id):
            try:
                stations = await self.directory.by_ids([station_id])
            except RadioBrowserError as exc:
                raise CommandError(
                    "directory_unreachable", f"station {station_id} is not known here and {exc}"
                ) from None
            playable = from_directory(stations, ())
            if playable:
                return playable[0]
        raise CommandError("unknown_station", f"no station {station_id!r}")

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
            ids = list(self.data.broken) if command.reset == "all" else [command.reset]
            if command.reset != "all" and command.reset not in self.data.broken:
                raise CommandError("unknown_station", f"station {command.reset!r} is not marked broken")
            await self._unbreak(ids)
        elif path == "radio/index":
            self._refresh_now.set()

    async def _favorites(self, command: Any) -> None:
        favorites = list(self.data.favorites)
        ids = [f.id for f in favorites]
        if isinstance(command, AddFavorite):
            if command.add in ids:
                return await self._publish_lists(force=True)  # already there: the echo says so
            if len(favorites) >= MAX_FAVORITES:
                raise CommandError("too_many", f"at most {MAX_FAVORITES} favorites")
            favorites.append(await self._find(command.add))
        elif isinstance(command, RemoveStation):
            if command.remove not in ids:
                raise CommandError("unknown_station", f"{command.remove!r} is not a favorite")
            favorites.pop(ids.index(command.remove))
        else:
            if command.move not in ids:
                raise CommandError("unknown_station", f"{command.move!r} is not a favorite")
            moved = favorites.pop(ids.index(command.move))
            favorites.insert(min(command.to, len(favorites)), moved)
        self.data.favorites = favorites
        self.save_data()
        await self._publish_lists()
        await self._update()
        return None

    async def _custom(self, command: Any) -> None:
        custom = list(self.data.custom)
        ids = [c.id for c in custom]
        if isinstance(command, AddCustom):
            if len(custom) >= MAX_CUSTOM:
                raise CommandError("too_many", f"at most {MAX_CUSTOM} custom stations")
            fields = command.add.model_dump()
            self._check_custom(fields)
            custom.append(RadioStation(id=f"custom-{secrets.token_hex(6)}", custom=True, **fields))
        elif isinstance(command, UpdateCustom):
            patch = command.update
            if patch.id not in ids:
                raise CommandError("unknown_station", f"no custom station {patch.id!r}")
            index = ids.index(patch.id)
            changes = patch.model_dump(exclude_unset=True, exclude={"id"})
            fields = {**custom[index].model_dump(exclude={"id", "custom"}), **changes}
            try:
                checked = StationFields.model_validate(fields).model_dump()
            except ValueError as exc:
                raise CommandError("invalid_payload", str(exc)) from None
            self._check_custom(checked)
            custom[index] = RadioStation(id=patch.id, custom=True, **checked)
            # A favorite is a copy: keep it the same as the station it copies.
            self.data.favorites = [custom[index] if f.id == patch.id else f for f in self.data.favorites]
        else:
            if command.remove not in ids:
                raise CommandError("unknown_station", f"no custom station {command.remove!r}")
            custom.pop(ids.index(command.remove))
            self.data.favorites = [f for f in self.data.favorites if f.id != command.remove]
        self.data.custom = custom
        self.save_data()
        await self._publish_lists()
        await self._update()

    def _check_custom(self, fields: dict[str, Any]) -> None:
        """What can be judged without the network: an address written as an IP, a logo on the node."""
        host = _literal_host(fields["url"])
        if host is not None:
            try:
                check_address(host, allow_private=self.config.allow_private_urls)
            except UnsafeURLError as exc:
                raise CommandError("unsafe_url", str(exc)) from None
        logo = fields.get("logo") or ""
        if LOCAL_LOGO.match(logo) and not (self.ctx.node.data_dir / logo.lstrip("/")).is_file():
            raise CommandError("unknown_logo", f"no uploaded logo {logo}; upload it to /api/logos first")

    async def _mark_broken(self, station: RadioStation, reason: str) -> None:
        broken = dict(self.data.broken)
        broken[station.id] = BrokenStation(name=station.name, reason=reason[:300], at=time.time())
        while len(broken) > MAX_BROKEN:
            broken.pop(next(iter(broken)))
        self.data.broken = broken
        self.save_data()
        await self._publish_lists()

    async def _unbreak(self, ids: list[str]) -> None:
        self.data.broken = {k: v for k, v in self.data.broken.items() if k not in ids}
        self.save_data()
        await self._publish_lists()

    async def _publish_lists(self, *, force: bool = False) -> None:
        await self.publish_owned("radio/favorites", StationList(stations=self.data.favorites), force=force)
        await self.publish_owned("radio/custom", StationList(stations=self.data.custom), force=force)
        await self.publish_owned("radio/broken", BrokenList(stations=self.data.broken), force=force)
        await self.publish_owned("radio/index", self._index_state, force=force)

    def _is_favorite(self, station: RadioStation | None) -> bool:
        return station is not None and any(f.id == station.id for f in self.data.favorites)

    # Search -------------------------------------------------------------------------------------------
    async def on_request(self, verb: str, request: Any) -> Any:
        assert isinstance(request, SearchRequest)
        where = request.source or self.config.search
        if where in ("auto", "directory"):
            try:
                result = await self._search_directory(request)
            except RadioBrowserError as exc:
                if where == "directory":
                    raise CommandError("directory_unreachable", f"the station directory: {exc}") from None
                self.log.info("radio: directory search failed (%s); searching the local index", exc)
            else:
                return result
        return await self._search_index(request)

    async def _search_directory(self, request: SearchRequest) -> SearchResult:
        hidden = self.data.broken
        stations = await self.directory.search(
            name=request.query or None,
            countrycode=request.country or None,
            tag=request.tag or None,
            language=request.language or None,
            # Hidden (broken) stations are taken out after the fact: ask for enough to fill the page.
            limit=request.limit + min(len(hidden), 100),
            offset=request.offset,
        )
        found = from_directory(dedupe(stations), hidden)[: request.limit]
        self._remember(found)
        total = request.offset + len(found) if len(stations) < request.limit else None
        return SearchResult(stations=found, total=total, offset=request.offset, source="directory")

    async def _search_index(self, request: SearchRequest) -> SearchResult:
        if not self.index.path.exists():
            raise CommandError(
                "directory_unreachable",
                "the station directory cannot be reached and there is no local index yet",
            )
        hidden = self.data.broken

        def run() -> tuple[int, list[Station]]:
            result = self.index.search(
                request.query,
                country=request.country or None,
                tag=request.tag or None,
                language=request.language or None,
                limit=request.limit + min(len(hidden), 100),
                offset=request.offset,
            )
            return result.total, result.stations

        total, stations = await asyncio.to_thread(run)
        found = from_directory(stations, hidden)[: request.limit]
        self._remember(found)
        return SearchResult(stations=found, total=total, offset=request.offset, source="index")

    def _remember(self, stations: list[RadioStation]) -> None:
        for station in stations:
            self._recent[station.id] = station
            self._recent.move_to_end(station.id)
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    # The local index --------------------------------------------------------------------------------
    async def _index_loop(self) -> None:
        """Download the full directory when the local copy is stale; retry failures hourly at most."""
        cfg = self.config
        if cfg.index_refresh_h <= 0:
            await self._refresh_now.wait()  # only on request
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cfg.index_first_delay_s):
                    await self._refresh_now.wait()
        retry = 60.0
        while True:
            forced = self._refresh_now.is_set()
            self._refresh_now.clear()
            ok = await self._refresh(force=forced)
            retry = 60.0 if ok else min(retry * 2, 3600.0)
            built = self.index.built_at()
            wait = retry if not ok else cfg.index_refresh_h * 3600 - (time.time() - (built or 0))
            if cfg.index_refresh_h <= 0:
                wait = float("inf")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 1.0) if wait != float("inf") else None):
                    await self._refresh_now.wait()

    async def _refresh(self, *, force: bool) -> bool:
        self._index_state = self._index_state.model_copy(update={"refreshing": True, "error": None})
        await self._publish_lists()
        try:
            rebuilt = await self.index.refresh(self.directory.all_stations, force=force)
        except Exception as exc:  # a cache that could not be rebuilt is reported, never fatal
            self.log.warning("radio: the station index was not rebuilt: %s", exc)
            self._index_state = self._index_state.model_copy(update={"refreshing": False, "error": str(exc)})
            await self._publish_lists()
            return False
        count = len(self.index) if rebuilt else self._index_state.stations
        if rebuilt:
            with contextlib.suppress(OSError):
                write_atomic(self.ctx.node.data_dir / "radio" / "index-count.json", str(count).encode())
            self.index.unload()  # searched only when the directory is down: don't hold it meanwhile
        self._index_state = IndexState(stations=count, built_at=self.index.built_at(), refreshing=False)
        await self._publish_lists()
        return True

    # Routing -------------------------------------------------------------------------------------------
    async def on_topic(self, message: Message, path: str) -> None:
        if path != "routing":
            return
        try:
            pcm = json.loads(message.payload).get("pcms", {}).get("radio", "")
        except (ValueError, AttributeError):
            return
        if not isinstance(pcm, str) or pcm == self._routed_pcm:
            return
        self._routed_pcm = pcm
        device = self._device()
        if self._player is not None and not self.config.audio_device:
            # mpv reopens only its audio output: the stream, and the listener's place in it, go on.
            await self._player.set_audio_device(device)
        await self.set_state(device=device)

    async def on_config(self, old: RadioConfig, new: RadioConfig) -> bool:
        return False  # a new player and directory client with the new settings


def playlist_entries(text: str) -> list[str]:
    """Stream URLs listed in a PLS, M3U, ASX or XSPF playlist, in order; anything else is ignored."""
    found: list[str] = []
    for match in _PLAYLIST_URL.finditer(text):
        url = next(g for g in match.groups() if g is not None).strip()
        if url.lower().startswith(("http://", "https://")) and url not in found:
            found.append(url)
    return found


def _literal_host(url: str) -> str | None:
    host = (urlsplit(url).hostname or "").strip("[]")
    return host if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host) and ("." in host or ":" in host) else None


def _output_fault(error: str) -> bool:
    """An error of the audio output (device busy or missing) is not the station's fault."""
    lowered = error.lower()
    return "audio output" in lowered or "audio device" in lowered or "ao_init" in lowered
