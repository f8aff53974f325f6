"""What shairport-sync's metadata items say of the sender and its track, folded into one session (no I/O)."""

# The items, in the order a sender causes them (shairport-sync 3.3.8, rtsp.c / player.c):
#   ANNOUNCE  ssnc snam (device name), snua (user agent)
#   SETUP     ssnc acre (Active-Remote token), daid (DACP-ID), clip (sender address)
#   RECORD    ssnc pbeg (play begins), then pfls 0 (the initial flush)
#   audio     ssnc prsm (audio flows: after pbeg and after every flush)
#   pause     ssnc pfls (a flush: a pause, a seek or a skip; prsm follows when audio comes again)
#   metadata  ssnc mdst, core minm/asar/asal/astm/mper..., ssnc mden (the same rtptime brackets them)
#   cover     ssnc pcst, PICT (JPEG or PNG, empty = none), pcen; progress: ssnc prgr; volume: pvol
#   TEARDOWN  ssnc pend (play ends)
#   mDNS      ssnc dapo: the port of the sender's DACP server, once found (only once per DACP-ID)

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from node.adapters.shairport import Dacp, Item, progress_ms

Status = Literal["idle", "connected", "buffering", "playing", "paused"]
# What an item changed, for the source to decide what to publish or store.
Change = Literal["state", "cover"]

_TRACK_TAGS = {"minm": "title", "asar": "artist", "asal": "album"}


@dataclass
class Track:
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    duration_ms: int | None = None
    rtptime: str | None = None  # what links a metadata set and its picture


@dataclass
class Session:
    """The sender now playing (or last seen) as far as the metadata pipe has told."""

    clock: Callable[[], float] = time.monotonic
    status: Status = "idle"
    sender: str | None = None
    user_agent: str | None = None
    address: str | None = None
    active_remote: str | None = None
    dacp_id: str | None = None
    volume_db: float | None = None
    track: Track = field(default_factory=Track)
    cover: bytes | None = None  # the current track's picture, as sent
    cover_rtptime: str | None = None
    # DACP ports are announced once per DACP-ID: a sender that comes back keeps the one found before.
    dacp_ports: dict[str, int] = field(default_factory=dict)
    _position_ms: int | None = None
    _since: float | None = None  # when the position last started moving (None: it stands still)
    _pending: Track | None = None  # a metadata set between mdst and mden
    _picture_rtptime: str | None = None

    # Reading ---------------------------------------------------------------------------------------
    def position_ms(self) -> int | None:
        if self._position_ms is None:
            return None
        position = self._position_ms
        if self._since is not None:
            position += int((self.clock() - self._since) * 1000)
        duration = self.track.duration_ms
        return min(position, duration) if duration else position

    def remote(self) -> Dacp | None:
        """The sender's remote control, when it has told where it is."""
        if self.status == "idle" or not (self.address and self.active_remote and self.dacp_id):
            return None
        port = self.dacp_ports.get(self.dacp_id)
        return Dacp(self.address, port, self.active_remote) if port else None

    # Items -----------------------------------------------------------------------------------------
    def apply(self, item: Item) -> set[Change]:
        if item.type == "core":
            return self._core(item)
        if item.type != "ssnc":
            return set()
        if item.code == "PICT":
            return self._picture(item)
        handler = getattr(self, f"_ssnc_{item.code}", None)  # every other code is lower case
        if handler is None:
            return set()
        changed: set[Change] = handler(item)
        return changed

    def end(self) -> None:
        """The sender has gone (TEARDOWN, or shairport-sync restarted): back to idle."""
        fresh = Session(clock=self.clock, dacp_ports=self.dacp_ports)
        self.__dict__.update(fresh.__dict__)

    def _connected(self) -> None:
        if self.status == "idle":
            self.status = "connected"

    def _ssnc_snam(self, item: Item) -> set[Change]:
        if self.status == "idle":
            self.track, self.cover, self.cover_rtptime = Track(), None, None
            self._position_ms = self._since = None
        self._connected()
        self.sender = item.text.strip() or None
        return {"state"}

    def _ssnc_snua(self, item: Item) -> set[Change]:
        self.user_agent = item.text.strip() or None
        return {"state"}

    def _ssnc_clip(self, item: Item) -> set[Change]:
        self.address = item.text.strip() or None
        return {"state"}

    def _ssnc_acre(self, item: Item) -> set[Change]:
        self.active_remote = item.text.strip() or None
        return {"state"}

    def _ssnc_daid(self, item: Item) -> set[Change]:
        self.dacp_id = item.text.strip().lstrip("0") or None
        return {"state"}

    def _ssnc_dapo(self, item: Item) -> set[Change]:
        try:
            port = int(item.text.strip())
        except ValueError:
            return set()
        if self.dacp_id:
            if 0 < port < 65536:
                self.dacp_ports[self.dacp_id] = port
            else:
                self.dacp_ports.pop(self.dacp_id, None)
        return {"state"}

    def _ssnc_pvol(self, item: Item) -> set[Change]:
        # "airplay_volume,volume,lowest,highest": the first is the sender's slider.
        try:
            self.volume_db = float(item.text.split(",", 1)[0])
        except ValueError:
            return set()
        return {"state"}

    def _ssnc_pbeg(self, item: Item) -> set[Change]:
        self._connected()
        if self.status != "playing":
            self.status = "buffering"
        return {"state"}

    def _ssnc_prsm(self, item: Item) -> set[Change]:
        self._connected()
        if self.status != "playing":
            self.status = "playing"
            if self._position_ms is not None:
                self._since = self.clock()
        return {"state"}

    def _ssnc_pfls(self, item: Item) -> set[Change]:
        # The flush that follows every RECORD is no pause: the audio has not even started.
        if self.status != "playing":
            return set()
        self._position_ms = self.position_ms()
        self._since = None
        self.status = "paused"
        return {"state"}

    def _ssnc_pend(self, item: Item) -> set[Change]:
        had_cover = self.cover is not None
        self.end()
        return {"state", "cover"} if had_cover else {"state"}

    def _ssnc_prgr(self, item: Item) -> set[Change]:
        progress = progress_ms(item.text)
        if progress is None:
            return set()
        self._position_ms, self.track.duration_ms = progress
        self._since = self.clock() if self.status == "playing" else None
        return {"state"}

    def _ssnc_mdst(self, item: Item) -> set[Change]:
        self._pending = Track(rtptime=item.text.strip() or None)
        return set()

    def _ssnc_mden(self, item: Item) -> set[Change]:
        pending, self._pending = self._pending, None
        if pending is None:
            return set()
        return self._new_track(pending)

    def _ssnc_pcst(self, item: Item) -> set[Change]:
        self._picture_rtptime = item.text.strip() or None
        return set()

    def _picture(self, item: Item) -> set[Change]:
        self.cover = item.data or None
        self.cover_rtptime, self._picture_rtptime = self._picture_rtptime, None
        return {"cover"}

    def _core(self, item: Item) -> set[Change]:
        target = self._pending if self._pending is not None else Track(**vars(self.track))
        if item.code in _TRACK_TAGS:
            setattr(target, _TRACK_TAGS[item.code], item.text.strip() or None)
        elif item.code == "astm" and len(item.data) == 4:
            target.duration_ms = int.from_bytes(item.data, "big") or None
        else:
            return set()
        if self._pending is not None:
            return set()
        return self._new_track(target)

    def _new_track(self, track: Track) -> set[Change]:
        old = self.track
        changed: set[Change] = {"state"}
        same = (track.title, track.artist, track.album) == (old.title, old.artist, old.album)
        if track.duration_ms is None and same:
            track.duration_ms = old.duration_ms
        if (
            not same
            and self.cover is not None
            and (track.rtptime is None or track.rtptime != self.cover_rtptime)
        ):
            # Another track whose picture has not come (yet): the old one would be wrong.
            self.cover, self.cover_rtptime = None, None
            changed.add("cover")
        if track.rtptime is None:
            track.rtptime = old.rtptime
        self.track = track
        return changed
