"""The `knob` subsystem: a rotary encoder's detents as `volume/set` steps, its button as chosen actions."""

# Just another MQTT client of the node's topics: it publishes volume/set, player/set, source/set,
# routing/set and screen/set and reads `routing` and `source`, so `milo run --only knob --broker
# mqtt://<node>` drives a node from a second Pi as well as from the node itself. Every gesture and
# turn also goes out on `knob/event` (not retained), for automations: Home Assistant's event entity.

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Coroutine
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from node.adapters.gpio import KnobPins, PinFactory
from node.framework.bus import Message
from node.framework.errors import DaemonError
from node.framework.subsystem import Context, Subsystem, SubsystemConfig
from node.framework.views import RoutingView, SourcesView, read_view

# While the knob turns, one relative step goes out per interval at most, carrying every detent
# counted since the last one: a fast spin is ~50 messages a second, whatever the encoder's rate.
SEND_INTERVAL = 0.02
# volume/set takes deltas of at most 100 %; on a 0-100 scale a larger one is the same move.
MAX_DELTA = 100
# The screen is told the knob is in use at most this often (a turn is many detents).
ACTIVITY_EVERY = 2.0

Action = Literal["play_pause", "mute", "next_source", "multiroom", "none"]
Gesture = Literal["press", "double_press", "long_press"]
Rotation = Literal["rotate_cw", "rotate_ccw"]
EventType = Literal["press", "double_press", "long_press", "rotate_cw", "rotate_ccw"]
EVENT_TOPIC = "knob/event"


class KnobEvent(BaseModel):
    """`<base>/knob/event`, not retained: one gesture of the button, or one step of a turn."""

    model_config = ConfigDict(extra="forbid")

    event_type: EventType = Field(
        description="press, double_press, long_press; rotate_cw (what turns the volume up) or rotate_ccw"
    )
    action: Action | None = Field(
        default=None, description="for a gesture: the action configured for it (`none`: it did nothing)"
    )
    detents: int = Field(
        default=0, ge=0, description="for a turn: detents since the last event (sent as often as volume/set)"
    )


class KnobState(BaseModel):
    """Retained `<base>/knob`: which pins and pin library the knob uses, and its button now."""

    model_config = ConfigDict(extra="forbid")

    available: bool = True
    error: str | None = Field(default=None, description="why the knob does not run, when it does not")
    pin_factory: str = Field(
        default="", description="the gpiozero pin factory in use: lgpio, native, mock..."
    )
    clk: int = Field(default=22, description="GPIO (BCM number) of the encoder's CLK (A) pin")
    dt: int = Field(default=27, description="GPIO of the encoder's DT (B) pin")
    sw: int = Field(default=23, description="GPIO of the push button (SW)")
    step: int = Field(default=2, description="volume percent per detent")
    pressed: bool = Field(default=False, description="the button is held down now (debounced)")


class KnobConfig(SubsystemConfig):
    pin_factory: PinFactory = Field(
        default="auto",
        description="gpiozero pin factory: auto (lgpio, then rpigpio, then native), one of them, or mock",
    )
    clk: int = Field(default=22, ge=0, le=27, description="GPIO (BCM number) of the encoder's CLK (A) pin")
    dt: int = Field(default=27, ge=0, le=27, description="GPIO of the encoder's DT (B) pin")
    sw: int = Field(default=23, ge=0, le=27, description="GPIO of the push button (SW)")
    step: int = Field(default=2, ge=1, le=20, description="volume percent per detent")
    reverse: bool = Field(default=False, description="clockwise turns the volume down (CLK and DT swapped)")
    press: Action = Field(default="play_pause", description="what a press does")
    double_press: Action = Field(default="next_source", description="what two quick presses do")
    long_press: Action = Field(default="multiroom", description="what holding the button does")
    double_press_s: float = Field(
        default=0.4, ge=0.1, le=2.0, description="longest gap between the two presses of a double press"
    )
    long_press_s: float = Field(default=0.8, ge=0.2, le=10.0, description="how long a long press holds")
    debounce_s: float = Field(
        default=0.02, ge=0.0, le=0.2, description="the button must rest this long to count as moved"
    )
    wake_screen: bool = Field(default=True, description="turning or pressing wakes the node's screen")

    @model_validator(mode="after")
    def _distinct_pins(self) -> KnobConfig:
        if len({self.clk, self.dt, self.sw}) != 3:
            raise ValueError(
                f"clk, dt and sw must be three different pins (got {self.clk}, {self.dt}, {self.sw})"
            )
        return self


LIVE_KEYS = frozenset(KnobConfig.model_fields) - {"enabled", "pin_factory", "clk", "dt", "sw"}


class Knob(Subsystem[KnobState, KnobConfig]):
    """Detents are summed and sent as `+k`/`-k` no faster than SEND_INTERVAL; the button is timed here."""

    name = "knob"
    description = "a KY-040 rotary encoder and its button on GPIO: volume steps and button actions"
    State = KnobState
    Config = KnobConfig
    watches: ClassVar[tuple[str, ...]] = ("routing", "source")
    events: ClassVar[dict[str, type[BaseModel]]] = {EVENT_TOPIC: KnobEvent}

    def __init__(self, ctx: Context, config: KnobConfig) -> None:
        super().__init__(ctx, config)
        self._pins: KnobPins | None = None
        self._loop = asyncio.get_running_loop()
        self._pending = 0  # detents counted and not sent yet, clockwise positive
        self._turned = asyncio.Event()
        self._routing = RoutingView()
        self._sources = SourcesView()
        self._last_activity = -math.inf
        self._tasks: set[asyncio.Task[None]] = set()
        # The button: the last edge seen, the level it settled on, and the timers of its gestures.
        self._level = False
        self._stable = False
        self._settle: asyncio.TimerHandle | None = None
        self._hold: asyncio.TimerHandle | None = None
        self._click: asyncio.TimerHandle | None = None
        self._held = False
        self._clicks = 0

    # While it does not run, its own state says so (available: false, with the reason).
    absent_model: ClassVar[type[BaseModel] | None] = None

    @classmethod
    def absent_state(cls, status: str, reason: str) -> BaseModel:
        return KnobState(available=False, error=reason)

    # Life ------------------------------------------------------------------------------------------
    async def check_environment(self) -> None:
        cfg = self.config
        self._pins = KnobPins(
            self._loop,
            cfg.pin_factory,
            clk=cfg.clk,
            dt=cfg.dt,
            sw=cfg.sw,
            on_turn=self._on_turn,
            on_button=self._on_edge,
        )

    async def setup(self) -> None:
        pins = self._require_pins()
        cfg = self.config
        self.state = KnobState(pin_factory=pins.factory, clk=cfg.clk, dt=cfg.dt, sw=cfg.sw, step=cfg.step)

    async def run(self) -> None:
        while True:
            await self._turned.wait()
            self._turned.clear()
            detents, self._pending = self._pending, 0
            if not detents:
                continue  # a turn back and forth within one interval
            delta = max(-MAX_DELTA, min(MAX_DELTA, detents * self.config.step))
            # Awaited: with an external broker this is the PUBACK, and the detents of a turn that go
            # on meanwhile fold into the next message.
            await self._send("volume/set", f"{delta:+d}")
            rotation: Rotation = "rotate_cw" if detents > 0 else "rotate_ccw"
            await self.publish_event(EVENT_TOPIC, KnobEvent(event_type=rotation, detents=abs(detents)))
            await asyncio.sleep(SEND_INTERVAL)

    async def teardown(self) -> None:
        for timer in (self._settle, self._hold, self._click):
            if timer is not None:
                timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._pins is not None:
            self._pins.close()
            self._pins = None

    async def on_config(self, old: KnobConfig, new: KnobConfig) -> bool:
        changed = {key for key in KnobConfig.model_fields if getattr(old, key) != getattr(new, key)}
        if changed - LIVE_KEYS:
            return False  # other pins or another pin library: opened afresh
        await self.set_state(step=new.step)
        return True

    def _require_pins(self) -> KnobPins:
        if self._pins is None:
            raise DaemonError("the knob's pins are not open")
        return self._pins

    # Reading the node ------------------------------------------------------------------------------
    async def on_topic(self, message: Message, path: str) -> None:
        if path == "routing":
            routing = read_view(RoutingView, message.payload, self.log)
            if routing is not None:
                self._routing = routing
        elif path == "source":
            sources = read_view(SourcesView, message.payload, self.log)
            if sources is not None:
                self._sources = sources

    # The encoder (called on the loop by the pins) --------------------------------------------------
    def _on_turn(self, direction: int) -> None:
        self._pending += -direction if self.config.reverse else direction
        self._turned.set()
        self._activity()

    # The button ------------------------------------------------------------------------------------
    def _on_edge(self, pressed: bool) -> None:
        """Every edge, bounces included: the level counts once it has rested for `debounce_s`."""
        self._level = pressed
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None
        if self.config.debounce_s <= 0:
            self._settled()
        else:
            self._settle = self._loop.call_later(self.config.debounce_s, self._settled)

    def _settled(self) -> None:
        self._settle = None
        if self._level == self._stable:
            return  # it bounced back to where it was: nothing happened
        self._stable = self._level
        self.state = self.state.model_copy(update={"pressed": self._stable})
        self._spawn(self.publish_state())
        if self._stable:
            self._down()
        else:
            self._up()

    def _down(self) -> None:
        self._activity()
        self._held = False
        self._hold = self._loop.call_later(self.config.long_press_s, self._long)

    def _long(self) -> None:
        self._hold = None
        self._held = True
        # A long press after a first click ends that click's wait: it was not the start of a double.
        self._clicks = 0
        if self._click is not None:
            self._click.cancel()
            self._click = None
        self._act("long_press")

    def _up(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self._held:
            self._held = False
            return  # the long press was acted on when it had lasted long enough
        self._clicks += 1
        if self._clicks >= 2 or self.config.double_press == "none":
            # With no double press to wait for, a press acts on release without the wait.
            gesture: Gesture = "double_press" if self._clicks >= 2 else "press"
            self._clicks = 0
            if self._click is not None:
                self._click.cancel()
                self._click = None
            self._act(gesture)
            return
        self._click = self._loop.call_later(self.config.double_press_s, self._single)

    def _single(self) -> None:
        self._click = None
        self._clicks = 0
        self._act("press")

    # Actions ---------------------------------------------------------------------------------------
    def _act(self, gesture: Gesture) -> None:
        action: Action = getattr(self.config, gesture)
        self.log.debug("knob: %s -> %s", gesture, action)
        # Whatever the action, `none` included: a gesture left free is one for automations.
        self._spawn(self.publish_event(EVENT_TOPIC, KnobEvent(event_type=gesture, action=action)))
        if action == "play_pause":
            self._spawn(self._send("player/set", "toggle"))
        elif action == "mute":
            self._spawn(self._send("volume/set", "toggle_mute"))
        elif action == "next_source":
            name = self._next_source()
            if name is None:
                self.log.info("knob: %s asks for the next source, and none is available", gesture)
                return
            # Taken as done until the player says otherwise, so a second press goes one further.
            self._sources = self._sources.model_copy(update={"active": name})
            self._spawn(self._send("source/set", name))
        elif action == "multiroom":
            wanted = not self._routing.multiroom
            self._routing = self._routing.model_copy(update={"multiroom": wanted})
            self._spawn(self._send("routing/set", json.dumps({"multiroom": wanted})))

    def _next_source(self) -> str | None:
        available = self._sources.available
        if not available:
            return None
        if self._sources.active not in available:
            return available[0]
        return available[(available.index(self._sources.active) + 1) % len(available)]

    def _activity(self) -> None:
        """Tell the screen someone is at the node (a knob turned in the dark wakes it)."""
        if not self.config.wake_screen:
            return
        now = self._loop.time()
        if now - self._last_activity < ACTIVITY_EVERY:
            return
        self._last_activity = now
        self._spawn(self._send("screen/set", "activity"))

    async def _send(self, path: str, payload: str) -> None:
        await self.ctx.bus.publish(self.ctx.topics.of(path), payload.encode())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("knob: publishing failed: %s", task.exception())
