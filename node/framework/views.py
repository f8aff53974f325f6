"""Read-only models of topics one subsystem reads of another: routing, multiroom, every source's state."""

# A subsystem never imports another; what it may read of another's retained topic is declared here once,
# each model ignoring the fields it does not need (extra="ignore"), so the writer can grow its state.

from __future__ import annotations

import logging
from typing import Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Where a source is: `connected` is a device paired or a session open with nothing playing.
SourceStatus = Literal["unavailable", "idle", "connected", "buffering", "playing", "paused", "error"]
# The transport commands `player/set` forwards to the active source, as plain text.
Transport = Literal["play", "pause", "toggle", "stop", "next", "previous"]
# What a source may list in `commands`: the transports, and `seek` for `{"seek_ms": n}`.
SourceCommand = Literal[Transport, "seek"]
TRANSPORTS: tuple[Transport, ...] = get_args(Transport)
# The order commands are listed in, whatever order a source gives them.
SOURCE_COMMANDS: tuple[SourceCommand, ...] = (*TRANSPORTS, "seek")
SOURCE_NAME = r"^[a-z][a-z0-9_]{0,31}$"


class Seek(BaseModel):
    """`{"seek_ms": n}`: go to this position of the current track (what `player/set` forwards)."""

    model_config = ConfigDict(extra="forbid")

    seek_ms: int = Field(ge=0, description="position to go to, in ms")


class SourceState(BaseModel):
    """The fields every `source/<name>` state starts with; a source adds its own after them.

    A source takes on `source/<name>/set` at least the transport texts it lists in `commands`
    (and `{"seek_ms": n}` when it lists `seek`): that is all the player sends it.
    """

    model_config = ConfigDict(extra="forbid")

    state: SourceStatus = "idle"
    title: str | None = Field(default=None, description="what is playing: the track, or the station")
    artist: str | None = None
    album: str | None = Field(default=None, description="album, or the station's name for a radio")
    cover_url: str | None = Field(default=None, description="an http(s) URL or a path on the node")
    position_ms: int | None = Field(default=None, ge=0)
    duration_ms: int | None = Field(default=None, ge=0, description="None for a live stream")
    commands: list[SourceCommand] = Field(
        default_factory=list, description="what player/set may send this source now"
    )
    error: str | None = Field(default=None, description="why the source is in `error`")


class SourceView(SourceState):
    """A source's state as another subsystem reads it: its own extra fields are ignored."""

    model_config = ConfigDict(extra="ignore")


def split_title(text: str | None) -> tuple[str | None, str | None]:
    """ICY titles are usually `Artist - Title`: (artist, title), or (None, text) when they are not."""
    if not text:
        return None, None
    artist, sep, title = text.partition(" - ")
    if sep and artist.strip() and title.strip():
        return artist.strip(), title.strip()
    return None, text.strip()


class RoutingView(BaseModel):
    """`<base>/routing` as the sources, the equalizer and the volume read it."""

    model_config = ConfigDict(extra="ignore")

    multiroom: bool = False
    equalizer: bool = False
    pcms: dict[str, str] = Field(default_factory=dict, description="source -> ALSA PCM to play into now")
    output: str = Field(default="", description="what the direct chain ends in: the DAC (hw:<card>,<dev>...)")


class ActiveSourceView(BaseModel):
    """`<base>/source` as the multiroom subsystem reads it: which source plays now."""

    model_config = ConfigDict(extra="ignore")

    active: str = "none"


class MultiroomClientView(BaseModel):
    """One client as the `multiroom` state lists it (what the master volume needs)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=100, pattern=r"^[^/#+]+$")
    name: str = ""
    volume: int = Field(ge=0, le=100)
    muted: bool = False
    connected: bool = True


class MultiroomView(BaseModel):
    """`<base>/multiroom` as the volume and Home Assistant read it."""

    model_config = ConfigDict(extra="ignore")

    clients: list[MultiroomClientView] = Field(default_factory=list)


class SnapclientView(BaseModel):
    """One client of the `multiroom` state as `info` lists it: who it is and its snapclient version."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=100)
    name: str = Field(default="", max_length=200)
    host: str = Field(default="", max_length=200)
    version: str = Field(default="", max_length=100)
    connected: bool = False
    local: bool = False


class SnapclientsView(BaseModel):
    """`<base>/multiroom` as `info` reads it."""

    model_config = ConfigDict(extra="ignore")

    clients: list[SnapclientView] = Field(default_factory=list)


class SourcesView(BaseModel):
    """`<base>/source` as the knob, the screen and Home Assistant read it."""

    model_config = ConfigDict(extra="ignore")

    active: str = "none"
    enabled: list[str] = Field(default_factory=list, description="sources whose config enables them")
    available: list[str] = Field(default_factory=list, description="enabled sources that can play now")
    # Plain strings: a state a later source adds must not make the whole topic unreadable here.
    states: dict[str, str] = Field(default_factory=dict)


class PlayerView(BaseModel):
    """`<base>/player` as the screen reads it: is the active source playing."""

    model_config = ConfigDict(extra="ignore")

    active: str = "none"
    state: str = "idle"


class VolumeView(BaseModel):
    """`<base>/volume` as a source mapping its own slider onto it, or Home Assistant, reads it."""

    model_config = ConfigDict(extra="ignore")

    percent: int = Field(default=0, ge=0, le=100)
    muted: bool = False
    limit_max: int = Field(default=100, description="highest percent a command may set")


ViewT = TypeVar("ViewT", bound=BaseModel)


def read_view(model: type[ViewT], payload: bytes, log: logging.Logger) -> ViewT | None:
    """The view of a retained state, its defaults when the topic was cleared, None (logged) if unreadable."""
    if not payload:
        return model()
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        log.warning("ignoring a %s it cannot read: %s", model.__name__, exc)
        return None


# What the `homeassistant` subsystem reads of the others (it describes their topics to Home Assistant).
class AbsentView(BaseModel):
    """A state topic whose subsystem does not run: `{"status", "reason"}` (see Subsystem.absent_state)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["unavailable", "disabled", "crashed", "config_error"]
    reason: str = ""


def absent_of(payload: bytes) -> AbsentView | None:
    """The `{"status", "reason"}` record a state topic holds while its subsystem does not run, else None."""
    try:
        return AbsentView.model_validate_json(payload)
    except ValidationError:
        return None


class EnabledView(BaseModel):
    """`<sub>/config` as another subsystem reads it: whether it is switched on."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool = True


class SubsystemStatusView(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = ""
    detail: str = ""


class InfoView(BaseModel):
    """`<base>/info`: what the node is, its addresses and ports, and how each subsystem is doing."""

    model_config = ConfigDict(extra="ignore")

    node_id: str = ""
    version: str = ""
    host: str = ""
    platform: str = ""
    addresses: list[str] = Field(default_factory=list)
    http_port: int | None = None
    uptime_s: int = 0
    cpu_temp_c: float | None = None
    subsystems: dict[str, SubsystemStatusView] = Field(default_factory=dict)


class EqualizerView(BaseModel):
    """`<base>/equalizer`: bands, presets and the range a band may take."""

    model_config = ConfigDict(extra="ignore")

    bands: dict[str, float] = Field(default_factory=dict)
    preset: str | None = None
    presets: list[str] = Field(default_factory=list)
    min_db: float = -12.0
    max_db: float = 12.0


class StationView(BaseModel):
    """A station of a radio list: its id and its name are all another subsystem needs."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str = ""


class StationListView(BaseModel):
    """`<base>/radio/favorites` (or `radio/custom`): the ordered stations."""

    model_config = ConfigDict(extra="ignore")

    stations: list[StationView] = Field(default_factory=list)


class UiView(BaseModel):
    """`<base>/ui`: the language every screen speaks, and those offered."""

    model_config = ConfigDict(extra="ignore")

    language: str = ""
    languages: list[str] = Field(default_factory=list)


class ProgramView(BaseModel):
    """One program of `<base>/update`: whether the node can install a newer version of it."""

    model_config = ConfigDict(extra="ignore")

    installable: bool = True


class UpdateView(BaseModel):
    """`<base>/update`: the programs the update subsystem follows."""

    model_config = ConfigDict(extra="ignore")

    programs: dict[str, ProgramView] = Field(default_factory=dict)
