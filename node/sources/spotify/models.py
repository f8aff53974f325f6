"""The spotify source's models: its state, its config and its own commands, and the Spotify URI forms."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from node.sources import SourceConfig, SourceState

# spotify:<kind>:<base62 id>, the user-playlist form of older links, and a user's liked songs.
_URI = re.compile(
    r"spotify:(?:(?:track|album|playlist|artist|episode|show):[0-9A-Za-z]{22}"
    r"|user:[^:\s/]{1,64}:(?:playlist:[0-9A-Za-z]{22}|collection))"
)
# https://open.spotify.com/[intl-xx/]<kind>/<id>[?si=...]: what a phone's "Share" gives.
_LINK = re.compile(
    r"https://open\.spotify\.com/(?:intl-[a-z]{2}(?:-[A-Za-z]{2})?/)?"
    r"(track|album|playlist|artist|episode|show)/([0-9A-Za-z]{22})/?(?:\?[^\s#]*)?"
)


def spotify_uri(text: str) -> str | None:
    """`text` as a Spotify URI go-librespot plays (a share link is converted); None for any other form."""
    text = text.strip()
    if _URI.fullmatch(text):
        return text
    link = _LINK.fullmatch(text)
    return f"spotify:{link.group(1)}:{link.group(2)}" if link else None


def looks_like_spotify(text: str) -> bool:
    """Meant as a URI or a link, well-formed or not (so a malformed one is named as such)."""
    return text.startswith(("spotify:", "https://open.spotify.com/"))


VolumePolicy = Literal["node", "ignore"]
Repeat = Literal["off", "context", "track"]


class SpotifyState(SourceState):
    """Retained `source/spotify`."""

    position_at: int | None = Field(
        default=None, description="Unix time in ms when position_ms was read, to extrapolate from"
    )
    artists: list[str] = Field(default_factory=list, description="every artist of the track")
    uri: str | None = Field(default=None, description="the track's spotify:track:... (or episode) URI")
    device_name: str = Field(default="", description="the name this speaker has in the Spotify apps")
    user: str | None = Field(default=None, description="the Spotify user of the session, None without one")
    shuffle: bool = False
    repeat: Repeat = "off"
    volume: int | None = Field(default=None, description="Spotify's own volume slider, in %")
    device: str = Field(default="", description="the ALSA PCM go-librespot plays into")
    restarts: int = Field(default=0, description="times go-librespot died and was started again")


class SpotifyConfig(SourceConfig):
    """`[spotify]`: where go-librespot is, how it is run, and what the node decides of its config."""

    binary: str = Field(
        default="go-librespot", max_length=1000, description="its path, or a name looked up on PATH"
    )
    manage: Literal["child", "systemd"] = Field(
        default="child",
        description="child: the node starts it and restarts it; systemd: go-librespot.service runs it",
    )
    device_name: str = Field(
        default="", max_length=100, description="the name in the Spotify apps; empty: the node's name"
    )
    device_type: Literal["speaker", "avr", "computer", "audio_dongle", "stb", "tv", "home_thing"] = "speaker"
    address: str = Field(default="127.0.0.1", max_length=255, description="where its HTTP API listens")
    port: int = Field(default=3678, ge=1, le=65535, description="its HTTP API port (set explicitly)")
    bitrate: Literal[96, 160, 320] = 320
    volume: VolumePolicy = Field(
        default="node", description="node: Spotify's slider drives the node's volume (both ways); ignore"
    )
    idle_disconnect_s: float = Field(
        default=1800, ge=0, description="log the session out after this long without playing; 0: never"
    )
    disable_autoplay: bool = False
    persist_credentials: bool = Field(
        default=False, description="keep the phone's login after it disconnects (zeroconf)"
    )
    zeroconf_port: int = Field(default=0, ge=0, le=65535, description="0: any free port")
    config_dir: str = Field(
        default="", max_length=1000, description="go-librespot's config dir; empty: <data_dir>/spotify"
    )
    start_timeout_s: float = Field(
        default=10, gt=0, le=120, description="for its API to answer after a start"
    )
    log_level: Literal["trace", "debug", "info", "warn", "error"] = "info"


class PlayUri(BaseModel):
    """`{"play": "spotify:album:..."}`: play a track, album, playlist, artist or show now."""

    model_config = ConfigDict(extra="forbid")

    play: str = Field(max_length=300, description="a spotify: URI or an open.spotify.com link")
    skip_to: str | None = Field(
        default=None, max_length=300, description="a track of that context to start at"
    )
    position_ms: int = Field(default=0, ge=0)
    paused: bool = False


class SetShuffle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shuffle: bool


class SetRepeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repeat: Repeat


class AddToQueue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: str = Field(max_length=300, description="a track URI or link to play next")
