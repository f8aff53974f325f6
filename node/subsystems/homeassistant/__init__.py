"""The `homeassistant` subsystem: device-based MQTT discovery of the node's entities for Home Assistant."""

# It never imports another subsystem: it reads their retained topics (entities.py builds the components
# from them) and announces one retained device config; Home Assistant then talks to those topics itself.

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import random
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from node.framework.bus import Message
from node.framework.subsystem import Subsystem, SubsystemConfig
from node.framework.views import InfoView
from node.subsystems.homeassistant.entities import (
    FEATURES,
    Component,
    Make,
    Seen,
    build,
    known,
    source_names,
    watched,
)

# Retained states arrive in bursts (a start, a birth): one announcement for the whole burst.
COALESCE_S = 0.1
PREFIX = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"


class HomeAssistantState(BaseModel):
    """Retained `<base>/homeassistant`: what is announced to Home Assistant, and where."""

    model_config = ConfigDict(extra="forbid")

    discovery: bool = Field(default=True, description="announcing (config `discovery`)")
    config_topic: str = Field(default="", description="the retained device discovery topic")
    announced: bool = Field(default=False, description="a device config is on config_topic now")
    components: int = Field(default=0, description="entities in the announced device config")
    removed_by_user: bool = Field(
        default=False, description="deleted in Home Assistant: not announced again until `restore`"
    )
    births: int = Field(default=0, description="Home Assistant start-ups answered since this one started")


class HomeAssistantConfig(SubsystemConfig):
    """`[homeassistant]`."""

    discovery: bool = Field(default=True, description="announce the node; false clears what was announced")
    prefix: str = Field(
        default="homeassistant", max_length=100, pattern=PREFIX, description="its discovery prefix"
    )
    name: str = Field(default="", max_length=100, description="the device's name; empty = Milo <node_id>")
    host: str = Field(
        default="",
        max_length=253,
        pattern=r"^[A-Za-z0-9.:_-]*$",
        description="host name of the web UI link; empty = the node's first IPv4 address",
    )
    birth_delay_s: float = Field(
        default=5.0, ge=0.0, le=60.0, description="republish after Home Assistant starts within this (random)"
    )


class HomeAssistantData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    removed_by_user: bool = False
    # Component id -> [platform, its subsystem's state topic] of what is announced and of what still
    # has to be removed: one whose subsystem is there but no longer calls for it is sent as
    # `{"platform": ...}` alone (how device discovery removes one entity), and dropped from here once
    # that config is retained on the broker, so the device config does not grow with every Snapcast
    # client ever seen; the next announcement leaves it out. Persisted, so a restart before that still
    # sends the removal. One whose subsystem has not been heard of yet (still starting, another
    # process) is left out, which changes nothing there, and kept.
    components: dict[str, tuple[str, str]] = Field(default_factory=dict)


HomeAssistantCommand = Literal["announce", "restore"]


class HomeAssistant(Subsystem[HomeAssistantState, HomeAssistantConfig]):
    name = "homeassistant"
    description = "Home Assistant MQTT discovery: the node as one device with its entities"
    State = HomeAssistantState
    Config = HomeAssistantConfig
    Data = HomeAssistantData
    Command = TypeAdapter(HomeAssistantCommand)
    watches: ClassVar[tuple[str, ...]] = watched()

    data: HomeAssistantData

    @property
    def config_topic(self) -> str:
        return f"{self.config.prefix}/device/{self.ctx.node.node_id}/config"

    @property
    def birth_topic(self) -> str:
        return f"{self.config.prefix}/status"

    async def setup(self) -> None:
        self._seen = Seen()
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        # Payloads sent to the config topic whose copy has not come back yet: anything else that
        # arrives there (an empty payload) is Home Assistant deleting the device.
        self._sent: collections.deque[bytes] = collections.deque(maxlen=16)
        self._retained: bytes | None = None  # what the broker held on the config topic at start
        self._last: bytes | None = None
        self.state = HomeAssistantState(
            discovery=self.config.discovery,
            config_topic=self.config_topic,
            removed_by_user=self.data.removed_by_user,
        )
        self._subscribed = (self.config_topic, self.birth_topic)
        for topic in self._subscribed:
            await self.ctx.bus.subscribe(topic, self._inbox.put_nowait)

    async def teardown(self) -> None:
        for task in list(getattr(self, "_tasks", ())):
            task.cancel()
        for topic in getattr(self, "_subscribed", ()):
            await self.ctx.bus.unsubscribe(topic, self._inbox.put_nowait)

    async def run(self) -> None:
        # What arrived while setting up is what the broker retained: the last run's announcement (so an
        # unchanged one is not sent again), or a birth message from long ago (not a start-up now).
        while not self._inbox.empty():
            await self._handle(self._inbox.get_nowait(), starting=True)
        self._spawn(self._read_inbox())
        # Announced once the others' retained states are in (the first of them starts the wait).
        while True:
            await self._dirty.wait()
            await asyncio.sleep(COALESCE_S)  # the rest of a burst of states joins this announcement
            self._dirty.clear()
            await self._announce()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_config(self, old: HomeAssistantConfig, new: HomeAssistantConfig) -> bool:
        if old.discovery and (not new.discovery or old.prefix != new.prefix):
            # Off, or moved: nothing is left behind under the old topic.
            await self._clear(f"{old.prefix}/device/{self.ctx.node.node_id}/config")
        return False  # set up again: new topics, new name or link

    # Topics of the other subsystems ---------------------------------------------------------------
    async def on_topic(self, message: Message, path: str) -> None:
        if path.endswith(("/set", "/get")):
            return  # commands of the sources under `source/+`, not states
        # A state republished unchanged (the echo of a `get`, a re-assertion) cannot change the
        # announcement, and building one for all subsystems takes a millisecond or two of the loop.
        if self._seen.update(path, message.payload):
            self._dirty.set()

    # Home Assistant's topics ------------------------------------------------------------------------
    async def _read_inbox(self) -> None:
        while True:
            await self._handle(await self._inbox.get())

    async def _handle(self, message: Message, *, starting: bool = False) -> None:
        # The retain flag cannot tell: over MQTT 5 the bus asks for it as published, live or not.
        if message.topic == self.birth_topic:
            if message.payload.strip() == b"online" and not starting:
                self._spawn(self._answer_birth())
        elif message.topic == self.config_topic:
            await self._on_config_topic(message)

    async def _on_config_topic(self, message: Message) -> None:
        if message.payload in self._sent:
            while self._sent and self._sent.popleft() != message.payload:
                pass
            return
        if message.payload:
            # Retained from the last run, or someone else's: what the broker holds now.
            self._retained = message.payload
            return
        # An empty payload is never retained, so it is live: Home Assistant clears the device's config
        # topic when the user deletes the device (or one of its entities). It stays deleted until
        # `homeassistant/set restore`.
        self.log.info("homeassistant: the device was deleted in Home Assistant; not announcing it again")
        self.data = HomeAssistantData(removed_by_user=True)
        self.save_data()
        self._last = None
        self._retained = None
        await self.set_state(removed_by_user=True, announced=False, components=0)

    async def _answer_birth(self) -> None:
        # Spread over a few seconds: every device on the broker answers the same message.
        await asyncio.sleep(random.uniform(0, self.config.birth_delay_s))  # noqa: S311 - not a secret
        await self.set_state(births=self.state.births + 1)
        await self._announce(force=True)
        await self._ask_states()

    async def _ask_states(self) -> None:
        """Every subsystem with entities republishes its state, for a Home Assistant that just started."""
        if not self.state.announced:
            return
        # The player's `source` and the radio's lists come with their owners' states.
        topics = [f.topic for f in FEATURES.values()]
        topics += [f"source/{name}" for name in source_names(self._seen) if f"source/{name}" not in topics]
        for topic in topics:
            if self._seen.enabled(topic):
                await self.ctx.bus.publish(self.ctx.topics.of(f"{topic}/get"), b"")

    # Commands ---------------------------------------------------------------------------------------
    def parse_text(self, text: str) -> Any:
        return text.lower()

    async def on_command(self, command: Any) -> None:
        if command == "restore" and self.data.removed_by_user:
            self.data = HomeAssistantData()
            self.save_data()
            await self.set_state(removed_by_user=False)
        await self._announce(force=True)
        if command == "announce":
            await self._ask_states()

    # Announcing -------------------------------------------------------------------------------------
    def _make(self) -> Make:
        return Make(topics=self.ctx.topics, node_id=self.ctx.node.node_id, web=self._web())

    def _web(self) -> str | None:
        """http://host:port of the node's web UI: the configured host, else its first IPv4 address."""
        port = self.ctx.node.http_port
        if not port:
            return None
        info = self._seen.view(InfoView, "info") or InfoView()
        host = self.config.host
        if not host:
            v4 = [a for a in info.addresses if ipaddress.ip_address(a).version == 4]
            host = v4[0] if v4 else (f"[{info.addresses[0]}]" if info.addresses else info.host)
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{port}" if host else None

    def _device(self, make: Make) -> dict[str, Any]:
        info = self._seen.view(InfoView, "info") or InfoView()
        node = self.ctx.node
        device: dict[str, Any] = {
            "identifiers": [f"milo_{node.node_id}"],
            "name": self.config.name or f"Milo {node.node_id}",
            "manufacturer": "Milo",
            "model": "Milo audio node",
            "sw_version": info.version or node.version,
        }
        if info.platform:
            device["hw_version"] = info.platform
        if make.web is not None:
            device["configuration_url"] = f"{make.web}/"
        return device

    def payload(self) -> tuple[bytes, dict[str, tuple[str, Component]], set[str]]:
        """The device config to announce now, its live components (with their subsystem), its removals."""
        make = self._make()
        live = build(self._seen, make)
        components: dict[str, Component] = {key: component for key, (_, component) in live.items()}
        present = known(self._seen)
        removed = set()
        for key, (platform, owner) in self.data.components.items():
            if key not in live and owner in present:
                components[key] = {"platform": platform}
                removed.add(key)
        body = {
            "device": self._device(make),
            "origin": {"name": "Milo", "sw_version": self.ctx.node.version},
            "components": components,
            "qos": 1,
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), live, removed

    async def _announce(self, *, force: bool = False) -> None:
        async with self._lock:
            if not self.config.discovery or self.data.removed_by_user:
                return
            data, live, removed = self.payload()
            if not live and not self.data.components:
                return  # nothing known yet: the topics of the others have not arrived
            if force or data != (self._last if self._last is not None else self._retained):
                self._last = data
                self._sent.append(data)
                await self.ctx.bus.publish(self.config_topic, data, retain=True)
            self._last = data
            # `data` is retained now (sent, or what the broker already held): its removals are done.
            kept = {k: v for k, v in self.data.components.items() if k not in removed}
            ever = {**kept, **{k: (c["platform"], o) for k, (o, c) in live.items()}}
            if ever != self.data.components:
                self.data = self.data.model_copy(update={"components": ever})
                self.save_data()
            await self.set_state(announced=True, components=len(live))

    async def _clear(self, topic: str) -> None:
        """Remove the device from Home Assistant: an empty retained config."""
        with contextlib.suppress(Exception):
            self._sent.append(b"")
            await self.ctx.bus.publish(topic, b"", retain=True)
        self.data = self.data.model_copy(update={"components": {}})
        self.save_data()
        self._last = self._retained = None
        await self.set_state(announced=False, components=0)
