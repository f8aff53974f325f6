"""A small subsystem with every contract feature: /set (JSON, text), a request verb, config, data, crashes."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from node.framework.errors import CommandError, SubsystemUnavailableError
from node.framework.subsystem import Subsystem, SubsystemConfig


class CounterState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int = 0
    label: str = ""


class CounterConfig(SubsystemConfig):
    step: int = Field(default=1, ge=1, le=10)
    maximum: int = Field(default=100, ge=1)
    label: str = ""
    available: bool = True


class CounterData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int = 0


class SetValue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int


class Delta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delta: int


class EchoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=100)


CounterCommand = int | SetValue | Delta | Literal["reset", "crash", "fail"]


class Counter(Subsystem[CounterState, CounterConfig]):
    name = "counter"
    description = "test subsystem"
    State = CounterState
    Config = CounterConfig
    Data = CounterData
    Command = TypeAdapter(CounterCommand)
    data: CounterData
    requests: ClassVar[dict[str, type[BaseModel]]] = {"echo": EchoRequest}

    async def check_environment(self) -> None:
        if not self.config.available:
            raise SubsystemUnavailableError("the counter device is unplugged")

    async def setup(self) -> None:
        self._crash = asyncio.Event()
        self.state = CounterState(value=self.data.value, label=self.config.label)

    async def run(self) -> None:
        await self._crash.wait()
        raise RuntimeError("counter exploded")

    def parse_text(self, text: str) -> Any:
        if text[:1] in "+-" and text[1:].isdigit():
            return {"delta": int(text)}
        return text

    async def on_command(self, command: Any) -> None:
        if command == "crash":
            self._crash.set()
            return
        if command == "fail":
            raise ValueError("unexpected bug")
        if command == "reset":
            value = 0
        elif isinstance(command, int):
            value = command
        elif isinstance(command, SetValue):
            value = command.value
        else:
            value = self.state.value + command.delta * self.config.step
        if not 0 <= value <= self.config.maximum:
            raise CommandError("out_of_range", f"value must be within 0..{self.config.maximum}")
        self.data.value = value
        self.save_data()
        await self.set_state(value=value)

    async def on_request(self, verb: str, request: Any) -> Any:
        return {"echo": request.text, "value": self.state.value}

    async def on_config(self, old: CounterConfig, new: CounterConfig) -> bool:
        if new.available != old.available:
            return False
        await self.set_state(label=new.label)
        return True
