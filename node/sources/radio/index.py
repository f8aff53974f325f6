"""Local station index: the directory's full list on disk, searched in memory through inverted indexes."""

from __future__ import annotations

import asyncio
import gzip
import heapq
import json
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.adapters.radiobrowser import Station, dedupe, normalise_name
from node.framework.files import write_atomic

logger = logging.getLogger(__name__)

__all__ = ["FILE_NAME", "SearchResult", "StationIndex"]

FILE_NAME = "stations.json.gz"
FORMAT = "milo-station-index"
VERSION = 1
FIELDS = (
    "id", "name", "url", "url_resolved", "homepage", "favicon", "tags", "countrycode", "language",
    "codec", "bitrate", "hls", "votes", "clickcount", "lastcheckok",
)  # fmt: skip
_LIST_FIELDS = frozenset({"tags", "language"})
_BOOL_FIELDS = frozenset({"hls", "lastcheckok"})
_NAME, _TAGS, _COUNTRY, _LANGUAGE, _VOTES, _CLICKS = (FIELDS.index(f) for f in (
    "name", "tags", "countrycode", "language", "votes", "clickcount"
))  # fmt: skip
# Prefix sets of short words are big and asked for again and again ("r", "ra", "rad"...).
_CACHE_PREFIX_LEN = 3
_CACHE_MAX = 4096
_EMPTY: frozenset[int] = frozenset()


@dataclass(frozen=True)
class SearchResult:
    """One page of matches and how many matched in all."""

    total: int
    stations: list[Station]


def _row(station: Station) -> list[Any]:
    row: list[Any] = []
    for name in FIELDS:
        value = getattr(station, name)
        if name in _LIST_FIELDS:
            value = ",".join(value)
        elif name in _BOOL_FIELDS:
            value = int(value)
        row.append(value)
    return row


def _station(row: Sequence[Any]) -> Station:
    values: dict[str, Any] = {}
    for name, value in zip(FIELDS, row, strict=True):
        if name in _LIST_FIELDS:
            values[name] = value.split(",") if value else []
        elif name in _BOOL_FIELDS:
            values[name] = bool(value)
        else:
            values[name] = value
    # Rows were validated when the index was built; re-validating 50 results per query is wasted time.
    return Station.model_construct(**values)


class _Data:
    """One immutable generation of the index; a refresh builds a new one and swaps it in whole."""

    def __init__(self, rows: list[list[Any]], built_at: float, hidden: Collection[str]) -> None:
        self.rows = rows
        self.built_at = built_at
        self.ids = {row[0]: i for i, row in enumerate(rows)}
        self.names = [normalise_name(row[_NAME]) for row in rows]
        self.exact: dict[str, list[int]] = {}
        postings: dict[str, list[int]] = {}
        self.by_country: dict[str, list[int]] = {}
        self.by_tag: dict[str, list[int]] = {}
        self.by_language: dict[str, list[int]] = {}
        for i, (row, name) in enumerate(zip(rows, self.names, strict=True)):
            self.exact.setdefault(name, []).append(i)
            for word in set(name.split()):
                postings.setdefault(word, []).append(i)
            if row[_COUNTRY]:
                self.by_country.setdefault(row[_COUNTRY], []).append(i)
            for tag in row[_TAGS].split(",") if row[_TAGS] else ():
                self.by_tag.setdefault(tag, []).append(i)
            for language in row[_LANGUAGE].split(",") if row[_LANGUAGE] else ():
                self.by_language.setdefault(language, []).append(i)
        self.postings = postings
        self.vocabulary = sorted(postings)
        by_name = sorted(range(len(rows)), key=self.names.__getitem__)
        self.sorted_names = [self.names[i] for i in by_name]
        self.sorted_ids = by_name
        # Popularity: votes, then clicks, then name, so equal stations come in a stable order.
        self.order = sorted(
            range(len(rows)), key=lambda i: (-rows[i][_VOTES], -rows[i][_CLICKS], self.names[i])
        )
        self.rank = [0] * len(rows)
        for position, i in enumerate(self.order):
            self.rank[i] = position
        self.hidden_ids = frozenset(hidden)
        self.hidden = frozenset(self.ids[h] for h in self.hidden_ids if h in self.ids)
        self._prefix_cache: dict[str, frozenset[int]] = {}

    def words_starting(self, prefix: str) -> frozenset[int] | list[int]:
        cached = self._prefix_cache.get(prefix)
        if cached is not None:
            return cached
        lo = bisect_left(self.vocabulary, prefix)
        hi = bisect_left(self.vocabulary, prefix + "\U0010ffff", lo)
        if hi - lo == 1:
            return self.postings[self.vocabulary[lo]]
        found: set[int] = set()
        for word in self.vocabulary[lo:hi]:
            found.update(self.postings[word])
        result = frozenset(found)
        if len(prefix) <= _CACHE_PREFIX_LEN:
            if len(self._prefix_cache) >= _CACHE_MAX:
                self._prefix_cache.clear()
            self._prefix_cache[prefix] = result
        return result

    def names_starting(self, prefix: str) -> list[int]:
        lo = bisect_left(self.sorted_names, prefix)
        hi = bisect_left(self.sorted_names, prefix + "\U0010ffff", lo)
        return self.sorted_ids[lo:hi]

    def top(self, candidates: Collection[int], k: int, skip: Collection[int]) -> list[int]:
        """The k most popular of `candidates` that are not in `skip`."""
        if k <= 0 or not candidates:
            return []
        if len(candidates) * 16 > len(self.order):
            # Dense: walking the popularity order finds k matches after about k * N / len steps.
            out: list[int] = []
            for i in self.order:
                if i in candidates and i not in skip:
                    out.append(i)
                    if len(out) == k:
                        break
            return out
        best = heapq.nsmallest(k + len(skip), candidates, key=self.rank.__getitem__)
        return [i for i in best if i not in skip][:k]


def _parse(raw: Any) -> _Data:
    if raw.get("format") != FORMAT or raw.get("version") != VERSION or raw.get("fields") != list(FIELDS):
        raise ValueError("unknown file format or version")
    return _Data(raw["rows"], float(raw["built_at"]), raw.get("hidden", []))


class StationIndex:
    """The full station list of the directory, kept in `directory/stations.json.gz`.

    Loaded on first use, rebuilt by `refresh` once older than `max_age` seconds. Stations whose last
    check failed are left out at build time; `set_hidden` hides more (a user's "this one is broken").
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_age: float = 24 * 3600.0,
        file_name: str = FILE_NAME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = directory / file_name
        self.max_age = max_age
        self._clock = clock
        self._data: _Data | None = None
        self._tried_load = False
        self._hidden: frozenset[str] = frozenset()
        self._refresh_lock = asyncio.Lock()

    # ------------------------------------------------------------------ persistence

    @property
    def loaded(self) -> bool:
        return self._data is not None

    def load(self) -> bool:
        """Read the file (a few hundred ms for 50,000 stations); False when there is no usable file."""
        self._tried_load = True
        try:
            data = _parse(json.loads(gzip.decompress(self.path.read_bytes())))
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, EOFError) as exc:
            # The index is a cache of the directory: a bad file is rebuilt, never fatal.
            logger.warning("station index %s is unusable (%s); it will be rebuilt", self.path, exc)
            return False
        self._data = data
        self._hidden = data.hidden_ids
        return True

    def unload(self) -> None:
        """Free the memory (tens of MB for the full list); the next query reads the file again."""
        self._data = None
        self._tried_load = False

    async def aload(self) -> bool:
        """`load` off the event loop."""
        return await asyncio.to_thread(self.load)

    def _ensure(self) -> _Data | None:
        if self._data is None and not self._tried_load:
            self.load()
        return self._data

    def _save(self, data: _Data) -> None:
        document = {
            "format": FORMAT,
            "version": VERSION,
            "built_at": data.built_at,
            "fields": list(FIELDS),
            "hidden": sorted(data.hidden_ids),
            "rows": data.rows,
        }
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        write_atomic(self.path, gzip.compress(text, compresslevel=6, mtime=0))

    def build(self, stations: Iterable[Station], *, unique: bool = True) -> int:
        """Replace the index with these stations (deduplicated), save it; returns how many were kept."""
        self._ensure()  # the hidden ids on disk must outlive the rebuild
        kept = [s for s in (dedupe(stations) if unique else stations) if s.lastcheckok]
        data = _Data([_row(s) for s in kept], self._clock(), self._hidden)
        self._save(data)
        self._data = data
        self._tried_load = True
        return len(kept)

    # ------------------------------------------------------------------ freshness

    def built_at(self) -> float | None:
        if self._data is not None:
            return self._data.built_at
        try:
            # Without loading the whole file: it is written once per build, so its mtime is the build time.
            return self.path.stat().st_mtime
        except OSError:
            return None

    def is_stale(self) -> bool:
        built = self.built_at()
        return built is None or self._clock() - built >= self.max_age

    async def refresh(
        self, fetch: Callable[[], Awaitable[Iterable[Station]]], *, force: bool = False
    ) -> bool:
        """Rebuild from `fetch()` if stale (or forced); True if rebuilt. A failed fetch keeps the old one."""
        async with self._refresh_lock:
            if not force and not self.is_stale():
                return False
            stations = list(await fetch())
            count = await asyncio.to_thread(self.build, stations)
            logger.info("station index rebuilt: %d stations", count)
            return True

    # ------------------------------------------------------------------ hidden stations

    @property
    def hidden(self) -> frozenset[str]:
        self._ensure()
        return self._hidden

    def set_hidden(self, ids: Iterable[str]) -> None:
        """Hide these station ids from every search (and keep them hidden across rebuilds)."""
        self._hidden = frozenset(ids)
        data = self._ensure()
        if data is not None:
            fresh = _Data(data.rows, data.built_at, self._hidden)
            self._save(fresh)
            self._data = fresh

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        data = self._ensure()
        return len(data.rows) if data is not None else 0

    def get(self, station_id: str) -> Station | None:
        data = self._ensure()
        if data is None or station_id in data.hidden_ids:
            return None
        i = data.ids.get(station_id)
        return _station(data.rows[i]) if i is not None else None

    def search(
        self,
        text: str = "",
        *,
        country: str | None = None,
        tag: str | None = None,
        language: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> SearchResult:
        """Stations whose name words start with every word of `text`, filtered, best first.

        Order: exact name, then names that start with the text, then the rest; each tier by votes,
        then clicks. `country` is an ISO code, `tag` and `language` whole (case-insensitive) values.
        """
        data = self._ensure()
        limit, offset = max(limit, 0), max(offset, 0)
        if data is None:
            return SearchResult(0, [])
        words = normalise_name(text).split()
        sets: list[Collection[int]] = [data.words_starting(w) for w in words]
        if country:
            sets.append(data.by_country.get(country.strip().upper(), _EMPTY))
        if tag:
            sets.append(data.by_tag.get(tag.strip().lower(), _EMPTY))
        if language:
            sets.append(data.by_language.get(language.strip().lower(), _EMPTY))

        if not sets:
            total = len(data.rows) - len(data.hidden)
            picked = data.top(range(len(data.rows)), offset + limit, data.hidden) if data.hidden else None
            page = picked[offset:] if picked is not None else data.order[offset : offset + limit]
            return SearchResult(total, [_station(data.rows[i]) for i in page])

        sets.sort(key=len)
        candidates = set(sets[0])
        for other in sets[1:]:
            if not candidates:
                break
            candidates.intersection_update(other)
        candidates -= data.hidden
        need = offset + limit
        picked = []
        if words and candidates:
            query = " ".join(words)
            exact = sorted(
                (i for i in data.exact.get(query, ()) if i in candidates), key=data.rank.__getitem__
            )
            picked = exact[:need]
            starting = {i for i in data.names_starting(query) if i in candidates}
            picked += data.top(starting, need - len(picked), set(exact))
        picked += data.top(candidates, need - len(picked), set(picked))
        return SearchResult(len(candidates), [_station(data.rows[i]) for i in picked[offset:need]])
