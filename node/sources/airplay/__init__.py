"""The `airplay` source: an AirPlay receiver through shairport-sync, with now playing and remote control."""

# models: its state, config and data; session: what the metadata pipe's items say, folded into one
# sender's session (no I/O); source: the Airplay subsystem, which runs shairport-sync, reads its pipe,
# stores cover art and sends the sender's remote-control commands.

from node.sources.airplay.models import AirplayConfig, AirplayData, AirplayState
from node.sources.airplay.session import Session
from node.sources.airplay.source import Airplay

__all__ = ["Airplay", "AirplayConfig", "AirplayData", "AirplayState", "Session"]
