"""A fake audio source keeping the `source/<name>` contract: it obeys the player and records what it got."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from node.framework.errors import SubsystemUnavailableError
from node.sources import Source, SourceCommand, SourceConfig, SourceState, Transport, commands_of

ALL_COMMANDS: list[SourceCommand] = ["play", "pause", "stop", "next", "previous", "seek"]
DURATION_MS = 200_000


class FakeSourceState(SourceState):
    received: list[str] = Field(
        default_factory=list, description="what arrived on /set from the player: texts, `seek_ms=<n>`"
    )


class FakeSourceConfig(SourceConfig):
    available: bool = True
    commands: list[SourceCommand] = Field(default_factory=lambda: list(ALL_COMMANDS))


class Start(BaseModel):
    """Someone started playing on the phone: playing, whatever the player said."""

    model_config = ConfigDict(extra="forbid")
    start: Literal[True]


class SetCommands(BaseModel):
    model_config = ConfigDict(extra="forbid")
    commands: list[SourceCommand]


class Unplug(BaseModel):
    """The device went away (true) or came back (false)."""

    model_config = ConfigDict(extra="forbid")
    unplug: bool


class FakeSource(Source[FakeSourceState, FakeSourceConfig]):
    """Subclassed by `make_source` with a name; never registered itself."""

    name = "fake"
    program = "nothing (a test double)"
    State = FakeSourceState
    Config = FakeSourceConfig
    Command = commands_of(Start, SetCommands, Unplug)

    async def check_environment(self) -> None:
        if not self.config.available:
            raise SubsystemUnavailableError(f"{self.name} is unplugged")

    async def setup(self) -> None:
        self._track = 1
        self.state = FakeSourceState(commands=list(self.config.commands), **self._metadata())

    def _metadata(self) -> dict[str, Any]:
        return {
            "title": f"{self.name} track {self._track}",
            "artist": f"{self.name} artist",
            "album": f"{self.name} album",
            "cover_url": f"http://covers.invalid/{self.name}/{self._track}.jpg",
            "duration_ms": DURATION_MS,
        }

    async def on_source_command(self, command: Any) -> None:
        if isinstance(command, Start):
            await self.set_state(state="playing", position_ms=0)
        elif isinstance(command, SetCommands):
            await self.set_state(commands=command.commands)
        else:
            await self.set_state(state="unavailable" if command.unplug else "idle")

    async def seek(self, position_ms: int) -> None:
        received = [*self.state.received, f"seek_ms={position_ms}"]
        await self.set_state(received=received, position_ms=position_ms)

    async def transport(self, command: Transport) -> None:
        changes: dict[str, Any] = {"received": [*self.state.received, command]}
        command = self.toggled(command)
        if command == "play":
            changes.update(state="playing", position_ms=self.state.position_ms or 0)
        elif command == "pause":
            changes["state"] = "paused"
        elif command == "stop":
            changes.update(state="idle", position_ms=None)
        else:
            self._track = max(1, self._track + (1 if command == "next" else -1))
            changes.update(self._metadata(), position_ms=0)
        await self.set_state(**changes)


def make_source(source_name: str) -> type[FakeSource]:
    """A fake source class named `source_name` (config section, store file) on `source/<source_name>`."""

    class Named(FakeSource):
        name = source_name

    Named.__name__ = Named.__qualname__ = f"FakeSource_{source_name}"
    return Named
