"""A KY-040 rotary encoder and its button played on gpiozero's mock pins: real Gray code, contact bounce."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gpiozero import Device
from gpiozero.pins.mock import MockFactory

CLK, DT, SW = 22, 27, 23  # the knob's default pins


@contextmanager
def mock_pins() -> Iterator[MockFactory]:
    """gpiozero's default pin factory is a fresh MockFactory for the block (the knob's `mock` uses it)."""
    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.close()
        Device.pin_factory = previous


class Ky040:
    """Drives the pins the way the module's contacts move them; idle (at a detent) both CLK and DT are high.

    One detent clockwise: CLK falls, DT falls, CLK rises, DT rises (counter-clockwise DT leads). With
    `bounce` each of those edges chatters that many times before it settles, as worn contacts do.
    """

    def __init__(self, factory: MockFactory, clk: int = CLK, dt: int = DT, sw: int = SW) -> None:
        self.clk: Any = factory.pin(clk)
        self.dt: Any = factory.pin(dt)
        self.sw: Any = factory.pin(sw)

    @staticmethod
    def _edge(pin: Any, high: bool, bounce: int) -> None:
        to, back = (pin.drive_high, pin.drive_low) if high else (pin.drive_low, pin.drive_high)
        for _ in range(bounce):
            to()
            back()
        to()

    def turn(self, detents: int, *, bounce: int = 0) -> None:
        """`detents` steps, clockwise when positive."""
        lead, follow = (self.clk, self.dt) if detents > 0 else (self.dt, self.clk)
        for _ in range(abs(detents)):
            self._edge(lead, False, bounce)
            self._edge(follow, False, bounce)
            self._edge(lead, True, bounce)
            self._edge(follow, True, bounce)

    def half_turn(self) -> None:
        """Into the next detent and back out the way it came: no step."""
        self._edge(self.clk, False, 0)
        self._edge(self.dt, False, 0)
        self._edge(self.dt, True, 0)
        self._edge(self.clk, True, 0)

    def press(self, *, bounce: int = 0) -> None:
        self._edge(self.sw, False, bounce)  # the switch pulls SW to ground

    def release(self, *, bounce: int = 0) -> None:
        self._edge(self.sw, True, bounce)
