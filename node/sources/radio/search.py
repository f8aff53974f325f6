"""Finding stations: directory search (the local index as fallback), lookup by id, the index refresh."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable
from pathlib import Path

from node.adapters.radiobrowser import RadioBrowser, RadioBrowserError, Station, dedupe
from node.framework.errors import CommandError
from node.framework.files import write_atomic
from node.sources.radio.index import StationIndex
from node.sources.radio.models import (
    RECENT_MAX,
    IndexState,
    RadioConfig,
    RadioStation,
    SearchRequest,
    SearchResult,
    from_directory,
    is_directory_id,
)

COUNT_FILE = "index-count.json"


class StationSearch:
    """Where stations are found: the directory, the local index in `index_dir`, recent search answers.

    It keeps the index's state (`state`) and hands every change of it to `publish_index`.
    """

    def __init__(
        self,
        config: RadioConfig,
        directory: RadioBrowser,
        index_dir: Path,
        log: logging.Logger,
        publish_index: Callable[[IndexState], Awaitable[None]],
    ) -> None:
        self.config = config
        self.directory = directory
        self.index_dir = index_dir
        self.log = log
        self._publish_index = publish_index
        self._recent: OrderedDict[str, RadioStation] = OrderedDict()
        self._refresh_now = asyncio.Event()
        self.index = StationIndex(index_dir, max_age=max(config.index_refresh_h, 0.001) * 3600)
        built = self.index.built_at()
        self.state = IndexState(built_at=built, stations=self._index_count() if built else 0)

    def _index_count(self) -> int:
        # The count is kept next to the index so showing it never loads 50,000 stations.
        try:
            return int(json.loads((self.index_dir / COUNT_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return 0

    # Search -------------------------------------------------------------------------------------------
    async def search(self, request: SearchRequest, hidden: Collection[str]) -> SearchResult:
        """Stations matching the request, none of them `hidden`; from where the request or config says."""
        where = request.source or self.config.search
        if where in ("auto", "directory"):
            try:
                result = await self._search_directory(request, hidden)
            except RadioBrowserError as exc:
                await self.heard(exc)
                if where == "directory":
                    message = f"the station directory cannot be reached ({exc})"
                    raise CommandError("directory_unreachable", message) from None
                self.log.info("radio: directory search failed (%s); searching the local index", exc)
            else:
                await self.heard(None)
                return result
        return await self._search_index(request, hidden)

    async def _search_directory(self, request: SearchRequest, hidden: Collection[str]) -> SearchResult:
        stations = await self.directory.search(
            name=request.query or None,
            countrycode=request.country or None,
            tag=request.tag or None,
            language=request.language or None,
            limit=request.limit + _extra(hidden),
            offset=request.offset,
        )
        found = from_directory(dedupe(stations), hidden)[: request.limit]
        self._remember(found)
        total = request.offset + len(found) if len(stations) < request.limit else None
        return SearchResult(stations=found, total=total, offset=request.offset, source="directory")

    async def _search_index(self, request: SearchRequest, hidden: Collection[str]) -> SearchResult:
        if not self.index.path.exists():
            raise CommandError(
                "directory_unreachable",
                "the station directory cannot be reached and there is no local index yet",
            )

        def run() -> tuple[int, list[Station]]:
            result = self.index.search(
                request.query,
                country=request.country or None,
                tag=request.tag or None,
                language=request.language or None,
                limit=request.limit + _extra(hidden),
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

    # By id --------------------------------------------------------------------------------------------
    async def find(self, station_id: str, kept: Iterable[RadioStation | None]) -> RadioStation:
        """The station with this id: from `kept` (what the node keeps), recent answers, index, directory."""
        for station in kept:
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
                await self.heard(exc)
                raise CommandError(
                    "directory_unreachable", f"station {station_id} is not known here and {exc}"
                ) from None
            playable = from_directory(stations, ())
            if playable:
                return playable[0]
        raise CommandError("unknown_station", f"no station {station_id!r}")

    # The local index --------------------------------------------------------------------------------
    def request_refresh(self) -> None:
        """Download the directory now (the loop wakes up), stale or not."""
        self._refresh_now.set()

    async def refresh_loop(self) -> None:
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
        await self._set_state(self.state.model_copy(update={"refreshing": True, "error": None}))
        try:
            rebuilt = await self.index.refresh(self.directory.all_stations, force=force)
        except Exception as exc:  # a cache that could not be rebuilt is reported, never fatal
            self.log.warning("radio: the station index was not rebuilt: %s", exc)
            await self._set_state(self.state.model_copy(update={"refreshing": False, "error": str(exc)}))
            if isinstance(exc, RadioBrowserError):
                await self.heard(exc)
            return False
        count = len(self.index) if rebuilt else self.state.stations
        if rebuilt:
            with contextlib.suppress(OSError):
                write_atomic(self.index_dir / COUNT_FILE, str(count).encode())
            self.index.unload()  # searched only when the directory is down: don't hold it meanwhile
        await self._set_state(
            self.state.model_copy(
                update={
                    "stations": count,
                    "built_at": self.index.built_at(),
                    "refreshing": False,
                    "error": None,
                }
            )
        )
        await self.heard(None)
        return True

    async def heard(self, error: RadioBrowserError | None) -> None:
        """What the last call to the directory says of it: every screen can show it is down, at once."""
        directory = "reachable" if error is None else "unreachable"
        reason = None if error is None else str(error)
        if (self.state.directory, self.state.directory_error) != (directory, reason):
            await self._set_state(
                self.state.model_copy(update={"directory": directory, "directory_error": reason})
            )

    async def _set_state(self, state: IndexState) -> None:
        self.state = state
        await self._publish_index(state)


def _extra(hidden: Collection[str]) -> int:
    # Hidden (broken) stations are taken out after the fact: ask for enough to fill the page.
    return min(len(hidden), 100)
