"""Audio sources: the Source base class, which does what every source needs, and one module per source."""

# A source is its module (or package), one line in `node.registry.SOURCES`, its test file and, when it
# drives a daemon, its unit template. `__all__` below is what a source author needs from here.

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, TypeAdapter

from node.framework.bus import Message
from node.framework.errors import CommandError
from node.framework.subsystem import Subsystem, SubsystemConfig
from node.framework.views import (
    TRANSPORTS,
    RoutingView,
    Seek,
    SourceCommand,
    SourceState,
    SourceStatus,
    Transport,
    read_view,
    split_title,
)

__all__ = [
    "TRANSPORTS",
    "Seek",
    "Source",
    "SourceCommand",
    "SourceConfig",
    "SourceState",
    "SourceStatus",
    "Transport",
    "commands_of",
    "split_title",
]

# States in which `toggle` means pause.
BUSY: frozenset[str] = frozenset({"playing", "buffering"})


class SourceConfig(SubsystemConfig):
    """Every source's config has `enabled`; a source adds its own keys."""


StateT = TypeVar("StateT", bound=SourceState)
ConfigT = TypeVar("ConfigT", bound=SourceConfig)


def commands_of(*extra: Any) -> TypeAdapter[Any]:
    """The `/set` payloads of a source: the transport texts, `{"seek_ms": n}`, and its own models."""
    if not extra:
        return TypeAdapter(Transport | Seek)
    union: Any = Transport | Seek
    for model in extra:
        union = union | model
    return TypeAdapter(union)


class Source(Subsystem[StateT, ConfigT]):
    """One audio source: its state lives on `source/<name>`; the player drives it with transport texts.

    Declared at the top of each subclass: `name`, `program` (what it drives), `loopback` (its pinned
    snd-aloop subdevice in multiroom mode, or None for the next free one), `unit` (its systemd unit
    template in systemd/, or None). The base follows `routing.pcms[name]` and hands every new PCM to
    `move_to`, says `unavailable` (with the reason) whenever the source does not run, and turns
    `/set` payloads into `transport`, `seek` and `on_source_command` calls.
    """

    program: ClassVar[str] = ""
    loopback: ClassVar[int | None] = None
    unit: ClassVar[str | None] = None
    Command: ClassVar[TypeAdapter[Any] | None] = commands_of()
    watches: ClassVar[tuple[str, ...]] = ("routing",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.topic = f"source/{cls.name}"
        # A source may watch more topics; routing is always among them.
        cls.watches = tuple(dict.fromkeys(("routing", *cls.watches)))

    def __init__(self, ctx: Any, config: ConfigT) -> None:
        super().__init__(ctx, config)
        self.pcm = ""  # the PCM routing assigns this source now; "" until routing says

    absent_model: ClassVar[type[BaseModel] | None] = None  # the State says `unavailable` itself

    @classmethod
    def absent_state(cls, status: str, reason: str) -> BaseModel:
        # So nobody takes a `playing` retained before a restart for the truth.
        return cls.State(state="unavailable", error=reason)

    # Hooks a source overrides ----------------------------------------------------------------------
    async def move_to(self, pcm: str) -> None:
        """Play into `pcm` from now on, without dropping the session (called on every routing change)."""

    async def transport(self, command: Transport) -> None:
        """play/pause/toggle/stop/next/previous.

        `toggle` arrives as sent, for programs with a toggle of their own; `self.toggled(command)`
        turns it into `pause` or `play` from the current state for the others.
        """
        raise CommandError("unsupported", f"{self.name} cannot {command}")

    async def seek(self, position_ms: int) -> None:
        raise CommandError("unsupported", f"{self.name} cannot seek")

    async def on_source_command(self, command: Any) -> None:
        """A command of the source's own models (given to `commands_of`)."""
        raise CommandError("invalid_payload", f"{self.name} does not take {command!r}")

    def parse_source_text(self, text: str) -> Any:
        """A plain-text command that is not a transport (a URL, a station id...): what `Command` takes."""
        return text

    async def on_source_topic(self, message: Message, path: str) -> None:
        """A message on one of the source's own `watches` (routing is handled by the base)."""

    # Provided --------------------------------------------------------------------------------------
    def toggled(self, command: Transport) -> Transport:
        """`toggle` as `pause` while playing or buffering, else `play`; any other command as it is."""
        if command != "toggle":
            return command
        return "pause" if self.state.state in BUSY else "play"

    def parse_text(self, text: str) -> Any:
        if text in TRANSPORTS:
            return text
        return self.parse_source_text(text)

    async def on_command(self, command: Any) -> None:
        if isinstance(command, Seek):
            await self.seek(command.seek_ms)
        elif isinstance(command, str) and command in TRANSPORTS:
            await self.transport(command)
        else:
            await self.on_source_command(command)

    async def on_topic(self, message: Message, path: str) -> None:
        if path != "routing":
            await self.on_source_topic(message, path)
            return
        view = read_view(RoutingView, message.payload, self.log)
        pcm = view.pcms.get(self.name, "") if view is not None else ""
        if view is None or not pcm or pcm == self.pcm:
            return
        self.pcm = pcm
        await self.move_to(pcm)
