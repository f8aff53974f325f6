"""The contract every `source/<name>` topic keeps, so the player can aggregate sources it never imports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Where a source is: `connected` is a device paired or a session open with nothing playing.
SourceStatus = Literal["unavailable", "idle", "connected", "buffering", "playing", "paused", "error"]
# The transport commands `player/set` forwards to the active source, as plain text.
Transport = Literal["play", "pause", "toggle", "stop", "next", "previous"]
# What a source may list in `commands`: the transports, and `seek` for `{"seek_ms": n}`.
SourceCommand = Literal["play", "pause", "toggle", "stop", "next", "previous", "seek"]
TRANSPORTS: tuple[Transport, ...] = ("play", "pause", "toggle", "stop", "next", "previous")
# Every source the node knows, in the order a UI lists them.
KNOWN_SOURCES = ("spotify", "bluetooth", "airplay", "roc", "radio")
SOURCE_NAME = r"^[a-z][a-z0-9_]{0,31}$"


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
