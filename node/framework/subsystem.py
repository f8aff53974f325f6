"""What a subsystem author reads: the Subsystem base class, its hooks, its context and its statuses."""

# The Runner (node/framework/runner.py) serves the topics around it: a subsystem only fills in hooks.

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from node.framework.bus import Bus, Message
from node.framework.errors import CommandError
from node.framework.topics import Topics

__all__ = [
    "EVENT_QOS",
    "LOCAL_ONLY",
    "STATE_QOS",
    "Absent",
    "Context",
    "NoData",
    "NodeFacts",
    "Owned",
    "SourceSpec",
    "Status",
    "StatusBoard",
    "Subsystem",
    "SubsystemConfig",
    "local_only",
    "local_only_keys",
]


# QoS by kind (README "QoS"): the broker delivers at the lower of this and the subscriber's.
# Retained topics (status, states, configs) go at QoS 1: a client that asked for 1 or 2 gets
# them acknowledged. Request replies and error events go at QoS 0: they matter only to a client
# connected now and are asked for again rather than replayed late.
STATE_QOS = 1
EVENT_QOS = 0


class Status(StrEnum):
    """Where a subsystem is in its life, as shown in `info`."""

    STARTING = "starting"
    RUNNING = "running"
    DISABLED = "disabled"
    CONFIG_ERROR = "config_error"
    UNAVAILABLE = "unavailable"
    CRASHED = "crashed"


LOCAL_ONLY = "x-milo-local-only"


def local_only(**field: Any) -> Any:
    """A config field that only the local config file may set, never `<sub>/config/set`.

    For what reaches the file system or the ALSA config verbatim, or turns a protection off (a
    path, raw ALSA text, private URLs): the network may read it, not write it.
    """
    return Field(json_schema_extra={LOCAL_ONLY: True}, **field)


def local_only_keys(model: type[BaseModel]) -> set[str]:
    return {
        name
        for name, info in model.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(LOCAL_ONLY)
    }


class SubsystemConfig(BaseModel):
    """Every subsystem's config has at least `enabled`; subclasses add their own keys."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


AbsentStatus = Literal["unavailable", "disabled", "crashed", "config_error"]


class Absent(BaseModel):
    """A state topic whose subsystem does not run: why, and nothing else."""

    model_config = ConfigDict(extra="forbid")

    status: AbsentStatus
    reason: str = Field(max_length=2000, description="what is missing or wrong, for a person")


class NoData(BaseModel):
    """The persisted data of a subsystem that keeps nothing but its config."""

    model_config = ConfigDict(extra="forbid")


StateT = TypeVar("StateT", bound=BaseModel)
ConfigT = TypeVar("ConfigT", bound=SubsystemConfig)


@dataclass
class StatusBoard:
    """Statuses of every subsystem in this process; the `info` subsystem reads it (framework, not a peer)."""

    entries: dict[str, tuple[Status, str]] = field(default_factory=dict)
    # Problems found at start (a corrupt file set aside...): shown in `info`, since the error
    # events that reported them went out before most clients were connected.
    notices: list[str] = field(default_factory=list)
    _listeners: list[Callable[[], None]] = field(default_factory=list)

    def notice(self, text: str) -> None:
        self.notices = [*self.notices[-19:], text]
        for listener in list(self._listeners):
            listener()

    def set(self, name: str, status: Status, detail: str = "") -> None:
        if self.entries.get(name) == (status, detail):
            return
        self.entries[name] = (status, detail)
        for listener in list(self._listeners):
            listener()

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)


@dataclass(frozen=True)
class SourceSpec:
    """What the node knows of a source without importing it: its name and its Loopback subdevice."""

    name: str
    subdevice: int  # snd-aloop playback subdevice in multiroom mode (pinned ones never move)
    program: str = ""  # the outside program it drives, for people and `info`


@dataclass
class NodeFacts:
    """Read-only facts about the node process that subsystems may show."""

    node_id: str
    version: str
    started: float  # time.time() at process start
    broker: str
    http_port: int | None
    mqtt_port: int | None
    board: StatusBoard
    data_dir: Path = Path()
    # The asound.conf the router writes and every ALSA user of this node reads (ALSA_CONFIG_PATH).
    alsa_config: Path = Path("/etc/asound.conf")
    # Every registered source, whether or not it runs in this process (the router defines them all).
    sources: Sequence[SourceSpec] = ()


@dataclass(frozen=True)
class Owned:
    """A further retained topic of a subsystem: its state model and the /set payloads it takes."""

    state: type[BaseModel]
    command: TypeAdapter[Any] | None = None


@dataclass
class Context:
    """Everything a subsystem gets: no reference to any other subsystem."""

    topics: Topics
    bus: Bus
    node: NodeFacts
    logger: logging.Logger
    report: Callable[[str, bytes, str, str], Any]  # (topic, payload, code, message) -> awaitable
    save_data: Callable[[BaseModel], None]
    data: dict[str, Any]
    # Awaited before anything that acknowledges a command goes out: a state seen is a state saved.
    flush_data: Callable[[], Awaitable[None]] | None = None


class Subsystem(Generic[StateT, ConfigT]):
    """One job of the node, reachable only through its topics.

    `name` is the config section, the store file and the `--only` name; `topic` (default: `name`)
    is where its state lives under the node's base, e.g. `source/radio`.
    """

    name: ClassVar[str]
    topic: ClassVar[str] = ""
    description: ClassVar[str] = ""
    State: ClassVar[type[BaseModel]]
    Config: ClassVar[type[SubsystemConfig]] = SubsystemConfig
    Data: ClassVar[type[BaseModel]] = NoData
    # The accepted /set payloads after JSON/plain-text decoding; None: the subsystem takes no /set.
    Command: ClassVar[TypeAdapter[Any] | None] = None
    # Request/response verbs: `<base>/<request_topic>/<verb>` with a JSON request (reply_to, id, params).
    requests: ClassVar[dict[str, type[BaseModel]]] = {}
    request_topic: ClassVar[str] = ""  # default: the state topic
    # Further retained topics it owns (relative to the base, e.g. `radio/favorites`), each with the
    # /set payloads it accepts (None: read-only). Published with `publish_owned`.
    owned: ClassVar[dict[str, Owned]] = {}
    # Event topics it publishes (relative to the base, e.g. `knob/event`), each with its payload model:
    # one message per event, never retained (what happened, once: not a state). `publish_event`.
    events: ClassVar[dict[str, type[BaseModel]]] = {}
    # Other topics it reads, relative to the base (wildcards allowed).
    watches: ClassVar[tuple[str, ...]] = ()
    # What else the state topic may hold (schemas/ and validation): the Absent record, unless the
    # State itself says it (sources: `state: unavailable`).
    absent_model: ClassVar[type[BaseModel] | None] = Absent
    # Names it had in earlier versions: their config section, store file and --only name still work.
    formerly: ClassVar[tuple[str, ...]] = ()
    # A state that changes many times a second (a level, a position) may go at QoS 0.
    state_qos: ClassVar[int] = STATE_QOS

    def __init__(self, ctx: Context, config: ConfigT) -> None:
        self.ctx = ctx
        self.config = config
        self.log = ctx.logger
        self.state: StateT = self.initial_state()
        self.data = self.Data.model_validate(ctx.data)
        self._published: bytes | None = None
        self._owned_published: dict[str, bytes] = {}
        # Nothing goes out before the Runner's first whole publish: setup and the retained messages
        # of `watches` shape the first state, which then goes out once, complete.
        self._live = False
        # How many times the state and each owned topic went out: the Runner echoes a command that
        # published nothing, so every accepted command is answered by its state topic.
        self.state_sends = 0
        # What this subsystem itself put on its state topic lately: an echo of one of them, arriving
        # after a newer one went out, is not someone else overwriting the state.
        self.recent_sends: collections.deque[bytes] = collections.deque(maxlen=16)
        self.owned_sends: dict[str, int] = {}

    @classmethod
    def state_topic(cls) -> str:
        return cls.topic or cls.name

    def initial_state(self) -> StateT:
        return self.State()  # type: ignore[return-value]

    @classmethod
    def absent_state(cls, status: str, reason: str) -> BaseModel:
        """What the state topic holds while the subsystem does not run: `{"status", "reason"}`.

        So a flow subscribed to it, or a UI, sees from start that it is there and why it does not run.
        A source says `unavailable` in its own state instead (the Source base).
        """
        return Absent(status=status, reason=reason)

    # Hooks a subsystem overrides --------------------------------------------------------------
    async def check_environment(self) -> None:
        """Raise SubsystemUnavailableError(reason) when what it drives is missing."""

    async def setup(self) -> None:
        """Read the world (devices, daemons) into `self.state` before the first publish."""

    async def run(self) -> None:
        """The long-running part; returns only when cancelled."""
        await asyncio.Event().wait()

    async def teardown(self) -> None:
        """Release what setup/run took (called on stop and before a restart)."""

    async def on_command(self, command: Any) -> None:
        """Apply a validated /set command; raise CommandError to refuse it."""
        raise CommandError("read_only", f"{self.state_topic()} takes no commands")

    async def on_request(self, verb: str, request: Any) -> Any:
        """Answer a request/response call; the return value is the reply's `result`."""
        raise CommandError("unknown_request", f"no request {verb!r}")

    async def on_topic(self, message: Message, path: str) -> None:
        """A message on one of `watches` (`path` is relative to the base), on the same queue as commands.

        Retained messages present at start arrive after `setup` and before the first publish. A message
        on this subsystem's own command topics never arrives here, even when a wildcard matches it.
        """

    async def on_config(self, old: ConfigT, new: ConfigT) -> bool:
        """Apply a changed config while running; return False to be restarted with it instead."""
        return True

    async def on_get(self) -> None:
        """Refresh `self.state` before a `<sub>/get` republishes it (default: it is always current)."""

    def parse_text(self, text: str) -> Any:
        """Turn a plain-text command into what `Command` validates (default: the text itself)."""
        return text

    async def on_owned_command(self, path: str, command: Any) -> None:
        """Apply a validated /set command to one of the `owned` topics."""
        raise CommandError("read_only", f"{path} takes no commands")

    def parse_owned_text(self, path: str, text: str) -> Any:
        """`parse_text` for the `owned` topics."""
        return text

    # Provided ----------------------------------------------------------------------------------
    async def set_state(self, **changes: Any) -> None:
        """Validate and merge changes into the whole state; publish it (retained) if it changed."""
        merged = {**self.state.model_dump(), **changes}
        self.state = self.State.model_validate(merged)  # type: ignore[assignment]
        await self.publish_state()

    async def publish_state(self, *, force: bool = False) -> None:
        """Publish the state if it changed; `force` also re-sends every owned topic (after a reconnect)."""
        if not self._live:
            return
        if force:
            await self._durable()
            for path, owned in list(self._owned_published.items()):
                await self.ctx.bus.publish(self.ctx.topics.of(path), owned, retain=True, qos=STATE_QOS)
        # Read after those awaits: a change made meanwhile (a watched topic) must not be overtaken
        # by the state as it was before it.
        data = self.state.model_dump_json().encode()
        if data == self._published and not force:
            return
        await self._send_state(data)

    async def echo(self) -> None:
        """Publish the state even though it did not change: the acknowledgement of a command."""
        if self._live:
            await self._send_state(self.state.model_dump_json().encode())

    async def acknowledge(self) -> None:
        """Called after an accepted `/set` that published no state: by default, echo the state.

        A subsystem that applies commands later (coalescing a burst) overrides it to echo then.
        """
        await self.echo()

    async def _durable(self) -> None:
        if self.ctx.flush_data is not None:
            await self.ctx.flush_data()

    async def _send_state(self, data: bytes) -> None:
        await self._durable()
        self._published = data
        self.recent_sends.append(data)
        self.state_sends += 1
        await self.ctx.bus.publish(
            self.ctx.topics.of(self.state_topic()), data, retain=True, qos=self.state_qos
        )

    async def publish_event(self, path: str, event: BaseModel) -> None:
        """One message on one of the `events` topics, not retained."""
        assert isinstance(event, self.events[path]), f"{path} carries {self.events[path].__name__}"
        await self.ctx.bus.publish(self.ctx.topics.of(path), event.model_dump_json().encode())

    async def publish_owned(self, path: str, model: BaseModel, *, force: bool = False) -> None:
        """Publish one of the `owned` topics (retained) if it changed."""
        assert isinstance(model, self.owned[path].state), f"{path} holds {self.owned[path].state.__name__}"
        data = model.model_dump_json().encode()
        if data == self._owned_published.get(path) and not force:
            return
        self._owned_published[path] = data
        if not self._live:
            return  # sent with the first whole publish
        await self._durable()
        self.owned_sends[path] = self.owned_sends.get(path, 0) + 1
        await self.ctx.bus.publish(self.ctx.topics.of(path), data, retain=True, qos=STATE_QOS)

    async def echo_owned(self, path: str) -> None:
        """Publish an owned topic again as it is: the acknowledgement of a command that changed nothing."""
        data = self._owned_published.get(path)
        if data is not None and self._live:
            await self._durable()
            self.owned_sends[path] = self.owned_sends.get(path, 0) + 1
            await self.ctx.bus.publish(self.ctx.topics.of(path), data, retain=True)

    def save_data(self) -> None:
        """Persist `self.data` atomically with the config overrides."""
        self.ctx.save_data(self.data)
