"""The Subsystem base class, its statuses, and the runner that supervises one subsystem and its topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from node.framework.bus import Bus, Message
from node.framework.errors import CommandError, SubsystemUnavailableError, format_validation
from node.framework.payloads import ErrorPayload, Reply, Request, decode_command, decode_object, echo
from node.framework.store import Store, StoredFile
from node.framework.topics import Topics

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


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

    def __init__(self, ctx: Context, config: ConfigT) -> None:
        self.ctx = ctx
        self.config = config
        self.log = ctx.logger
        self.state: StateT = self.initial_state()
        self.data = self.Data.model_validate(ctx.data)
        self._published: bytes | None = None
        self._owned_published: dict[str, bytes] = {}

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
        """A message on one of `watches` (`path` is relative to the base)."""

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
        data = self.state.model_dump_json().encode()
        if force:
            for path, owned in list(self._owned_published.items()):
                await self.ctx.bus.publish(self.ctx.topics.of(path), owned, retain=True)
        if data == self._published and not force:
            return
        self._published = data
        await self.ctx.bus.publish(self.ctx.topics.of(self.state_topic()), data, retain=True)

    async def publish_owned(self, path: str, model: BaseModel, *, force: bool = False) -> None:
        """Publish one of the `owned` topics (retained) if it changed."""
        assert isinstance(model, self.owned[path].state), f"{path} holds {self.owned[path].state.__name__}"
        data = model.model_dump_json().encode()
        if data == self._owned_published.get(path) and not force:
            return
        self._owned_published[path] = data
        await self.ctx.bus.publish(self.ctx.topics.of(path), data, retain=True)

    def save_data(self) -> None:
        """Persist `self.data` atomically with the config overrides."""
        self.ctx.save_data(self.data)


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a None in `update` removes the key (back to the default)."""
    out = dict(base)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Backoff:
    """Restart delays: doubling from `first` to `cap`, reset after a run that lasted `healthy` seconds."""

    first: float = 0.5
    cap: float = 30.0
    healthy: float = 60.0
    current: float = 0.0

    def next(self, ran_for: float) -> float:
        if ran_for >= self.healthy or self.current == 0.0:
            self.current = self.first
        else:
            self.current = min(self.current * 2, self.cap)
        return self.current


class Runner:
    """Supervises one subsystem: its config, its topics, its task, its restarts.

    The runner exists whatever the subsystem's status, so config topics always work (a disabled
    subsystem is enabled through `<sub>/config/set`) and commands to a stopped one get an error.
    """

    def __init__(
        self,
        cls: type[Subsystem[Any, Any]],
        *,
        topics: Topics,
        bus: Bus,
        store: Store,
        node: NodeFacts,
        file_config: dict[str, Any],
        backoff: Backoff | None = None,
    ) -> None:
        self.cls = cls
        self.name = cls.name
        self.topics = topics
        self.bus = bus
        self.store = store
        self.node = node
        self.file_config = file_config
        self.backoff = backoff or Backoff()
        self.log = logging.getLogger(f"node.{self.name}")
        self.config: SubsystemConfig | None = None
        self.stored = StoredFile()
        self.instance: Subsystem[Any, Any] | None = None
        self.status = Status.STARTING
        self.detail = ""
        self.ready = asyncio.Event()  # first status other than STARTING, initial state published
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._load_problems: list[str] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        base = topics.of(cls.state_topic())
        self.t_state = base
        self.t_set = f"{base}/set"
        self.t_get = f"{base}/get"
        self.t_config = f"{base}/config"
        self.t_config_set = f"{base}/config/set"
        self.t_config_get = f"{base}/config/get"
        request_base = topics.of(cls.request_topic) if cls.request_topic else base
        self.t_requests = {f"{request_base}/{verb}": verb for verb in cls.requests}
        self.t_owned_set = {topics.of(f"{path}/set"): path for path in cls.owned}
        self.t_owned_get = {topics.of(f"{path}/get"): path for path in cls.owned}

    # Status --------------------------------------------------------------------------------------
    def _set_status(self, status: Status, detail: str = "") -> None:
        if (status, detail) != (self.status, self.detail):
            level = logging.WARNING if status in (Status.CRASHED, Status.CONFIG_ERROR) else logging.INFO
            self.log.log(level, "%s: %s%s", self.name, status.value, f" ({detail})" if detail else "")
        self.status, self.detail = status, detail
        self.node.board.set(self.name, status, detail)
        if status is not Status.STARTING:
            self.ready.set()

    # Config --------------------------------------------------------------------------------------
    def _validate_stored(self, stored: StoredFile) -> None:
        # Overrides must fit the model on their own (a file from another version may not).
        unknown = set(stored.config) - set(self.cls.Config.model_fields)
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}")
        self.cls.Data.model_validate(stored.data)

    def _effective(self, overrides: dict[str, Any]) -> SubsystemConfig:
        return self.cls.Config.model_validate(merge(self.file_config, overrides))

    def load(self) -> None:
        """Read the stored file and build the effective config (defaults < config file < stored)."""
        result = self.store.load(self.name, self._validate_stored)
        self.stored = result.file
        self._load_problems = result.problems
        for problem in result.problems:
            self.log.error("%s store: %s", self.name, problem)
            self.node.board.notice(f"{self.name}: {problem}")
        try:
            self.config = self._effective(self.stored.config)
        except ValidationError as exc:
            self.config = None
            self._set_status(Status.CONFIG_ERROR, format_validation(exc, self.cls.Config))

    # Life ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.load()
        self._consumer = asyncio.create_task(self._consume(), name=f"{self.name}-inbox")
        for topic in (
            self.t_set,
            self.t_get,
            self.t_config_set,
            self.t_config_get,
            *self.t_requests,
            *self.t_owned_set,
            *self.t_owned_get,
        ):
            await self.bus.subscribe(topic, self._enqueue)
        for problem in self._load_problems:
            await self.report(
                self.topics.of(f"{self.cls.state_topic()}/config"), b"", "corrupt_store", problem
            )
        if self.config is not None:
            await self._publish_config()
            self._apply_enabled()

    def _apply_enabled(self) -> None:
        assert self.config is not None
        if self.config.enabled and self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-run")
        elif not self.config.enabled:
            self._set_status(Status.DISABLED)
            self._absent("disabled")

    async def republish(self) -> None:
        """After a reconnection to a broker that may have lost its retained store."""
        if self.config is not None:
            await self._publish_config()
        if self.instance is not None:
            await self.instance.publish_state(force=True)

    async def stop(self) -> None:
        await self._stop_task()
        for task in list(self._side_tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 1.0)
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT)
            if not done:
                # A subsystem that swallows its cancellation must not hang the node's shutdown.
                self.log.error("%s did not stop within %.0f s; abandoned", self.name, STOP_TIMEOUT)
            elif not task.cancelled() and task.exception() is not None:
                self.log.error("%s failed while stopping: %s", self.name, task.exception())

    async def _supervise(self) -> None:
        while True:
            assert self.config is not None
            if self.status is not Status.UNAVAILABLE:
                # Looking again for what is missing is not a new start: no status flapping, no log.
                self._set_status(Status.STARTING)
            data = self.stored.data
            ctx = Context(
                topics=self.topics,
                bus=self.bus,
                node=self.node,
                logger=self.log,
                report=self.report,
                save_data=self._save_data,
                data=data,
            )
            started = time.monotonic()
            instance = self.cls(ctx, self.config)
            watching: list[str] = []
            try:
                try:
                    await instance.check_environment()
                except SubsystemUnavailableError as exc:
                    self._set_status(Status.UNAVAILABLE, str(exc))
                    await self._publish_absent(str(exc))
                    # Programs get installed and devices plugged in: look again, less and less often.
                    await asyncio.sleep(self.backoff.next(0.0))
                    continue
                await instance.setup()
                self.instance = instance
                await instance.publish_state(force=True)
                for path in self.cls.watches:
                    topic_filter = self.topics.of(path)
                    await self.bus.subscribe(topic_filter, self._enqueue)
                    watching.append(topic_filter)
                self._set_status(Status.RUNNING)
                await instance.run()
                raise RuntimeError("run() returned")  # noqa: TRY301 - one path for every way run() ends
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("%s crashed", self.name)
                delay = self.backoff.next(time.monotonic() - started)
                self._set_status(Status.CRASHED, f"{type(exc).__name__}: {exc}; restart in {delay:.1f} s")
                await self._publish_absent(f"crashed: {exc}")
                await self.report(self.t_state, b"", "crashed", f"{self.name} crashed: {exc}")
                await asyncio.sleep(delay)  # restart backoff
            finally:
                self.instance = None
                for topic_filter in watching:
                    await self.bus.unsubscribe(topic_filter, self._enqueue)
                with contextlib.suppress(Exception):
                    await instance.teardown()

    async def _publish_absent(self, reason: str) -> None:
        state = self.cls.absent_state(reason)
        if state is not None:
            await self.bus.publish(self.t_state, state.model_dump_json().encode(), retain=True)

    def _absent(self, reason: str) -> None:
        if self.cls.absent_state(reason) is not None:
            task = asyncio.create_task(self._publish_absent(reason))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    # Messages ------------------------------------------------------------------------------------
    def _enqueue(self, message: Message) -> None:
        self._inbox.put_nowait(message)

    async def _consume(self) -> None:
        while True:
            message = await self._inbox.get()
            try:
                await self._handle(message)
            except CommandError as exc:
                await self.report(message.topic, message.payload, exc.code, exc.message)
            except Exception as exc:
                self.log.exception("%s: handling %s failed", self.name, message.topic)
                await self.report(
                    message.topic, message.payload, "internal_error", f"{type(exc).__name__}: {exc}"
                )

    async def _handle(self, message: Message) -> None:
        topic = message.topic
        is_command = (
            topic in (self.t_set, self.t_get, self.t_config_set, self.t_config_get)
            or topic in self.t_requests
            or topic in self.t_owned_set
            or topic in self.t_owned_get
        )
        if not is_command:
            if self.instance is not None:
                await self.instance.on_topic(message, topic[len(self.topics.base) + 1 :])
            return
        if message.retain:
            # A retained command would be replayed at every start ("ghost switching"): never act on it.
            raise CommandError("retained_command", "commands must not be retained; ignored")
        if topic == self.t_config_set:
            await self._config_set(message.payload)
        elif topic == self.t_config_get:
            await self._publish_config(force=True)
        elif topic == self.t_get:
            await self._get(message.payload)
        elif topic == self.t_set:
            await self._command(message.payload)
        elif topic in self.t_owned_set:
            await self._owned_command(self.t_owned_set[topic], message.payload)
        elif topic in self.t_owned_get:
            await self._running().publish_state(force=True)
        else:
            await self._request(self.t_requests[topic], message.payload)

    def _running(self) -> Subsystem[Any, Any]:
        if self.instance is None or self.status is not Status.RUNNING:
            code = "disabled" if self.status is Status.DISABLED else "unavailable"
            detail = f": {self.detail}" if self.detail else ""
            raise CommandError(code, f"{self.name} is {self.status.value}{detail}")
        return self.instance

    async def _command(self, payload: bytes) -> None:
        if self.cls.Command is None:
            raise CommandError("read_only", f"{self.cls.state_topic()} takes no commands")
        value = decode_command(payload)
        instance = self._running()
        if isinstance(value, str):
            value = instance.parse_text(value)
        try:
            command = self.cls.Command.validate_python(value)
        except ValidationError as exc:
            raise CommandError("invalid_payload", format_validation(exc)) from exc
        await instance.on_command(command)

    async def _owned_command(self, path: str, payload: bytes) -> None:
        adapter = self.cls.owned[path].command
        if adapter is None:
            raise CommandError("read_only", f"{path} takes no commands")
        value = decode_command(payload)
        instance = self._running()
        if isinstance(value, str):
            value = instance.parse_owned_text(path, value)
        try:
            command = adapter.validate_python(value)
        except ValidationError as exc:
            raise CommandError("invalid_payload", format_validation(exc)) from exc
        await instance.on_owned_command(path, command)

    async def _get(self, payload: bytes) -> None:
        instance = self._running()
        await instance.on_get()
        await instance.publish_state(force=True)
        if payload.strip():
            with contextlib.suppress(CommandError, ValidationError):
                request = Request.model_validate(decode_object(payload))
                reply = Reply(id=request.id, ok=True, result=instance.state.model_dump(mode="json"))
                await self.bus.publish(request.reply_to, reply.model_dump_json().encode())

    async def _request(self, verb: str, payload: bytes) -> None:
        try:
            envelope = Request.model_validate(decode_object(payload))
        except ValidationError as exc:
            raise CommandError("invalid_request", format_validation(exc)) from exc
        try:
            instance = self._running()
            params = {k: v for k, v in envelope.model_dump().items() if k not in ("reply_to", "id")}
            try:
                request = self.cls.requests[verb].model_validate(params)
            except ValidationError as exc:
                raise CommandError(
                    "invalid_payload", format_validation(exc, self.cls.requests[verb])
                ) from exc
            result = await instance.on_request(verb, request)
            if isinstance(result, BaseModel):
                result = result.model_dump(mode="json")
            reply = Reply(id=envelope.id, ok=True, result=result)
        except CommandError as exc:
            reply = Reply(id=envelope.id, ok=False, error=exc.message, code=exc.code)
        await self.bus.publish(envelope.reply_to, reply.model_dump_json(exclude_none=True).encode())

    async def _publish_config(self, *, force: bool = False) -> None:
        if self.config is None:
            raise CommandError("config_error", f"{self.name} config is invalid: {self.detail}")
        await self.bus.publish(self.t_config, self.config.model_dump_json().encode(), retain=True)

    async def _config_set(self, payload: bytes) -> None:
        update = decode_object(payload)
        overrides = merge(self.stored.config, update)
        try:
            new = self._effective(overrides)
        except ValidationError as exc:
            raise CommandError("invalid_config", format_validation(exc, self.cls.Config)) from exc
        # Keep only what differs from the defaults and the config file, so those still apply.
        base = self.cls.Config.model_validate(self.file_config).model_dump() if self._file_ok() else {}
        overrides = {k: v for k, v in new.model_dump().items() if base.get(k, object()) != v}
        old = self.config
        self.stored = self.stored.model_copy(update={"config": overrides})
        self.store.save(self.name, self.stored)
        self.config = new
        await self._publish_config()
        await self._reconfigure(old, new)

    def _file_ok(self) -> bool:
        try:
            self.cls.Config.model_validate(self.file_config)
        except ValidationError:
            return False
        return True

    async def _reconfigure(self, old: SubsystemConfig | None, new: SubsystemConfig) -> None:
        if not new.enabled:
            await self._stop_task()
            self._set_status(Status.DISABLED)
            self._absent("disabled")
            return
        instance = self.instance
        if self._task is not None and instance is not None and old is not None:
            instance.config = new
            if await instance.on_config(old, new):
                return
        await self._stop_task()
        self.backoff.current = 0.0
        self._apply_enabled()

    def _save_data(self, data: BaseModel) -> None:
        self.stored = self.stored.model_copy(update={"data": data.model_dump(mode="json")})
        self.store.save(self.name, self.stored)

    async def report(self, topic: str, payload: bytes, code: str, message: str) -> None:
        """Answer on `<base>/error`; never raises (the error path must not fail)."""
        error = ErrorPayload(topic=topic, payload=echo(payload), error=message, code=code)
        self.log.info("error %s on %s (%r): %s", code, topic, payload[:40], message)
        try:
            await self.bus.publish(self.topics.error, error.model_dump_json().encode())
        except Exception:
            self.log.exception("could not publish an error")
