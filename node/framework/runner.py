"""The supervisor: one Runner per subsystem runs its task with backoff and serves its topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from node.framework.backoff import Backoff
from node.framework.bus import Bus, Message
from node.framework.errors import CommandError, SubsystemUnavailableError, format_validation, unknown_key
from node.framework.payloads import ErrorPayload, Reply, Request, decode_command, decode_object, echo
from node.framework.store import Store, StoredFile
from node.framework.subsystem import (
    EVENT_QOS,
    STATE_QOS,
    Context,
    NodeFacts,
    Status,
    Subsystem,
    SubsystemConfig,
    local_only_keys,
)
from node.framework.topics import Topics

STOP_TIMEOUT = 5.0
# Statuses in which the state topic holds the absent record, not a state.
ABSENT = frozenset({Status.DISABLED, Status.UNAVAILABLE, Status.CRASHED, Status.CONFIG_ERROR})


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
        self._config_problem = ""
        self._absent_payload: bytes | None = None  # what the state topic says while it does not run
        self._side_tasks: set[asyncio.Task[None]] = set()
        # Watched messages that arrive while the subsystem sets up; None once it runs.
        self._priming: list[Message] | None = None
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
        # Values of the wrong type ("enabled": "maybe") make the file unusable too: set aside and
        # reported like a corrupt one, instead of leaving the subsystem down without a word.
        base = self.file_config if self._file_ok() else {}
        try:
            self.cls.Config.model_validate(merge(base, stored.config))
        except ValidationError as exc:
            raise ValueError(f"invalid config values: {format_validation(exc, self.cls.Config)}") from None
        self.cls.Data.model_validate(stored.data)

    def _effective(self, overrides: dict[str, Any]) -> SubsystemConfig:
        return self.cls.Config.model_validate(merge(self.file_config, overrides))

    def load(self) -> None:
        """Read the stored file and build the effective config (defaults < config file < stored)."""
        for old in self.cls.formerly:
            if self.store.adopt(old, self.name):
                self.log.info("%s: took over %s.json from its former name", self.name, old)
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
            detail = format_validation(exc, self.cls.Config)
            self._set_status(Status.CONFIG_ERROR, detail)
            problem = f"config file section [{self.name}] is invalid: {detail}"
            self._config_problem = problem
            self.node.board.notice(f"{self.name}: {problem}")

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
            # Its own state topic: overwritten or cleared by another client, it is said again.
            self.t_state,
        ):
            await self.bus.subscribe(topic, self._enqueue)
        for problem in self._load_problems:
            await self.report(
                self.topics.of(f"{self.cls.state_topic()}/config"), b"", "corrupt_store", problem
            )
        if self._config_problem:
            await self.report(self.t_config, b"", "config_error", self._config_problem)
        if self.config is not None:
            await self._publish_config()
            self._apply_enabled()
        else:
            await self._publish_absent(Status.CONFIG_ERROR, self.detail)

    def _apply_enabled(self) -> None:
        assert self.config is not None
        if self.config.enabled and self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-run")
        elif not self.config.enabled:
            self._set_status(Status.DISABLED)
            self._absent(Status.DISABLED, "disabled")

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
        try:
            await self.store.flush(self.name)  # what teardown saved
        except OSError as exc:
            self.log.error("could not save %s: %s", self.store.path(self.name), exc)
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
                flush_data=self._flush_data,
            )
            started = time.monotonic()
            instance = self.cls(ctx, self.config)
            watching: list[str] = []
            try:
                try:
                    await instance.check_environment()
                except SubsystemUnavailableError as exc:
                    self._set_status(Status.UNAVAILABLE, str(exc))
                    await self._publish_absent(Status.UNAVAILABLE, str(exc))
                    # Programs get installed and devices plugged in: look again, less and less often.
                    await asyncio.sleep(self.backoff.next(0.0))
                    continue
                # Watched topics are subscribed before setup, so their retained messages are queued
                # (the in-process bus hands them over during subscribe) and read before the first publish.
                self._priming = []
                for path in self.cls.watches:
                    topic_filter = self.topics.of(path)
                    await self.bus.subscribe(topic_filter, self._enqueue_watched)
                    watching.append(topic_filter)
                await instance.setup()
                while self._priming:
                    early, self._priming = self._priming, []
                    for message in early:
                        await self._on_watched(instance, message)
                self._priming = None
                self.instance = instance
                instance._live = True
                await instance.publish_state(force=True)
                self._set_status(Status.RUNNING)
                await instance.run()
                raise RuntimeError("run() returned")  # noqa: TRY301 - one path for every way run() ends
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("%s crashed", self.name)
                delay = self.backoff.next(time.monotonic() - started)
                self._set_status(Status.CRASHED, f"{type(exc).__name__}: {exc}; restart in {delay:.1f} s")
                await self._publish_absent(Status.CRASHED, f"crashed: {exc}")
                await self.report(self.t_state, b"", "crashed", f"{self.name} crashed: {exc}")
                await asyncio.sleep(delay)  # restart backoff
            finally:
                self.instance = None
                self._priming = None
                for topic_filter in watching:
                    await self.bus.unsubscribe(topic_filter, self._enqueue_watched)
                with contextlib.suppress(Exception):
                    await instance.teardown()

    async def _publish_absent(self, status: Status, reason: str) -> None:
        state = self.cls.absent_state(status.value, reason[:2000])
        self._absent_payload = state.model_dump_json().encode()
        await self.bus.publish(self.t_state, self._absent_payload, retain=True, qos=self.cls.state_qos)

    async def _defend(self, message: Message) -> None:
        """The node's state topics hold the node's truth: a foreign value or a clearing is undone.

        On a broker whose ACL lets other clients publish there (an external one), a spoofed
        retained `volume` would otherwise be what every new subscriber sees.
        """
        instance = self.instance
        if instance is not None and self.status is Status.RUNNING:
            if instance._published is None or message.payload in instance.recent_sends:
                return
            self.log.warning("%s: another client overwrote %s; said again", self.name, self.t_state)
            await instance.echo()
        elif self.status in ABSENT and self._absent_payload not in (None, message.payload):
            self.log.warning("%s: another client overwrote %s; said again", self.name, self.t_state)
            await self.bus.publish(self.t_state, self._absent_payload or b"", retain=True)

    def _absent(self, status: Status, reason: str) -> None:
        task = asyncio.create_task(self._publish_absent(status, reason))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    # Messages ------------------------------------------------------------------------------------
    def _enqueue(self, message: Message) -> None:
        self._inbox.put_nowait(message)

    def _enqueue_watched(self, message: Message) -> None:
        # Handed over at delivery, not through the inbox: the in-process bus delivers the retained
        # messages during subscribe, and a setup() that never yields must still see them first.
        if self._is_command(message.topic):
            return  # a watch that matches one of its own command topics: the command path has it
        if self._priming is not None:
            self._priming.append(message)
        else:
            self._inbox.put_nowait(message)

    def _is_command(self, topic: str) -> bool:
        return (
            topic in (self.t_set, self.t_get, self.t_config_set, self.t_config_get, self.t_state)
            or topic in self.t_requests
            or topic in self.t_owned_set
            or topic in self.t_owned_get
        )

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
        if topic == self.t_state:
            await self._defend(message)
            return
        if not self._is_command(topic):
            if self._priming is not None:
                self._priming.append(message)
            elif self.instance is not None:
                await self._on_watched(self.instance, message)
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

    async def _on_watched(self, instance: Subsystem[Any, Any], message: Message) -> None:
        try:
            await instance.on_topic(message, message.topic[len(self.topics.base) + 1 :])
        except CommandError as exc:  # nobody sent this to it: a log line, not an error record
            self.log.warning("%s: %s on %s", self.name, exc.message, message.topic)

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
            # Strict at the edge: what the published schema refuses ("5" for an integer, true for a
            # number, 1e-400 for a boolean) is refused here too, never coerced.
            command = self.cls.Command.validate_python(value, strict=True)
        except ValidationError as exc:
            raise CommandError("invalid_payload", format_validation(exc)) from exc
        sends = instance.state_sends
        await instance.on_command(command)
        if instance.state_sends == sends:
            # Accepted but nothing changed (or not yet): the echo is the acknowledgement.
            await instance.acknowledge()

    async def _owned_command(self, path: str, payload: bytes) -> None:
        adapter = self.cls.owned[path].command
        if adapter is None:
            raise CommandError("read_only", f"{path} takes no commands")
        value = decode_command(payload)
        instance = self._running()
        if isinstance(value, str):
            value = instance.parse_owned_text(path, value)
        try:
            command = adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            raise CommandError("invalid_payload", format_validation(exc)) from exc
        sends = instance.owned_sends.get(path, 0)
        await instance.on_owned_command(path, command)
        if instance.owned_sends.get(path, 0) == sends:
            await instance.echo_owned(path)

    async def _get(self, payload: bytes) -> None:
        request: Request | None = None
        if payload.strip():
            with contextlib.suppress(CommandError, ValidationError):
                request = Request.model_validate(decode_object(payload))
        try:
            instance = self._running()
        except CommandError as exc:
            if request is not None:
                # Whoever asked waits on reply_to: it gets the refusal there too, not only on error.
                reply = Reply(id=request.id, ok=False, error=exc.message, code=exc.code)
                await self.bus.publish(request.reply_to, reply.model_dump_json().encode(), qos=EVENT_QOS)
            raise
        await instance.on_get()
        await instance.publish_state(force=True)
        if request is not None:
            reply = Reply(id=request.id, ok=True, result=instance.state.model_dump(mode="json"))
            await self.bus.publish(request.reply_to, reply.model_dump_json().encode(), qos=EVENT_QOS)

    async def _request(self, verb: str, payload: bytes) -> None:
        try:
            envelope = Request.model_validate(decode_object(payload))
        except ValidationError as exc:
            raise CommandError("invalid_request", format_validation(exc)) from exc
        try:
            instance = self._running()
            params = {k: v for k, v in envelope.model_dump().items() if k not in ("reply_to", "id")}
            try:
                request = self.cls.requests[verb].model_validate(params, strict=True)
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
        data = reply.model_dump_json(exclude_none=True).encode()
        await self.bus.publish(envelope.reply_to, data, qos=EVENT_QOS)

    async def _publish_config(self, *, force: bool = False) -> None:
        if self.config is None:
            raise CommandError("config_error", f"{self.name} config is invalid: {self.detail}")
        data = self.config.model_dump_json().encode()
        await self.bus.publish(self.t_config, data, retain=True, qos=STATE_QOS)

    async def _config_set(self, payload: bytes) -> None:
        update = decode_object(payload)
        unknown = sorted(k for k, v in update.items() if v is None and k not in self.cls.Config.model_fields)
        if unknown:
            # `null` resets a key, and would make an unknown one vanish without a word: named here.
            known = list(self.cls.Config.model_fields)
            raise CommandError("invalid_config", "; ".join(f"{k}: {unknown_key(k, known)}" for k in unknown))
        local = sorted(set(update) & local_only_keys(self.cls.Config))
        if local:
            raise CommandError(
                "local_only", f"{', '.join(local)}: set only in the node's config file, not over MQTT"
            )
        overrides = merge(self.stored.config, update)
        try:
            # The update itself is checked strictly (the values in force are JSON-native already);
            # the file's and defaults' keys then merge as before.
            current = self.config.model_dump(mode="json") if self.config is not None else {}
            self.cls.Config.model_validate(merge(current, update), strict=True)
            new = self._effective(overrides)
        except ValidationError as exc:
            raise CommandError("invalid_config", format_validation(exc, self.cls.Config)) from exc
        # Keep only what differs from the defaults and the config file, so those still apply.
        base = self.cls.Config.model_validate(self.file_config).model_dump() if self._file_ok() else {}
        overrides = {k: v for k, v in new.model_dump().items() if base.get(k, object()) != v}
        old = self.config
        self.stored = self.stored.model_copy(update={"config": overrides})
        self.store.stage(self.name, self.stored)
        await self.store.flush(self.name)
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
            self._absent(Status.DISABLED, "disabled")
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
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script, a test of the subsystem alone): written now
            self.store.save(self.name, self.stored)
            return
        self.store.stage(self.name, self.stored)
        # Written soon whatever happens next; anything acknowledging the change awaits it first.
        task = loop.create_task(self._flush_quietly(), name=f"{self.name}-save")
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _flush_data(self) -> None:
        await self.store.flush(self.name)

    async def _flush_quietly(self) -> None:
        try:
            await self.store.flush(self.name)
        except OSError as exc:
            self.log.error("could not save %s: %s", self.store.path(self.name), exc)

    async def report(self, topic: str, payload: bytes, code: str, message: str) -> None:
        """Answer on `<base>/error`; never raises (the error path must not fail)."""
        error = ErrorPayload(topic=topic, payload=echo(payload), error=message, code=code)
        self.log.info("error %s on %s (%r): %s", code, topic, payload[:40], message)
        try:
            await self.bus.publish(self.topics.error, error.model_dump_json().encode(), qos=EVENT_QOS)
        except Exception:
            self.log.exception("could not publish an error")
