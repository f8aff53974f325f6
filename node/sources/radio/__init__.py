"""The `radio` source: internet radio through libmpv; favorites, custom and broken stations; search."""

# models: what its topics, config and data hold; playlists: a station URL to the stream mpv plays;
# stations: the favorites, custom and broken lists; search: the directory, the local index (index)
# and lookup by id; source: the Radio subsystem that ties them to its topics and the player.

from node.sources.radio.models import (
    STATION_ID,
    RadioConfig,
    RadioData,
    RadioState,
    RadioStation,
    SearchRequest,
    SearchResult,
)
from node.sources.radio.playlists import playlist_entries
from node.sources.radio.source import Radio

__all__ = [
    "STATION_ID",
    "Radio",
    "RadioConfig",
    "RadioData",
    "RadioState",
    "RadioStation",
    "SearchRequest",
    "SearchResult",
    "playlist_entries",
]
