"""Spotify's volume slider and the node's one volume, mapped both ways without feedback loops."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

# A value we sent that has not come back by then is taken as refused (clamped by limit_max...).
PENDING_TTL = 2.0


def _round(x: float) -> int:
    return math.floor(x + 0.5)


class _Pending:
    """Values sent one way whose echo is still to come back, oldest first."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._sent: deque[tuple[int, float]] = deque()

    def add(self, value: int) -> None:
        self._sent.append((value, self._clock()))

    def last(self) -> int | None:
        self._expire()
        return self._sent[-1][0] if self._sent else None

    def take(self, value: int) -> bool:
        """True when `value` is the echo of one we sent; it and every older one are then settled."""
        self._expire()
        for i, (sent, _) in enumerate(self._sent):
            if sent == value:
                for _ in range(i + 1):
                    self._sent.popleft()
                return True
        return False

    def _expire(self) -> None:
        now = self._clock()
        while self._sent and now - self._sent[0][1] > PENDING_TTL:
            self._sent.popleft()


class VolumeLink:
    """Which volume to send where when either side moves.

    The node's volume is 0-100 %, go-librespot's slider 0..steps. Each side answers what it is sent
    (the node republishes `volume`, go-librespot emits a `volume` event), and those answers, even late
    and out of step during a drag, must not be sent back as if someone had moved the other slider:
    an answer is recognised as one of the values still in flight that way, and dropped.
    """

    def __init__(self, steps: int = 100, clock: Callable[[], float] = time.monotonic) -> None:
        self.steps = max(1, steps)
        self.node: int | None = None  # the node's percent, as last published
        self.spotify: int | None = None  # go-librespot's value, as last reported
        self._to_node = _Pending(clock)
        self._to_spotify = _Pending(clock)

    def percent_of(self, value: int) -> int:
        return min(100, max(0, _round(value * 100 / self.steps)))

    def value_of(self, percent: int) -> int:
        return min(self.steps, max(0, _round(percent * self.steps / 100)))

    def from_spotify(self, value: int) -> int | None:
        """go-librespot reports `value`: the percent to send to the node's volume, or None."""
        self.spotify = value
        if self._to_spotify.take(value):
            return None
        percent = self.percent_of(value)
        if percent == self.node or percent == self._to_node.last():
            return None
        self._to_node.add(percent)
        return percent

    def from_node(self, percent: int) -> int | None:
        """The node's volume is `percent`: the value to send to go-librespot, or None."""
        self.node = percent
        if self._to_node.take(percent):
            return None
        return self._towards_spotify()

    def node_is(self, percent: int) -> None:
        """The node's volume while no session is there to tell: sent when one starts."""
        self.node = percent

    def session_started(self, value: int | None) -> int | None:
        """A new session reports `value`: the node's volume wins, so the phone shows it from the start."""
        self.spotify = value
        return self._towards_spotify()

    def _towards_spotify(self) -> int | None:
        if self.node is None:
            return None
        value = self.value_of(self.node)
        if value == self.spotify or value == self._to_spotify.last():
            return None
        self._to_spotify.add(value)
        return value
