"""The `player` subsystem: the sources aggregated into `player` and `source`, commands to the active one."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from node.framework.bus import Message
from node.framework.errors import CommandError
from node.framework.payloads import ErrorPayload
from node.framework.subsystem import Owned, Subsystem, SubsystemConfig
from node.framework.views import (
    SOURCE_COMMANDS,
    SOURCE_NAME,
    Seek,
    SourceCommand,
    SourceStatus,
    SourceView,
    Transport,
)

NONE = "none"
# Names under `source/` that are the `source` topic's own commands, never a source.
RESERVED = frozenset({"set", "get", "config", NONE})
_NAME = re.compile(SOURCE_NAME)
BUSY: frozenset[str] = frozenset({"playing", "buffering"})
# What a `toggle` sent while one of these is unanswered means: the opposite of what was last asked.
_OPPOSITE: dict[str, Transport] = {"play": "pause", "pause": "play", "stop": "play"}

PlayerStatus = Literal["idle", "buffering", "playing", "paused", "error"]
_STATUS_OF: dict[SourceStatus, PlayerStatus] = {
    "unavailable": "idle",
    "idle": "idle",
    "connected": "idle",
    "buffering": "buffering",
    "playing": "playing",
    "paused": "paused",
    "error": "error",
}


class PlayerState(BaseModel):
    """Retained `<base>/player`: what the active source is doing, and what `player/set` may send it now."""

    model_config = ConfigDict(extra="forbid")

    active: str = Field(default=NONE, description="the active source, or `none`")
    state: PlayerStatus = "idle"
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    cover_url: str | None = None
    position_ms: int | None = Field(default=None, ge=0)
    duration_ms: int | None = Field(default=None, ge=0, description="None for a live stream")
    position_at: int | None = Field(
        default=None, description="Unix time in ms when position_ms was read, to extrapolate from"
    )
    commands: list[SourceCommand] = Field(
        default_factory=list, description="what player/set may send now (`toggle` when play and pause are)"
    )
    error: str | None = None


class SourcesState(BaseModel):
    """Retained `<base>/source`: the active source and every source the node has."""

    model_config = ConfigDict(extra="forbid")

    active: str = Field(default=NONE, description="the active source, or `none`")
    enabled: list[str] = Field(default_factory=list, description="sources whose config enables them")
    available: list[str] = Field(default_factory=list, description="enabled sources that can play now")
    states: dict[str, SourceStatus] = Field(
        default_factory=dict, description="each source's state (`unavailable` when disabled)"
    )
    auto_switch: bool = Field(default=True, description="a source that starts playing becomes active")


class PlayerConfig(SubsystemConfig):
    auto_switch: bool = Field(default=True, description="a source that starts playing becomes the active one")
    pause_previous: bool = Field(
        default=True, description="pause (or stop) the previous source when the active one changes"
    )
    play_on_select: bool = Field(default=True, description="`source/set` also starts the chosen source")
    restore_active: bool = Field(default=True, description="the active source is kept across restarts")


class PlayerData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: str = Field(default=NONE, pattern=SOURCE_NAME)


class SourceChoice(BaseModel):
    """`source/set`: `{"active": "radio"}`, or the plain text `radio` / `none`."""

    model_config = ConfigDict(extra="forbid")

    active: str = Field(pattern=SOURCE_NAME, description="a source name, or `none`")


PlayerCommand = Transport | Seek


def order(names: set[str] | list[str], known: Sequence[str]) -> list[str]:
    """The registered sources in the order of the list of sources, then any others alphabetically."""
    listed = [n for n in known if n in names]
    return listed + sorted(n for n in names if n not in known)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Source:
    """What the player knows of one source: its config's `enabled` and its last readable state."""

    enabled: bool = False
    view: SourceView | None = None
    # The last state seen, kept across a deleted state topic: only a change from it is a "start".
    last: SourceStatus | None = None
    position_at: int | None = None
    # What the player sent it that no state (nor error on its /set) has answered yet, oldest first,
    # each with when it went (time.monotonic()): until they are answered, `view` predates them.
    unanswered: list[tuple[str, float]] = field(default_factory=list)

    def answered(self) -> None:
        if self.unanswered:
            del self.unanswered[0]

    @property
    def available(self) -> bool:
        return self.enabled and self.view is not None and self.view.state != "unavailable"

    def commands(self) -> list[SourceCommand]:
        if not self.available or self.view is None:
            return []
        listed = set(self.view.commands)
        if "play" in listed and "pause" in listed:
            listed.add("toggle")
        return [c for c in SOURCE_COMMANDS if c in listed]


class Player(Subsystem[PlayerState, PlayerConfig]):
    name = "player"
    description = "aggregates the sources into `player` and `source`; routes transport commands"
    State = PlayerState
    Config = PlayerConfig
    Data = PlayerData
    Command = TypeAdapter(PlayerCommand)
    owned: ClassVar[dict[str, Owned]] = {"source": Owned(SourcesState, TypeAdapter(SourceChoice))}
    # Every runner publishes `source/<name>/config`, so a source is known even while it does not run.
    # `error`: a source refusing a command the player sent it answers it there.
    watches: ClassVar[tuple[str, ...]] = ("source/+", "source/+/config", "error")
    # A source answers a command in well under a second, the radio within its network timeout (10 s
    # by default: a playlist to fetch first). One that leaves a command unanswered longer (hung, or
    # gone without its state saying so) is judged on its last state again, not sent everything blindly.
    answer_timeout_s: ClassVar[float] = 10.0

    data: PlayerData

    async def setup(self) -> None:
        self._sources: dict[str, _Source] = {}
        self._active = self.data.active if self.config.restore_active else NONE
        self._known = [spec.name for spec in self.ctx.node.sources]
        self.state = self._player_state()
        # A state that arrives before its source's config (retained order is the broker's) waits here.
        self._early: dict[str, bytes] = {}

    async def run(self) -> None:
        await self.publish_owned("source", self._sources_state())
        await super().run()

    async def on_config(self, old: PlayerConfig, new: PlayerConfig) -> bool:
        await self._publish()
        return True

    # Sources ---------------------------------------------------------------------------------------
    async def on_topic(self, message: Message, path: str) -> None:
        if path == "error":
            self._on_error(message.payload)
            return
        parts = path.split("/")
        if len(parts) < 2 or parts[0] != "source" or parts[1] in RESERVED or not _NAME.match(parts[1]):
            return
        name = parts[1]
        if parts[2:] == ["config"]:
            self._on_source_config(name, message.payload)
        elif len(parts) == 2:
            self._on_answer(name, message.payload)
            if self._on_source_state(name, message.payload):
                await self._activate(name)
                return
        else:
            return
        await self._publish()

    def _on_source_config(self, name: str, payload: bytes) -> None:
        if not payload:
            self._sources.pop(name, None)
            self._early.pop(name, None)
            return
        try:
            config = json.loads(payload)
        except ValueError:
            self.log.debug("player: ignoring unreadable config of source %s", name)
            return
        if not isinstance(config, dict):
            self.log.debug("player: ignoring a config of source %s that is not an object", name)
            return
        source = self._sources.setdefault(name, _Source())
        source.enabled = config.get("enabled") is True
        if name in self._early:
            self._on_source_state(name, self._early.pop(name))

    def _on_answer(self, name: str, payload: bytes) -> None:
        """A state of a source answers the oldest command sent to it (the source takes them in order).

        Every command a source takes is echoed by at least one state, and one it refuses is answered
        on `error`; a state it publishes on its own (a new title) ends the wait early, which only means
        the player checks the next command against that newer state, as it does when nothing waits.
        """
        source = self._sources.get(name)
        if source is None:
            return
        if not payload:
            source.unanswered.clear()  # gone: nothing will answer
        else:
            source.answered()

    def _on_error(self, payload: bytes) -> None:
        try:
            error = ErrorPayload.model_validate_json(payload)
        except ValidationError:
            return
        prefix, suffix = self.ctx.topics.of("source/"), "/set"
        if error.topic.startswith(prefix) and error.topic.endswith(suffix):
            source = self._sources.get(error.topic[len(prefix) : -len(suffix)])
            if source is not None:
                source.answered()

    def _waiting(self, name: str, source: _Source) -> bool:
        """True while a command sent to `name` is unanswered, the oldest not older than the timeout."""
        # From the oldest: commands sent since must not keep a source that stopped answering waited on.
        if source.unanswered and time.monotonic() - source.unanswered[0][1] >= self.answer_timeout_s:
            self.log.info(
                "player: %s did not answer %s within %g s; its last state counts again",
                name,
                ", ".join(command for command, _ in source.unanswered),
                self.answer_timeout_s,
            )
            source.unanswered.clear()
        return bool(source.unanswered)

    def _on_source_state(self, name: str, payload: bytes) -> bool:
        """Record a source's state; True when it has just started playing and should become active."""
        source = self._sources.get(name)
        if source is None:
            self._early[name] = payload
            return False
        if not payload:
            source.view, source.position_at = None, None
            if source.last is not None:
                source.last = "unavailable"
            return False
        try:
            view = SourceView.model_validate_json(payload)
        except ValidationError as exc:
            self.log.debug("player: ignoring a state of source %s it cannot read: %s", name, exc)
            return False
        old = source.view
        if view.position_ms is None:
            source.position_at = None
        elif old is None or (old.position_ms, old.state) != (view.position_ms, view.state):
            source.position_at = _now_ms()
        previous, source.view, source.last = source.last, view, view.state
        # The first state seen is history (a retained message at start), not someone pressing play.
        return (
            self.config.auto_switch
            and previous is not None
            and previous != "playing"
            and view.state == "playing"
            and name != self._active
            and source.available
        )

    # Publishing ------------------------------------------------------------------------------------
    def _player_state(self) -> PlayerState:
        source = self._sources.get(self._active)
        if source is None or not source.available or source.view is None:
            return PlayerState(active=self._active)
        view = source.view
        return PlayerState(
            active=self._active,
            state=_STATUS_OF[view.state],
            title=view.title,
            artist=view.artist,
            album=view.album,
            cover_url=view.cover_url,
            position_ms=view.position_ms,
            duration_ms=view.duration_ms,
            position_at=source.position_at,
            commands=source.commands(),
            error=view.error if view.state == "error" else None,
        )

    def _sources_state(self) -> SourcesState:
        names = order(list(self._sources), self._known)
        return SourcesState(
            active=self._active,
            enabled=[n for n in names if self._sources[n].enabled],
            available=[n for n in names if self._sources[n].available],
            states={n: self._status_of(n) for n in names},
            auto_switch=self.config.auto_switch,
        )

    def _status_of(self, name: str) -> SourceStatus:
        source = self._sources[name]
        if not source.enabled or source.view is None:
            return "unavailable"
        return source.view.state

    async def _publish(self) -> None:
        self.state = self._player_state()
        await self.publish_state()
        await self.publish_owned("source", self._sources_state())

    async def _activate(self, name: str) -> None:
        """Make `name` the active source: publish it, persist it, then pause the previous one."""
        previous, self._active = self._active, name
        if self.data.active != name:
            self.data = PlayerData(active=name)
            self.save_data()
        # Published before anything is sent to a source, so the switch shows at once.
        await self._publish()
        if previous == name or not self.config.pause_previous:
            return
        old = self._sources.get(previous)
        if old is None or not old.available or old.view is None or old.view.state not in BUSY:
            return
        if "pause" in old.view.commands:
            await self._send(previous, "pause")
        elif "stop" in old.view.commands:
            await self._send(previous, "stop")

    async def _send(self, name: str, command: str) -> None:
        source = self._sources.get(name)
        if source is not None:
            source.unanswered.append((command, time.monotonic()))
        await self.ctx.bus.publish(self.ctx.topics.of(f"source/{name}/set"), command.encode())

    # Commands --------------------------------------------------------------------------------------
    def parse_text(self, text: str) -> Any:
        return text.lower()

    def parse_owned_text(self, path: str, text: str) -> Any:
        return {"active": text.lower()}

    async def on_command(self, command: Any) -> None:
        name = self._active
        if name == NONE:
            raise CommandError("no_active_source", "no source is active; choose one on source/set")
        source = self._sources.get(name)
        if source is None or not source.available or source.view is None:
            raise CommandError("unavailable", f"{name} is not available now")
        if self._waiting(name, source):
            # Its last state predates a command still on its way, so it cannot say what the source
            # takes now; the source does, in order: by its state, or by its own error.
            meant = command.model_dump_json() if isinstance(command, Seek) else self._meant(source, command)
            await self._send(name, meant)
            return
        can = source.commands()
        if isinstance(command, Seek):
            if "seek" not in can:
                raise self._unsupported(name, "seek", can)
            await self._send(name, command.model_dump_json())
            return
        text: str = command
        if text == "toggle" and "toggle" not in source.view.commands:
            text = "pause" if source.view.state in BUSY else "play"
            if text not in can:
                raise self._unsupported(name, "toggle", can)
        elif text not in can:
            raise self._unsupported(name, text, can)
        await self._send(name, text)

    @staticmethod
    def _meant(source: _Source, command: Transport) -> str:
        """A command for a source with commands unanswered: `toggle` as the opposite of the last asked."""
        if command != "toggle":
            return command
        asked = next((c for c, _ in reversed(source.unanswered) if c in _OPPOSITE), None)
        if asked is not None:
            return _OPPOSITE[asked]
        assert source.view is not None
        if "toggle" in source.view.commands:
            return "toggle"  # a next or a seek on its way: the source knows best what toggle means then
        return "pause" if source.view.state in BUSY else "play"

    @staticmethod
    def _unsupported(name: str, command: str, can: list[SourceCommand]) -> CommandError:
        return CommandError(
            "unsupported", f"{name} cannot {command} now; it can: {', '.join(can) or 'nothing'}"
        )

    async def on_owned_command(self, path: str, command: Any) -> None:
        choice: SourceChoice = command
        name = choice.active
        if name == NONE:
            await self._activate(NONE)
            return
        source = self._sources.get(name)
        if source is None:
            known = ", ".join(order(list(self._sources), self._known)) or "none"
            raise CommandError("unknown_source", f"no source {name!r}; the sources are: {known}")
        if not source.available or source.view is None:
            why = "disabled" if not source.enabled else "unavailable"
            raise CommandError("unavailable", f"{name} is {why}")
        await self._activate(name)
        if self.config.play_on_select and "play" in source.view.commands and source.view.state not in BUSY:
            await self._send(name, "play")
