"""The local station index: build, save, lazy load, refresh by age, search ranking, filters, paging."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from harness.radio_browser import FakeRadioBrowser, generate_stations, station
from node.adapters.radiobrowser import RadioBrowser, RadioBrowserHTTPError, Station
from node.sources.radio.index import FILE_NAME, StationIndex


def make(name: str, **kw: Any) -> Station:
    kw.setdefault("stationuuid", f"id-{name.lower().replace(' ', '-')}-{kw.get('countrycode', 'de')}")
    kw.setdefault("url_resolved", f"http://{kw['stationuuid']}.example/s")
    return Station.model_validate(station(name=name, **kw))


STATIONS = [
    make("Jazz", votes=1, clickcount=0, tags="jazz", countrycode="", language=""),
    make("Jazz FM", votes=500, clickcount=10, tags="jazz,smooth jazz", countrycode="GB", language="english"),
    make("Smooth Jazz Radio", votes=900, tags="jazz,smooth jazz", countrycode="US", language="english"),
    make("Radio Jazzy Nights", votes=50, tags="jazz,lounge", countrycode="FR", language="french"),
    make("Rock Antenne", votes=300, tags="rock", countrycode="DE", language="german"),
    make("Antenne Bayern", votes=700, tags="pop,hits", countrycode="DE", language="german"),
    make("Café del Mar", votes=100, tags="chillout", countrycode="ES", language="spanish"),
    make("Dead Radio", votes=9999, lastcheckok=0),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def index(tmp_path: Path) -> StationIndex:
    idx = StationIndex(tmp_path)
    assert idx.build(STATIONS) == 7  # the broken one is left out
    return idx


def names(idx: StationIndex, text: str = "", **kw: Any) -> list[str]:
    return [s.name for s in idx.search(text, **kw).stations]


def test_exact_name_first_then_prefix_then_popularity(index: StationIndex) -> None:
    assert names(index, "jazz") == ["Jazz", "Jazz FM", "Smooth Jazz Radio", "Radio Jazzy Nights"]
    assert names(index, "JAZ") == ["Jazz FM", "Jazz", "Smooth Jazz Radio", "Radio Jazzy Nights"]
    assert names(index, "radio") == ["Radio Jazzy Nights", "Smooth Jazz Radio"]
    assert names(index, "antenne") == ["Antenne Bayern", "Rock Antenne"]


def test_words_match_by_prefix_in_any_order_and_accents_fold(index: StationIndex) -> None:
    assert names(index, "jaz smo") == ["Smooth Jazz Radio"]
    assert names(index, "cafe") == ["Café del Mar"]
    assert names(index, "  café-del ") == ["Café del Mar"]
    assert names(index, "nothing") == []
    assert index.search("nothing").total == 0


def test_filters(index: StationIndex) -> None:
    assert names(index, country="de") == ["Antenne Bayern", "Rock Antenne"]
    assert names(index, tag="Smooth Jazz") == ["Smooth Jazz Radio", "Jazz FM"]
    assert names(index, language="english") == ["Smooth Jazz Radio", "Jazz FM"]
    assert names(index, "jazz", country="GB") == ["Jazz FM"]
    assert names(index, "jazz", country="DE") == []
    assert names(index, tag="jazz", language="french") == ["Radio Jazzy Nights"]
    assert names(index, country="XX") == []


def test_limit_offset_and_total(index: StationIndex) -> None:
    everything = names(index, limit=100)
    assert everything[0] == "Smooth Jazz Radio" and len(everything) == 7
    assert names(index, limit=3, offset=2) == everything[2:5]
    page = index.search("jazz", limit=2, offset=1)
    assert page.total == 4
    assert [s.name for s in page.stations] == ["Jazz FM", "Smooth Jazz Radio"]
    assert index.search("jazz", limit=0).stations == []
    assert index.search("", offset=50).stations == []


def test_hidden_ids_are_excluded_and_persist(index: StationIndex, tmp_path: Path) -> None:
    hide = {"id-jazz-fm-GB", "id-antenne-bayern-DE"}
    index.set_hidden(hide)
    assert "Jazz FM" not in names(index, "jazz")
    assert names(index, country="DE") == ["Rock Antenne"]
    assert index.search().total == 5
    assert "Antenne Bayern" not in names(index, limit=100)
    assert index.get("id-jazz-fm-GB") is None
    again = StationIndex(tmp_path)
    assert again.hidden == hide
    assert names(again, "jazz") == ["Jazz", "Smooth Jazz Radio", "Radio Jazzy Nights"]
    again.build(STATIONS)  # hidden ids outlive a rebuild
    assert "Jazz FM" not in names(again, "jazz")


def test_saved_as_one_compact_file_and_loaded_lazily(index: StationIndex, tmp_path: Path) -> None:
    files = [p.name for p in tmp_path.iterdir()]
    assert files == [FILE_NAME]
    document = json.loads(gzip.decompress((tmp_path / FILE_NAME).read_bytes()))
    assert len(document["rows"]) == 7
    fresh = StationIndex(tmp_path)
    assert not fresh.loaded
    assert names(fresh, "jazz") == names(index, "jazz")
    assert fresh.loaded
    got = fresh.get("id-jazz-fm-GB")
    assert got is not None
    assert got == next(s for s in STATIONS if s.id == "id-jazz-fm-GB")


def test_missing_or_corrupt_file_means_empty_and_stale(tmp_path: Path) -> None:
    idx = StationIndex(tmp_path)
    assert idx.search("jazz").stations == []
    assert len(idx) == 0
    assert idx.is_stale()
    (tmp_path / FILE_NAME).write_bytes(b"not gzip")
    broken = StationIndex(tmp_path)
    assert not broken.load()
    assert broken.search("x").total == 0


def test_staleness_by_age(tmp_path: Path) -> None:
    clock = Clock()
    idx = StationIndex(tmp_path, max_age=3600, clock=clock)
    idx.build(STATIONS)
    assert not idx.is_stale()
    clock.now += 3599
    assert not idx.is_stale()
    clock.now += 1
    assert idx.is_stale()


async def test_refresh_from_the_directory(tmp_path: Path) -> None:
    clock = Clock()
    generated = generate_stations(120, seed=5)
    async with FakeRadioBrowser(generated) as fake:
        rb = RadioBrowser(fake.url, timeout=2.0)
        idx = StationIndex(tmp_path, max_age=60, clock=clock)
        assert await idx.refresh(lambda: rb.all_stations(page_size=50))
        count = len(idx)
        assert 0 < count <= 120
        assert [r.query["offset"] for r in fake.requests] == ["0", "50", "100"]
        assert not await idx.refresh(rb.all_stations)  # fresh: nothing fetched
        assert len(fake.requests) == 3
        clock.now += 61
        fake.status = 503
        with pytest.raises(RadioBrowserHTTPError):
            await idx.refresh(rb.all_stations)
        assert len(idx) == count  # a failed refresh keeps the old index
        fake.status = None
        assert await idx.refresh(rb.all_stations)
        assert not idx.is_stale()
        assert len(StationIndex(tmp_path)) == count


def test_large_index_answers_quickly(tmp_path: Path) -> None:
    stations = [Station.model_validate(s) for s in generate_stations(5000, seed=2)]
    idx = StationIndex(tmp_path)
    idx.build(stations)
    result = idx.search("radio", country="DE", limit=10)
    assert result.total > 0
    assert all(s.countrycode == "DE" and "radio" in s.name.lower() for s in result.stations)
    # Names starting with the word come first; within each tier the most voted lead.
    tiers = [
        0 if s.name.lower() == "radio" else 1 if s.name.lower().startswith("radio") else 2
        for s in result.stations
    ]
    assert tiers == sorted(tiers)
    for tier in (0, 1, 2):
        votes = [s.votes for s, t in zip(result.stations, tiers, strict=True) if t is tier]
        assert votes == sorted(votes, reverse=True)
