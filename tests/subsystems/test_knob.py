"""The knob on gpiozero's mock pins: real Gray code with bounces in, coalesced volume steps, actions out."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jsonschema
import pytest
from gpiozero.pins.mock import MockFactory

from harness.ky040 import Ky040, mock_pins
from harness.pulse import Pulse
from node.schemagen import SCHEMA_DIR
from node.subsystems.info import Info
from node.subsystems.knob import Knob
from node.subsystems.volume import Volume
from tests.conftest import NodeFactory, Running
from tests.helpers import Got, Probe, probe

MOCK = {"pin_factory": "mock", "double_press_s": 0.15, "long_press_s": 0.3, "wake_screen": False}


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    with mock_pins() as factory:
        yield factory


def deltas(p: Probe, topic: str, after: int = 0) -> list[int]:
    return [int(g.text) for g in p.on(topic, after)]


def pressed(value: bool) -> Any:
    return lambda g: g.json()["pressed"] is value


@contextlib.asynccontextmanager
async def knob_node(
    run_node: NodeFactory, kind: str = "embedded", **section: Any
) -> AsyncIterator[tuple[Running, Probe]]:
    async with (
        run_node(kind, subsystems=(Info, Knob), sections={"knob": {**MOCK, **section}}) as r,
        probe(r.port) as p,
    ):
        await p.subscribe(f"{r.base}/#")
        await p.wait_for(f"{r.base}/knob", lambda g: g.json()["available"] is True)
        yield r, p


async def settle(p: Probe, base: str) -> None:
    """A round trip through the knob's queue: every message sent to it before has been read."""
    mark = p.mark()
    await p.publish(f"{base}/knob/get", "")
    await p.wait_for(f"{base}/knob", after=mark)


async def test_detents_with_bounces_go_out_as_few_relative_steps_and_none_is_lost(
    run_node: NodeFactory, broker_kind: str, pins: MockFactory
) -> None:
    async with knob_node(run_node, broker_kind, step=3) as (r, p):
        knob = Ky040(pins)
        state = (await p.wait_for(f"{r.base}/knob")).json()
        assert (state["pin_factory"], state["clk"], state["dt"], state["sw"]) == ("mock", 22, 27, 23)
        topic = f"{r.base}/volume/set"
        # 20 detents: past gpiozero's default max_steps of 16, where its own count would stop.
        knob.turn(20, bounce=2)
        await p.wait_for(topic, lambda g: sum(deltas(p, topic)) >= 60)
        assert sum(deltas(p, topic)) == 60
        assert len(deltas(p, topic)) <= 2  # turned at once, sent as one step (two at most)
        mark = p.mark()
        knob.turn(-7, bounce=1)
        knob.turn(2)
        await p.wait_for(topic, lambda g: sum(deltas(p, topic, mark)) <= -15, after=mark)
        assert sum(deltas(p, topic, mark)) == -15
        assert all(g.text.startswith(("+", "-")) for g in p.on(topic))


async def test_a_half_turn_is_no_step_and_reverse_swaps_the_directions(
    run_node: NodeFactory, pins: MockFactory
) -> None:
    async with knob_node(run_node, reverse=True) as (r, p):
        knob = Ky040(pins)
        topic = f"{r.base}/volume/set"
        knob.half_turn()
        knob.turn(1)
        await p.wait_for(topic)
        assert deltas(p, topic) == [-2]  # the default step, turned down: the half turn added nothing


async def test_a_fast_spin_is_coalesced_and_the_last_detent_still_arrives(
    run_node: NodeFactory, pins: MockFactory
) -> None:
    async with knob_node(run_node, step=1) as (r, p):
        knob = Ky040(pins)
        topic = f"{r.base}/volume/set"
        # Detents arriving while a step is on its way fold into the next one.
        for _ in range(30):
            knob.turn(1)
            await p.publish(f"{r.base}/test/tick", "")  # let the loop run between detents
        await p.wait_for(topic, lambda g: sum(deltas(p, topic)) >= 30)
        assert sum(deltas(p, topic)) == 30
        assert len(deltas(p, topic)) < 30


async def test_press_double_press_and_long_press_do_their_actions(
    run_node: NodeFactory, pins: MockFactory
) -> None:
    async with knob_node(run_node) as (r, p):
        knob = Ky040(pins)
        base = r.base
        await p.publish(
            f"{base}/source", {"active": "radio", "available": ["spotify", "radio", "bluetooth"]}, retain=True
        )
        await p.publish(f"{base}/routing", {"multiroom": False, "equalizer": False}, retain=True)
        await settle(p, base)
        # A press (bouncing both ways): play/pause, once the double-press window has passed.
        knob.press(bounce=3)
        await p.wait_for(f"{base}/knob", pressed(True))
        mark = p.mark()
        knob.release(bounce=3)
        got = await p.wait_for(f"{base}/player/set", after=mark)
        assert got.text == "toggle"
        # Two presses in a row: the next available source after the active one.
        for _ in range(2):
            mark = p.mark()
            knob.press(bounce=2)
            await p.wait_for(f"{base}/knob", pressed(True), after=mark)
            knob.release(bounce=2)
            await p.wait_for(f"{base}/knob", pressed(False), after=mark)
        got = await p.wait_for(f"{base}/source/set", after=mark)
        assert got.text == "bluetooth"
        # Held: multiroom flips, on the hold and not on the release.
        mark = p.mark()
        knob.press()
        got = await p.wait_for(f"{base}/routing/set", after=mark)
        assert got.json() == {"multiroom": True}
        assert p.on(f"{base}/knob", mark)[-1].json()["pressed"] is True
        knob.release()
        await p.wait_for(f"{base}/knob", pressed(False), after=mark)
        await p.quiet(f"{base}/player/set", after=mark, probe_topic=f"{base}/test/flush")
        assert p.on(f"{base}/source/set", mark) == []


async def test_every_gesture_and_turn_goes_out_on_the_event_topic(
    run_node: NodeFactory, broker_kind: str, pins: MockFactory
) -> None:
    # What Home Assistant's event entity (and any automation) reads: one message per gesture, not
    # retained, whatever the gesture's action; `none` leaves it to them alone.
    schema = json.loads((SCHEMA_DIR / "knob.event.json").read_text())
    # Windows wide enough that a loaded machine's round trips between the edges never change a gesture.
    timing = {"double_press_s": 0.8, "long_press_s": 1.0}
    async with knob_node(run_node, broker_kind, press="none", **timing) as (r, p):
        knob = Ky040(pins)
        base, topic = r.base, f"{r.base}/knob/event"
        knob.press(bounce=2)
        await p.wait_for(f"{base}/knob", pressed(True))
        knob.release(bounce=2)
        got = await p.wait_for(topic)
        assert got.json() == {"event_type": "press", "action": "none", "detents": 0}
        assert got.retain is False
        for _ in range(2):
            mark = p.mark()
            knob.press()
            await p.wait_for(f"{base}/knob", pressed(True), after=mark)
            knob.release()
            await p.wait_for(f"{base}/knob", pressed(False), after=mark)
        got = await p.wait_for(topic, lambda g: g.json()["event_type"] != "press")
        assert got.json() == {"event_type": "double_press", "action": "next_source", "detents": 0}
        mark = p.mark()
        knob.press()
        got = await p.wait_for(topic, after=mark)  # on the hold, before the release
        assert got.json() == {"event_type": "long_press", "action": "multiroom", "detents": 0}
        knob.release()
        await p.wait_for(f"{base}/knob", pressed(False), after=mark)
        # Turns: the detents of each step sent to volume/set, clockwise as `reverse` reads the pins.
        mark = p.mark()
        knob.turn(3, bounce=1)
        await p.wait_for(topic, lambda g: turned(p, topic, mark) == 3, after=mark)
        knob.turn(-2)
        await p.wait_for(topic, lambda g: turned(p, topic, mark) == 1, after=mark)
        assert sum(deltas(p, f"{base}/volume/set", mark)) == 2  # the default step of 2 per detent
        await p.quiet(f"{base}/player/set", after=0, probe_topic=f"{base}/test/flush")  # press: none
        events = p.on(topic)
        assert [g.json()["event_type"] for g in events][:3] == ["press", "double_press", "long_press"]
        assert {g.json()["event_type"] for g in events[3:]} == {"rotate_cw", "rotate_ccw"}
        for event in events:
            jsonschema.validate(event.json(), schema)
            assert event.retain is False


def turned(p: Probe, topic: str, after: int) -> int:
    """Detents the knob's turn events add up to since `after`, clockwise positive."""
    sign = {"rotate_cw": 1, "rotate_ccw": -1}
    return sum(sign.get(g.json()["event_type"], 0) * g.json()["detents"] for g in p.on(topic, after))


async def test_actions_follow_the_config_while_running(run_node: NodeFactory, pins: MockFactory) -> None:
    async with knob_node(run_node) as (r, p):
        knob = Ky040(pins)
        base = r.base
        mark = p.mark()
        await p.publish(f"{base}/knob/config/set", {"press": "mute", "double_press": "none", "step": 4})
        await p.wait_for(f"{base}/knob", lambda g: g.json()["step"] == 4, after=mark)
        mark = p.mark()
        knob.press()
        await p.wait_for(f"{base}/knob", pressed(True), after=mark)
        knob.release()
        got = await p.wait_for(f"{base}/volume/set", after=mark)
        assert got.text == "toggle_mute"  # at once on release: no double press to wait for
        knob.turn(1)
        got = await p.wait_for(f"{base}/volume/set", lambda g: g.text != "toggle_mute", after=mark)
        assert got.text == "+4"
        # `none` does nothing at all.
        await p.publish(f"{base}/knob/config/set", {"press": "none"})
        await settle(p, base)
        mark = p.mark()
        knob.press()
        await p.wait_for(f"{base}/knob", pressed(True), after=mark)
        knob.release()
        await p.wait_for(f"{base}/knob", pressed(False), after=mark)
        await p.quiet(f"{base}/volume/set", after=mark, probe_topic=f"{base}/test/flush")


async def test_other_pins_restart_it_on_them(run_node: NodeFactory, pins: MockFactory) -> None:
    async with knob_node(run_node) as (r, p):
        mark = p.mark()
        await p.publish(f"{r.base}/knob/config/set", {"clk": 5, "dt": 6, "sw": 13})
        await p.wait_for(f"{r.base}/knob", lambda g: g.json()["clk"] == 5, after=mark)
        Ky040(pins, clk=5, dt=6, sw=13).turn(1)
        got = await p.wait_for(f"{r.base}/volume/set", after=mark)
        assert got.text == "+2"
        err = (await _config_error(p, r.base, {"clk": 6, "dt": 6})).json()
        assert err["code"] == "invalid_config"
        assert "three different pins" in err["error"]


async def _config_error(p: Probe, base: str, update: dict[str, Any]) -> Got:
    mark = p.mark()
    await p.publish(f"{base}/knob/config/set", update)
    return await p.wait_for(f"{base}/error", after=mark)


async def test_turning_wakes_the_screen_at_most_every_two_seconds(
    run_node: NodeFactory, pins: MockFactory
) -> None:
    async with knob_node(run_node, wake_screen=True) as (r, p):
        knob = Ky040(pins)
        knob.turn(3)
        await p.wait_for(f"{r.base}/volume/set")
        knob.press()
        await p.wait_for(f"{r.base}/knob", pressed(True))
        knob.release()
        got = await p.wait_for(f"{r.base}/screen/set")
        assert got.text == "activity"
        await p.quiet(f"{r.base}/screen/set", after=p.mark(), probe_topic=f"{r.base}/test/flush")
        assert len(p.on(f"{r.base}/screen/set")) == 1


async def test_the_knob_steps_a_real_volume(run_node: NodeFactory, pins: MockFactory, pulse: Pulse) -> None:
    sections = {"knob": MOCK, "volume": {"device": "pulse", "control": "Master"}}
    async with run_node(subsystems=(Info, Volume, Knob), sections=sections) as r, probe(r.port) as p:
        topic = f"{r.base}/volume"
        await p.subscribe(topic, f"{r.base}/knob")
        await p.wait_for(f"{r.base}/knob", lambda g: g.json()["available"] is True)
        mark = p.mark()
        await p.publish(f"{topic}/set", "40")
        await p.wait_for(topic, lambda g: g.json()["percent"] == 40, after=mark)
        Ky040(pins).turn(5, bounce=1)
        await p.wait_for(topic, lambda g: g.json()["percent"] == 50, after=mark)
        Ky040(pins).turn(-60)
        await p.wait_for(topic, lambda g: g.json()["percent"] == 0, after=mark)


async def test_without_gpio_it_is_unavailable_and_says_why(run_node: NodeFactory) -> None:
    async with run_node(subsystems=(Info, Knob)) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        info = await p.wait_for(
            f"{r.base}/info", lambda g: g.json()["subsystems"]["knob"]["status"] == "unavailable"
        )
        assert "no GPIO" in info.json()["subsystems"]["knob"]["detail"]
        state = (await p.wait_for(f"{r.base}/knob")).json()
        assert state["available"] is False
        assert "no GPIO" in state["error"]
        mark = p.mark()
        await p.publish(f"{r.base}/knob/get", "")
        err = (await p.wait_for(f"{r.base}/error", after=mark)).json()
        assert err["code"] == "unavailable"


async def test_an_unknown_pin_library_is_unavailable_with_its_error(run_node: NodeFactory) -> None:
    sections = {"knob": {"pin_factory": "lgpio"}}
    async with run_node(subsystems=(Info, Knob), sections=sections) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/knob")
        state = (await p.wait_for(f"{r.base}/knob")).json()
        assert state["available"] is False
        assert state["error"].startswith("GPIO pin factory lgpio: ")
        assert state["pin_factory"] == ""
