"""What a subsystem author reads: the Subsystem base class, its hooks, its context and its statuses."""

# The Runner (node/framework/runner.py) serves the topics around it: a subsystem only fills in hooks.

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter

from node.framework.bus import Bus, Message
from node.framework.errors import CommandError
from node.framework.topics import Topics

__all__ = [
    "EVENT_QOS",
    "STATE_QOS",
    "Context",
    "NoData",
    "NodeFacts",
    "Owned",
    "SourceSpec",
    "Status",
    "StatusBoard",
    "Subsystem",
    "SubsystemConfig",
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


class SubsystemConfig(BaseModel):
    """Every subsystem's config has at least `enabled`; subclasses add their own keys."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


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
    # Other topics it reads, relative to the base (wildcards allowed).
    watches: ClassVar[tuple[str, ...]] = ()
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

    @classmethod
    def state_topic(cls) -> str:
        return cls.topic or cls.name

    def initial_state(self) -> StateT:
        return self.State()  # type: ignore[return-value]

    @classmethod
    def absent_state(cls, reason: str) -> BaseModel | None:
        """What the state topic says while the subsystem does not run (None: it keeps its last state).

        A source says `unavailable`, so nobody takes a `playing` retained before a restart for the truth.
        """
        return None

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
            for path, owned in list(self._owned_published.items()):
                await self.ctx.bus.publish(self.ctx.topics.of(path), owned, retain=True, qos=STATE_QOS)
        # Read after those awaits: a change made meanwhile (a watched topic) must not be overtaken
        # by the state as it was before it.
        data = self.state.model_dump_json().encode()
        if data == self._published and not force:
            return
        self._published = data
        topic = self.ctx.topics.of(self.state_topic())
        await self.ctx.bus.publish(topic, data, retain=True, qos=self.state_qos)

    async def publish_owned(self, path: str, model: BaseModel, *, force: bool = False) -> None:
        """Publish one of the `owned` topics (retained) if it changed."""
        assert isinstance(model, self.owned[path].state), f"{path} holds {self.owned[path].state.__name__}"
        data = model.model_dump_json().encode()
        if data == self._owned_published.get(path) and not force:
            return
        self._owned_published[path] = data
        if not self._live:
            return  # sent with the first whole publish
        await self.ctx.bus.publish(self.ctx.topics.of(path), data, retain=True, qos=STATE_QOS)

    def save_data(self) -> None:
        """Persist `self.data` atomically with the config overrides."""
        self.ctx.save_data(self.data)
