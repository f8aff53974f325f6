"""The `spotify` source: Spotify Connect through go-librespot, which runs all the time."""

# models: its state, config, commands and the URI forms; volume: Spotify's slider <-> the node's volume;
# source: the Spotify subsystem (the daemon, its API and events, routing moves, idle disconnect).

from node.sources.spotify.models import SpotifyConfig, SpotifyState, spotify_uri
from node.sources.spotify.source import Spotify
from node.sources.spotify.volume import VolumeLink

__all__ = ["Spotify", "SpotifyConfig", "SpotifyState", "VolumeLink", "spotify_uri"]
