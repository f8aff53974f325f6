"""A subsystem that is never available, with a command, a request verb and an owned topic."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, TypeAdapter

from node.framework.errors import SubsystemUnavailableError
from node.framework.subsystem import Owned, Subsystem, SubsystemConfig
from tests.fakes.counter import CounterCommand, CounterState, EchoRequest, SetValue


class Unplugged(Subsystem[CounterState, SubsystemConfig]):
    """The counter with its device missing for good: every topic of the contract on its unavailable path.

    The real subsystems all run on the test machine, so without it the unavailable branch of the
    every-subsystem contract test would never be exercised.
    """

    name = "unplugged"
    description = "test subsystem that never finds its device"
    State = CounterState
    Command = TypeAdapter(CounterCommand)
    requests: ClassVar[dict[str, type[BaseModel]]] = {"echo": EchoRequest}
    owned: ClassVar[dict[str, Owned]] = {"unplugged/extra": Owned(CounterState, TypeAdapter(SetValue))}

    async def check_environment(self) -> None:
        raise SubsystemUnavailableError("the unplugged device is not there")
