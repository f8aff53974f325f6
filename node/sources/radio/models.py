"""The radio's models and limits: stations, its retained topics, its config, data, commands and requests."""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from node.adapters.radiobrowser import Station
from node.framework.subsystem import local_only
from node.sources import SourceConfig, SourceState

STATION_ID = r"^[A-Za-z0-9_-]{1,64}$"
# The directory's stationuuid; the ids the node makes up (custom-..., url-...) never match it.
DIRECTORY_ID = re.compile(r"[0-9a-fA-F-]{8,64}")
LOCAL_LOGO = re.compile(r"^/logos/[0-9a-f]{16,64}\.png$")
MAX_FAVORITES = 500
MAX_CUSTOM = 500
MAX_BROKEN = 2000
RECENT_MAX = 2000  # stations seen in search answers, so "add to favorites" needs no second lookup
RADIO_STATES = ("idle", "buffering", "playing", "paused", "error")


def is_station_id(text: str) -> bool:
    return re.fullmatch(STATION_ID, text) is not None


def is_directory_id(station_id: str) -> bool:
    """The id is the directory's (so it can be looked up there, and its plays counted)."""
    return DIRECTORY_ID.fullmatch(station_id) is not None


def _logo(value: str) -> str:
    value = value.strip()
    if value and not LOCAL_LOGO.match(value) and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("a logo is an http(s) URL or a /logos/... path uploaded to the node")
    return value


def _stream_url(value: str) -> str:
    value = value.strip()
    if not re.match(r"^https?://[^\s/?#]+", value, re.IGNORECASE):
        raise ValueError("a stream URL starts with http:// or https:// and names a host")
    return value


def _country_code(value: str) -> str:
    value = value.strip().upper()
    if value and not re.fullmatch(r"[A-Z]{2}", value):
        raise ValueError("country is a two-letter ISO 3166 code such as FR")
    return value


StreamURL = Annotated[str, Field(max_length=2048), AfterValidator(_stream_url)]
CountryCode = Annotated[
    str, Field(max_length=8, description="ISO 3166-1 code, e.g. FR"), AfterValidator(_country_code)
]
LogoRef = Annotated[str, Field(max_length=2048), AfterValidator(_logo)]


class StationFields(BaseModel):
    """A station as a user types it; the node gives it its id."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    url: StreamURL = Field(description="the stream (or playlist) URL")
    homepage: str = Field(default="", max_length=2048)
    logo: LogoRef = Field(default="", description="http(s) URL, or /logos/<file> on the node")
    country: CountryCode = ""
    genre: str = Field(default="", max_length=200, description="comma-separated tags")
    language: str = Field(default="", max_length=100)
    codec: str = Field(default="", max_length=20)
    bitrate: int = Field(default=0, ge=0, le=100_000, description="kbit/s, 0 = unknown")


class RadioStation(StationFields):
    """A station with everything needed to play it without the directory."""

    id: str = Field(pattern=STATION_ID, description="the directory's stationuuid, or custom-<hex>")
    custom: bool = Field(default=False, description="added by a user, not from the directory")

    @classmethod
    def from_directory(cls, s: Station) -> RadioStation | None:
        """The directory's entry in our shape; None when it has nothing playable."""
        try:
            return cls(
                id=s.id,
                name=(s.name or s.id)[:200],
                url=s.stream_url,
                homepage=s.homepage[:2048],
                logo=s.favicon if s.favicon.startswith(("http://", "https://")) else "",
                country=s.countrycode,
                genre=", ".join(s.tags[:8])[:200],
                language=", ".join(s.language[:4])[:100],
                codec=s.codec[:20],
                bitrate=min(max(s.bitrate, 0), 100_000),
            )
        except ValidationError:
            return None


def from_directory(stations: list[Station], hidden: Container[str]) -> list[RadioStation]:
    converted = (RadioStation.from_directory(s) for s in stations if s.id not in hidden)
    return [s for s in converted if s is not None]


class BrokenStation(BaseModel):
    """A station that failed to play, hidden from search until reset (or until it plays again)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    reason: str
    at: float = Field(description="epoch seconds")


class RadioState(SourceState):
    """Retained `source/radio`."""

    station: RadioStation | None = Field(default=None, description="tuned now (also when paused/error)")
    stream_title: str | None = Field(default=None, description="the stream's own now-playing text")
    retries: int = Field(default=0, description="reconnects since the stream last played steadily")
    device: str = Field(default="", description="mpv audio-device in use")
    favorite: bool = Field(default=False, description="the station is a favorite")


class StationList(BaseModel):
    """Retained `radio/favorites` and `radio/custom`: the whole ordered list."""

    model_config = ConfigDict(extra="forbid")

    stations: list[RadioStation] = Field(default_factory=list)


class BrokenList(BaseModel):
    """Retained `radio/broken`: station id -> why it was marked."""

    model_config = ConfigDict(extra="forbid")

    stations: dict[str, BrokenStation] = Field(default_factory=dict)


class IndexState(BaseModel):
    """Retained `radio/index`: the local copy of the directory."""

    model_config = ConfigDict(extra="forbid")

    stations: int = Field(default=0, description="stations in the local index")
    built_at: float | None = Field(default=None, description="epoch seconds of the last rebuild")
    refreshing: bool = False
    error: str | None = Field(default=None, description="why the last refresh failed")
    directory: Literal["unknown", "reachable", "unreachable"] = Field(
        default="unknown", description="the station directory as last heard from (search, refresh, lookup)"
    )
    directory_error: str | None = Field(default=None, description="why the directory could not be reached")


class RadioConfig(SourceConfig):
    """`[radio]`: the directory, the player's patience, and what URLs may be fetched."""

    directory_url: str = local_only(
        default="",
        max_length=2048,
        description="Radio Browser base URL; empty = discover the mirrors through DNS",
    )
    directory_timeout_s: float = Field(default=6.0, gt=0, le=60)
    click_counting: bool = Field(default=True, description="tell the directory when a station is played")
    search: Literal["auto", "directory", "index"] = Field(
        default="auto", description="auto: the directory, and the local index when it cannot be reached"
    )
    index_refresh_h: float = Field(default=24.0, ge=0, le=24 * 30, description="0 = never download it")
    index_first_delay_s: float = Field(
        default=120.0, ge=0, le=86400, description="wait after start before the first download"
    )
    allow_private_urls: bool = local_only(
        default=False, description="let stations on loopback/LAN addresses play (no SSRF protection)"
    )
    ao: str = local_only(
        default="", max_length=64, description="mpv audio output driver; empty = from audio_device"
    )
    audio_device: str = local_only(
        default="", max_length=200, description="mpv audio-device; empty = alsa/<the PCM routing assigns>"
    )
    network_timeout_s: float = Field(default=10.0, gt=0, le=120)
    start_timeout_s: float = Field(default=15.0, gt=0, le=300)
    stall_timeout_s: float = Field(default=15.0, gt=0, le=300)
    retry_attempts: int = Field(default=5, ge=0, le=100)
    retry_first_s: float = Field(default=0.5, gt=0, le=60)
    retry_cap_s: float = Field(default=10.0, gt=0, le=600)
    pause_reload_s: float = Field(
        default=30.0, ge=0, le=86400, description="resuming a longer pause tunes in again (live, not late)"
    )


class RadioData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    favorites: list[RadioStation] = Field(default_factory=list)
    custom: list[RadioStation] = Field(default_factory=list)
    broken: dict[str, BrokenStation] = Field(default_factory=dict)
    last: RadioStation | None = None


# Commands ------------------------------------------------------------------------------------------
StationId = Annotated[str, Field(pattern=STATION_ID)]


class PlayStation(BaseModel):
    """`{"play": "<station id>"}`: a favorite, a custom station, or any directory station."""

    model_config = ConfigDict(extra="forbid")
    play: StationId


class PlayUrl(BaseModel):
    """`{"url": "http://...", "name": "..."}`: play a stream that is not a station yet."""

    model_config = ConfigDict(extra="forbid")
    url: StreamURL
    name: str = Field(default="", max_length=200)


class AddFavorite(BaseModel):
    """`{"add": "<station id>"}`; the station is copied whole, so it plays without the directory."""

    model_config = ConfigDict(extra="forbid")
    add: StationId


class RemoveStation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    remove: StationId


class MoveFavorite(BaseModel):
    """`{"move": "<station id>", "to": 0}`: reorder."""

    model_config = ConfigDict(extra="forbid")
    move: StationId
    to: int = Field(ge=0)


class CustomPatch(BaseModel):
    """Fields to change on a custom station; only those given change."""

    model_config = ConfigDict(extra="forbid")

    id: StationId
    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, max_length=2048)
    homepage: str | None = Field(default=None, max_length=2048)
    logo: str | None = Field(default=None, max_length=2048)
    country: CountryCode | None = None
    genre: str | None = Field(default=None, max_length=200)
    language: str | None = Field(default=None, max_length=100)
    codec: str | None = Field(default=None, max_length=20)
    bitrate: int | None = Field(default=None, ge=0, le=100_000)


class AddCustom(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add: StationFields


class UpdateCustom(BaseModel):
    model_config = ConfigDict(extra="forbid")
    update: CustomPatch


class ResetBroken(BaseModel):
    """`{"reset": "<station id>"}` or `{"reset": "all"}`."""

    model_config = ConfigDict(extra="forbid")
    reset: StationId


class RefreshIndex(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh: bool = True


class SearchRequest(BaseModel):
    """`radio/search`: every given criterion must match; paged with limit/offset."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(default="", max_length=200, description="words of the station name")
    country: CountryCode = ""
    tag: str = Field(default="", max_length=60, description="a genre tag, e.g. jazz")
    language: str = Field(default="", max_length=60, description="e.g. french")
    limit: int = Field(default=30, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=100_000)
    source: Literal["auto", "directory", "index"] | None = Field(
        default=None, description="where to search; default: the radio config's `search`"
    )


class SearchResult(BaseModel):
    """The answer to `radio/search`."""

    model_config = ConfigDict(extra="forbid")

    stations: list[RadioStation]
    total: int | None = Field(description="matches in all; None when the directory does not say")
    offset: int
    source: Literal["directory", "index"]
