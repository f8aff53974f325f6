"""An asyncio adapter around libmpv (python-mpv) for internet radio: play, pause, device moves, retries."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import mpv  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

PlayerState = Literal["idle", "buffering", "playing", "paused", "error"]

_OBSERVED = ("pause", "core-idle", "paused-for-cache", "metadata", "volume")
_EVENTS = ("start-file", "end-file")
# mpv's end-file reasons that we caused ourselves (stop, loadfile replace, terminate) or that mpv follows
# up on by itself (a playlist expanded into its entries).
_OURS = ("stop", "quit", "restarted", "aborted")
_LOG_PREFIXES = ("ffmpeg", "stream", "demux", "cplayer", "ao", "ao/alsa")


def alsa_device(pcm: str) -> str:
    """mpv's `audio-device` for an ALSA PCM such as the router's `milo_radio_direct`."""
    return f"alsa/{pcm}"


@dataclass(frozen=True)
class PlayerOptions:
    """How the player talks to stations and how hard it tries; the defaults suit a headless radio node."""

    audio_device: str = "auto"  # "alsa/<pcm>", see `alsa_device`
    ao: str | None = None  # e.g. "null" in tests; None leaves mpv's choice (it must match audio_device)
    user_agent: str = "Milo/1.0 (radio node)"
    network_timeout: float = 10.0  # seconds for mpv/ffmpeg to connect and read
    start_timeout: float = 15.0  # a station that has not produced audio by then has failed
    stall_timeout: float = 15.0  # buffering this long after playing counts as a dropped stream
    cache_secs: float = 10.0
    demuxer_max_bytes: str = "4MiB"
    demuxer_max_back_bytes: str = "1MiB"  # no seeking back in a live stream, so keep little
    retry_attempts: int = 5  # reconnects after a drop before giving up
    retry_first: float = 0.5  # seconds before the first reconnect; doubles each time
    retry_cap: float = 5.0
    healthy_after: float = 30.0  # playing this long forgives earlier reconnects
    volume: float = 100.0
    extra: dict[str, Any] = field(default_factory=dict)  # further mpv options, passed verbatim


@dataclass(frozen=True)
class PlayerSnapshot:
    """What the player is doing; a new one is published on every change."""

    state: PlayerState = "idle"
    url: str | None = None
    title: str | None = None  # the station's now-playing text (ICY StreamTitle)
    error: str | None = None
    retries: int = 0  # reconnects since the stream last played steadily
    volume: float | None = None


class _Mpv(Protocol):
    """The part of python-mpv's untyped `MPV` this module uses."""

    def command(self, name: str, *args: Any) -> Any: ...
    def observe_property(self, name: str, handler: Callable[[str, Any], None]) -> None: ...
    def register_event_callback(self, callback: Callable[[Any], None]) -> None: ...
    def terminate(self) -> None: ...
    def __setitem__(self, name: str, value: Any) -> None: ...


class MpvPlayer:
    """One libmpv instance; create it inside the running loop, use it from that loop, `await close()` it.

    mpv reports on its own event thread; everything is handed to the loop, where all state lives.
    """

    def __init__(
        self,
        options: PlayerOptions | None = None,
        *,
        on_change: Callable[[PlayerSnapshot], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.options = opts = options or PlayerOptions()
        self._on_change = on_change
        self._snapshot = PlayerSnapshot(volume=opts.volume)
        self._queues: set[asyncio.Queue[PlayerSnapshot | None]] = set()
        self._waiters: list[tuple[Callable[[PlayerSnapshot], bool], asyncio.Future[PlayerSnapshot]]] = []
        self._closed = False

        self._url: str | None = None
        self._entry: int | None = None  # mpv playlist entry of our current load; events of others are stale
        self._entry_seen = False  # its start-file arrived, so property changes describe it
        self._adopt_next = False  # a playlist URL redirected: the next start-file is ours
        self._started = False  # the current load has produced audio
        self._played = False  # this station has produced audio since play(): drops are retried
        self._retries = 0
        self._error: str | None = None
        self._title: str | None = None
        self._pause = False
        self._core_idle = True
        self._for_cache = False
        self._volume: float | None = opts.volume
        self._details: collections.deque[str] = collections.deque(maxlen=8)
        self._bare_error = False  # the error was published before mpv logged why
        self._timers: dict[str, asyncio.TimerHandle] = {}

        mpv_opts: dict[str, Any] = {
            "video": False,
            "ytdl": False,
            "idle": True,
            "cache": True,
            "cache_secs": opts.cache_secs,
            "cache_pause": True,
            "demuxer_max_bytes": opts.demuxer_max_bytes,
            "demuxer_max_back_bytes": opts.demuxer_max_back_bytes,
            "network_timeout": opts.network_timeout,
            "user_agent": opts.user_agent,
            "audio_device": opts.audio_device,
            # A missing device must fail the station, not play silently into nothing.
            "audio_fallback_to_null": False,
            "volume": opts.volume,
            "volume_max": 100,
            "input_default_bindings": False,
            **opts.extra,
        }
        # ffmpeg would follow a station's redirect to any address, past the SSRF guard: the node
        # follows redirects itself, checking each hop (radio/playlists.py), and mpv follows none.
        lavf = str(mpv_opts.get("stream_lavf_o") or "")
        mpv_opts["stream_lavf_o"] = f"{lavf},max_redirects=0" if lavf else "max_redirects=0"
        if opts.ao is not None:
            mpv_opts["ao"] = opts.ao
        self._mpv: _Mpv = mpv.MPV(log_handler=self._on_log, loglevel="warn", **mpv_opts)
        for name in _OBSERVED:
            self._mpv.observe_property(name, self._on_property)
        self._mpv.register_event_callback(self._on_event)

    # --- public API (loop thread) ---

    @property
    def snapshot(self) -> PlayerSnapshot:
        return self._snapshot

    async def play(self, url: str) -> None:
        """Tune to `url`; the outcome arrives as snapshots (buffering, then playing or error)."""
        self._check_open()
        self._cancel_timers()
        self._url, self._error, self._title, self._bare_error = url, None, None, False
        self._played, self._retries = False, 0
        if self._pause:
            self._pause = False
            self._mpv["pause"] = False
        self._load()

    async def stop(self) -> None:
        self._check_open()
        self._cancel_timers()
        self._url, self._entry, self._error, self._title, self._bare_error = None, None, None, None, False
        self._retries = 0
        self._mpv.command("stop")
        self._publish()

    async def pause(self) -> None:
        self._set_pause(True)

    async def resume(self) -> None:
        self._set_pause(False)

    async def set_volume(self, volume: float) -> None:
        self._check_open()
        self._mpv["volume"] = max(0.0, min(100.0, volume))

    async def set_audio_device(self, device: str) -> None:
        """Move output to `device` (see `alsa_device`); mpv reopens only its audio output, not the stream."""
        self._check_open()
        self._mpv["audio-device"] = device

    async def wait_for(self, pred: Callable[[PlayerSnapshot], bool], timeout: float) -> PlayerSnapshot:
        """The first snapshot (the current one too) for which `pred` holds; TimeoutError after `timeout`."""
        if pred(self._snapshot):
            return self._snapshot
        fut: asyncio.Future[PlayerSnapshot] = self._loop.create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def updates(self) -> AsyncIterator[PlayerSnapshot]:
        """Every snapshot from now on, starting with the current one; ends when the player is closed."""
        queue: asyncio.Queue[PlayerSnapshot | None] = asyncio.Queue()
        queue.put_nowait(self._snapshot)
        self._queues.add(queue)
        try:
            while (snap := await queue.get()) is not None:
                yield snap
        finally:
            self._queues.discard(queue)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_timers()
        for queue in self._queues:
            queue.put_nowait(None)
        # terminate() joins mpv's core and event thread: blocking, so never on the loop.
        await asyncio.to_thread(self._mpv.terminate)

    # --- mpv event thread: hand everything to the loop ---

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self._closed:
            return
        # The loop may already be gone while mpv shuts down; nothing is listening then.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_property(self, name: str, value: Any) -> None:
        self._post(self._property, name, value)

    def _on_event(self, event: Any) -> None:
        name = event.event_id.value
        if name in (mpv.MpvEventID.START_FILE, mpv.MpvEventID.END_FILE):
            self._post(self._event, event.as_dict(decoder=mpv.lazy_decoder))

    def _on_log(self, level: str, prefix: str, text: str) -> None:
        if prefix in _LOG_PREFIXES:
            self._post(self._detail, text.strip())

    # --- loop thread ---

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("player is closed")

    def _set_pause(self, paused: bool) -> None:
        self._check_open()
        if self._url is None or self._error is not None:
            return
        self._pause = paused
        self._mpv["pause"] = paused
        self._publish()

    def _load(self) -> None:
        assert self._url is not None
        self._started, self._entry_seen, self._adopt_next = False, False, False
        self._core_idle, self._for_cache = True, False
        self._details.clear()
        try:
            result = self._mpv.command("loadfile", self._url, "replace")
        except SystemError as e:
            self._fail(f"mpv refused the URL: {e}")
            return
        self._entry = int(result["playlist_entry_id"])
        self._arm("start", self.options.start_timeout, self._start_timed_out)
        self._publish()

    def _property(self, name: str, value: Any) -> None:
        if name == "pause":
            self._pause = bool(value)
        elif name == "volume":
            self._volume = float(value) if value is not None else None
        elif not self._entry_seen:
            return  # from a previous load, still in the queue
        elif name == "metadata":
            if value is not None:  # None while a (re)connect loads: keep the station's last title
                self._title = _icy_title(value)
        elif name == "core-idle":
            self._core_idle = bool(value)
            if not self._core_idle and not self._started:
                self._on_started()
        elif name == "paused-for-cache":
            self._for_cache = bool(value)
            if self._for_cache and self._started:
                self._arm("stall", self.options.stall_timeout, self._stalled)
            else:
                self._cancel("stall")
        self._publish()

    def _event(self, ev: dict[str, Any]) -> None:
        entry = ev.get("playlist_entry_id")
        if ev["event"] == "start-file":
            if self._adopt_next and self._url is not None:
                self._entry, self._adopt_next = entry, False
            if entry == self._entry:
                self._entry_seen = True
            return
        if entry != self._entry or self._url is None:
            return
        reason = ev.get("reason")
        if reason == "redirect":
            self._adopt_next = True
            return
        if reason in _OURS:
            return
        problem = str(ev.get("file_error") or "error") if reason == "error" else "stream ended"
        self._entry = None
        self._lost(self._describe(problem), from_mpv=True)

    def _describe(self, problem: str) -> str:
        """mpv's error plus its most telling log line (e.g. the HTTP status), which only the log has."""
        details = [d for d in self._details if _telling(d)]
        return f"{problem}: {details[0]}" if details else problem

    def _detail(self, text: str) -> None:
        self._details.append(text)
        # mpv's log is not ordered with its events: the reason for an error may come just after it.
        if self._bare_error and self._error is not None and _telling(text):
            self._bare_error = False
            self._error = f"{self._error}: {text}"
            self._publish()

    def _on_started(self) -> None:
        self._started = self._played = True
        self._cancel("start")
        self._arm("healthy", self.options.healthy_after, self._healthy)

    def _healthy(self) -> None:
        self._retries = 0
        self._publish()

    def _start_timed_out(self) -> None:
        if self._pause:  # a listener's pause is not the station's fault
            self._arm("start", self.options.start_timeout, self._start_timed_out)
            return
        self._lost(self._describe(f"no audio within {self.options.start_timeout:g} s"))

    def _stalled(self) -> None:
        self._lost(f"stream stalled for {self.options.stall_timeout:g} s")

    def _lost(self, reason: str, *, from_mpv: bool = False) -> None:
        """The current load failed: a station that never played is broken; one that did is reconnected."""
        self._cancel_timers()
        if not self._played:
            self._fail(reason, from_mpv=from_mpv)
        elif self._retries >= self.options.retry_attempts:
            self._fail(f"gave up after {self._retries} reconnects: {reason}", from_mpv=from_mpv)
        else:
            self._retries += 1
            self._started = False
            delay = min(self.options.retry_first * 2 ** (self._retries - 1), self.options.retry_cap)
            log.info("radio: %s; reconnecting in %.1f s (%d)", reason, delay, self._retries)
            self._arm("retry", delay, self._load)
            self._publish()

    def _fail(self, reason: str, *, from_mpv: bool = False) -> None:
        log.warning("radio: %s: %s", self._url, reason)
        self._cancel_timers()
        self._error, self._entry, self._started = reason, None, False
        self._bare_error = from_mpv and not any(_telling(d) for d in self._details)
        self._mpv.command("stop")
        self._publish()

    def _arm(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._cancel(name)
        self._timers[name] = self._loop.call_later(delay, fn)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _cancel_timers(self) -> None:
        for name in list(self._timers):
            self._cancel(name)

    def _state(self) -> PlayerState:
        if self._error is not None:
            return "error"
        if self._url is None:
            return "idle"
        if self._pause:
            return "paused"
        if self._started and not self._core_idle and not self._for_cache:
            return "playing"
        return "buffering"

    def _publish(self) -> None:
        snap = replace(
            self._snapshot,
            state=self._state(),
            url=self._url,
            title=self._title if self._url is not None else None,
            error=self._error,
            retries=self._retries,
            volume=self._volume,
        )
        if snap == self._snapshot:
            return
        self._snapshot = snap
        for queue in self._queues:
            queue.put_nowait(snap)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(snap):
                fut.set_result(snap)
        if self._on_change is not None:
            self._on_change(snap)


def _telling(line: str) -> bool:
    """A log line worth showing as an error's cause ("Failed to open <url>" only repeats the error)."""
    return not line.startswith("Failed to open")


def _icy_title(metadata: Any) -> str | None:
    """`icy-title` from mpv's metadata map (key case as sent); undecodable bytes are taken as Latin-1."""
    if not isinstance(metadata, dict):
        return None
    for key, value in metadata.items():
        if str(key).lower() == "icy-title":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            return text.strip() or None
    return None
