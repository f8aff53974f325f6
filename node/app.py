"""The node process: start the broker (or connect to one), the HTTP port, every subsystem; stop in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from broker import BrokerSettings, EmbeddedBroker, InboundMessage, LimitSettings
from broker.auth import AuthPolicy, Login, Refusal, is_loopback
from node import __version__, registry
from node.config import NodeConfig, broker_url
from node.framework.backoff import Backoff
from node.framework.bus import Bus, LocalBus, Message
from node.framework.payloads import ErrorPayload, echo
from node.framework.runner import Runner
from node.framework.store import Store
from node.framework.subsystem import EVENT_QOS, NodeFacts, StatusBoard, Subsystem
from node.framework.topics import Topics
from node.framework.users import Users
from node.http.server import WebServer, tcp_proxy

logger = logging.getLogger(__name__)

READY_TIMEOUT = 2.0
ALSA_ENV = "ALSA_CONFIG_PATH"
ALSA_BASE = "/usr/share/alsa/alsa.conf"  # must stay first: it defines the plug-ins every config uses
SYSTEM_ASOUND = Path("/etc/asound.conf")
# How often the users file is looked at (a stat): `milo user remove` cuts a user off within this.
USERS_WATCH_S = 1.0


class Node:
    """One node: `await node.start()`, then `await node.stop()`."""

    def __init__(
        self,
        config: NodeConfig,
        subsystems: Sequence[type[Subsystem[Any, Any]]] = registry.ALL,
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.topics = Topics(config.node_id)
        selected = [
            cls
            for cls in subsystems
            if (not config.only or cls.name in config.only) and cls.name not in config.skip
        ]
        self.classes = selected
        # Every source, also those another process runs (--only): the router defines all their PCMs.
        self.sources = registry.with_sources(subsystems)
        self.backoff = backoff
        self.board = StatusBoard()
        self.broker: EmbeddedBroker | None = None
        self.bus: Bus | None = None
        self.web: WebServer | None = None
        self.runners: list[Runner] = []
        self.started = time.time()
        self._saved_alsa_env: str | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._alsa_env_set = False
        self._users_watch: asyncio.Task[None] | None = None
        self.users = Users(config.data_dir)
        self.policy = AuthPolicy(
            verify=self._login,
            has_users=self.users.any,
            lookup=self._lookup,
            request_paths=frozenset(registry.request_paths((*registry.ALL, *subsystems))),
            own_base=f"{self.topics.base}/",
            anonymous=config.auth.anonymous,
            anonymous_lan_role=config.auth.anonymous_lan_role,
            loopback_role=config.auth.loopback_role,
            on_refused=self._refused,
        )

    @property
    def mqtt_port(self) -> int | None:
        return self.broker.port if self.broker else None

    @property
    def http_port(self) -> int | None:
        return self.web.port if self.web else None

    @property
    def mqtt_tls_port(self) -> int | None:
        return self.broker.tls_port if self.broker else None

    @property
    def https_port(self) -> int | None:
        return self.web.tls_port if self.web else None

    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.users.any()  # read once now: a damaged users file is said in `info`, not only in the log
        if self.users.problem:
            self.board.notice(f"users: {self.users.problem}; nobody can log in until it is fixed")
        if cfg.broker:
            # aiomqtt and paho cost ~4 MB of resident memory: only a node on an external broker pays it.
            from node.framework.mqttbus import MqttBus  # noqa: PLC0415

            url = broker_url(cfg)
            assert url is not None
            will_topic, will_payload = self._will()
            bus: Bus = MqttBus(
                url, will_topic=will_topic, will_payload=will_payload, client_prefix=f"milo-{cfg.node_id}"
            )
            await bus.start()
            on_mqtt = tcp_proxy(url.host, url.port)
        else:
            self.broker = EmbeddedBroker(
                BrokerSettings(
                    retained_path=cfg.data_dir / "broker" / "retained.json",
                    host=cfg.bind,
                    port=cfg.mqtt_port,
                    max_packet=cfg.mqtt.max_payload + 1024,  # room for the topic and headers
                    flush_delay=cfg.mqtt.retained_flush_s,
                    keepalive_grace=cfg.mqtt.keepalive_grace_s,
                    force_retained={self.topics.status: "offline"},
                    policy=self.policy,
                    **self._broker_tls(),
                    limits=LimitSettings(
                        connect_timeout_s=cfg.mqtt.connect_timeout_s,
                        max_connections=cfg.mqtt.max_connections,
                        max_subscriptions=cfg.mqtt.max_subscriptions,
                        rate=cfg.mqtt.rate,
                        burst=cfg.mqtt.burst,
                        rate_grace_s=cfg.mqtt.rate_grace_s,
                    ),
                    on_violation=self._on_limit,
                )
            )
            await self.broker.start()
            self._users_watch = asyncio.create_task(self._watch_users(self.broker))
            local = LocalBus(self.broker)
            self.broker.set_listener(lambda m: local.deliver(m.topic, m.payload, m.retain))
            bus = local
            on_mqtt = self.broker.ws_connected
        self.bus = bus
        for problem in self.broker.problems if self.broker is not None else []:
            # Like a subsystem's corrupt file: in info's notices, and an error record now.
            self.board.notice(f"broker: {problem}")
            error = ErrorPayload(topic="", payload="", error=problem, code="corrupt_store")
            await bus.publish(self.topics.error, error.model_dump_json().encode(), qos=EVENT_QOS)
        self.web = WebServer(
            cfg.web_root,
            on_mqtt,
            host=cfg.bind,
            port=cfg.http_port,
            max_message=cfg.mqtt.max_payload + 1024,
            data_dir=cfg.data_dir,
            allowed_origins=tuple(cfg.allowed_origins),
            authorize=self._http_role,
            tls=(cfg.tls.bind or cfg.bind, cfg.tls.http_port, cfg.tls.cert, cfg.tls.key) if cfg.tls else None,
            node_id=cfg.node_id,
        )
        await self.web.start()
        facts = NodeFacts(
            node_id=cfg.node_id,
            version=__version__,
            started=self.started,
            broker=bus.description,
            http_port=self.http_port,
            mqtt_port=self.mqtt_port,
            board=self.board,
            data_dir=cfg.data_dir,
            alsa_config=self._alsa_config(),
            sources=self.sources,
        )
        store = Store(cfg.data_dir)
        for cls in self.classes:
            runner = Runner(
                cls,
                topics=self.topics,
                bus=bus,
                store=store,
                node=facts,
                file_config=cfg.subsystems.get(cls.name, {}),
                backoff=Backoff(**vars(self.backoff)) if self.backoff else None,
            )
            self.runners.append(runner)
            await runner.start()
            # In registry order, each set up before the next (the router writes asound.conf before
            # the equalizer and volume open ALSA); a slow one only delays, never blocks, the rest.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READY_TIMEOUT):
                    await runner.ready.wait()
        if not cfg.join:
            await bus.publish(self.topics.status, b"online", retain=True)
            # Someone else's `offline` (or an empty retained message) would stay until a restart.
            await bus.subscribe(self.topics.status, self._on_status)
        bus.on_connect(self._republish)
        self._log_start()
        # Start-up objects live as long as the process: keep them out of the collector's way, so
        # its pauses stay short on the command path (a Pi's full collection is milliseconds).
        gc.collect()
        gc.freeze()
        _return_free_heap()

    def _broker_tls(self) -> dict[str, Any]:
        tls = self.config.tls
        if tls is None:
            return {}
        return {"tls_port": tls.mqtt_port, "tls_host": tls.bind, "certfile": tls.cert, "keyfile": tls.key}

    async def _login(self, name: str, password: str) -> Login | None:
        user = await self.users.login_async(name, password)
        return Login(user.role, user.hash) if user is not None else None

    def _lookup(self, name: str) -> Login | str:
        user = self.users.lookup(name)
        return user if isinstance(user, str) else Login(user.role, user.hash)

    async def _watch_users(self, broker: EmbeddedBroker) -> None:
        """Connected clients lose what the users file no longer gives them, within USERS_WATCH_S."""
        seen = self.users.version()
        problem = self.users.problem
        lan_control = self._lan_control()
        while True:
            await asyncio.sleep(USERS_WATCH_S)
            version = self.users.version()
            if version == seen:
                continue
            seen = version
            try:
                if self.users.problem and self.users.problem != problem:
                    # As at start: in `info`, since it locks everyone out.
                    self.board.notice(f"users: {self.users.problem}; nobody can log in until it is fixed")
                problem = self.users.problem
                if lan_control != (lan_control := self._lan_control()):
                    if lan_control:
                        self._warn_lan_control()
                    else:
                        logger.info("users: a user exists now: clients from the network must log in")
                closed = await broker.review_sessions()
            except Exception:  # the next change is reviewed all the same
                logger.exception("users: reviewing the connected clients failed")
                continue
            if closed:
                logger.info("users: %s changed: %d connection(s) closed", self.users.path, closed)

    def _lan_control(self) -> bool:
        return self.policy.anonymous_role("192.0.2.1") == "control"  # any address off this host

    def _warn_lan_control(self) -> None:
        if not is_loopback(self.config.bind):
            logger.warning(
                "anyone on the network can control this node without logging in: add a user "
                "(`milo user add NAME --role control`) or set [auth] (README, Security)"
            )

    async def _http_role(self, address: str | None, credentials: tuple[str, str] | None) -> str | None:
        """The role of an HTTP client (logo uploads, the page's login): as the broker decides."""
        if credentials is None:
            return self.policy.anonymous_role(address)
        return await self.users.verify_async(*credentials)

    def _refused(self, refusal: Refusal) -> None:
        """A client's PUBLISH, will or request the broker dropped: said on `<base>/error`."""
        if self.bus is None or self._stopping:
            return
        who = f"client {refusal.client_id!r}" + (f" (user {refusal.user!r})" if refusal.user else "")
        error = ErrorPayload(
            topic=refusal.topic[:256],
            payload=echo(refusal.payload),
            error=f"{who}, role {refusal.role}, may not publish this: {refusal.reason}",
            code="forbidden",
        )
        task = asyncio.create_task(self.bus.publish(self.topics.error, error.model_dump_json().encode()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _alsa_config(self) -> Path:
        """Point this process's ALSA (and the programs it starts) at the node's asound.conf.

        /etc/asound.conf is read by alsa-lib anyway; any other path is added through ALSA_CONFIG_PATH,
        so running the node on a laptop never rewrites the developer's own sound setup.
        """
        path = (self.config.alsa_config or self.config.data_dir / "asound.conf").resolve()
        if path == SYSTEM_ASOUND:
            return path
        if not path.exists():
            # alsa-lib refuses every device while a file on ALSA_CONFIG_PATH is missing.
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("# written by the milo router\n")
        self._saved_alsa_env = os.environ.get(ALSA_ENV)
        self._alsa_env_set = True
        os.environ[ALSA_ENV] = f"{ALSA_BASE}:{path}"
        return path

    def _log_start(self) -> None:
        where = self.bus.description if self.bus else "?"
        mqtt = f"mqtt port {self.mqtt_port}" if self.mqtt_port is not None else f"broker {where}"
        logger.info(
            "node %s online (%s, http port %s, base %s)",
            self.config.node_id,
            mqtt,
            self.http_port,
            self.topics.base,
        )
        for runner in self.runners:
            detail = f" ({runner.detail})" if runner.detail else ""
            logger.info("  %-12s %s%s", runner.name, runner.status.value, detail)
        if self._lan_control():
            self._warn_lan_control()

    def _will(self) -> tuple[str, bytes]:
        """Where the broker says this process is gone: the node's status, or (joined) a state topic.

        A process that joins another's node must not take the node offline when it drops, nor say
        it online again when the main process has died: its will marks its own first subsystem
        unavailable (one will per connection; a joining process usually runs one, the knob).
        """
        if not self.config.join:
            return self.topics.status, b"offline"
        first = self.classes[0]
        gone = first.absent_state("unavailable", f"its process on {socket.gethostname()} is gone")
        return self.topics.of(first.state_topic()), gone.model_dump_json().encode()

    async def _republish(self) -> None:
        assert self.bus is not None
        if not self.config.join:
            await self.bus.publish(self.topics.status, b"online", retain=True)
        for runner in self.runners:
            await runner.republish()

    def _on_status(self, message: Message) -> None:
        if message.payload == b"online" or self._stopping or self.bus is None:
            return
        logger.warning("another client set %s to %r; said online again", message.topic, message.payload[:20])
        task = asyncio.create_task(self.bus.publish(self.topics.status, b"online", retain=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_limit(self, code: str, client_id: str, topic: str, message: str) -> None:
        """A client refused or cut off by the broker's limits: an error record names it."""
        if self.bus is None or self._stopping:
            return
        error = ErrorPayload(topic=topic, payload="", error=message, code=code)
        task = asyncio.create_task(
            self.bus.publish(self.topics.error, error.model_dump_json().encode(), qos=EVENT_QOS)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._stopping = True
        if self.bus is not None and not self.config.join:
            await self.bus.unsubscribe(self.topics.status, self._on_status)
        if self._users_watch is not None:
            self._users_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._users_watch
        for runner in reversed(self.runners):
            await runner.stop()
        if self.bus is not None and self.config.join:
            for cls in self.classes:
                gone = cls.absent_state("unavailable", f"its process on {socket.gethostname()} stopped")
                topic = self.topics.of(cls.state_topic())
                await self.bus.publish(topic, gone.model_dump_json().encode(), retain=True, qos=cls.state_qos)
        elif self.bus is not None:
            await self.bus.publish(self.topics.status, b"offline", retain=True)
        if self.web is not None:
            await self.web.stop()
        if self.broker is not None:
            await self.broker.drain()
            await self.broker.stop()
        if self.bus is not None:
            await self.bus.stop()
        if self._alsa_env_set:
            # In-process nodes (tests) must not leave their config path to the next one.
            if self._saved_alsa_env is None:
                os.environ.pop(ALSA_ENV, None)
            else:
                os.environ[ALSA_ENV] = self._saved_alsa_env


async def serve(config: NodeConfig, stop: asyncio.Event) -> None:
    """Run a node until `stop` is set (SIGTERM/SIGINT in the CLI)."""
    node = Node(config)
    try:
        await node.start()
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await node.stop()


__all__ = ["InboundMessage", "Node", "serve"]


def _return_free_heap() -> None:
    """Give the heap that start-up used and freed (schema building, config parsing) back to the OS.

    glibc keeps freed arenas mapped; on a Pi with other daemons that is ~1 MB of RSS for nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
