"""Restart delays that double up to a cap and start over after a healthy run: subsystems and daemons."""

from __future__ import annotations

from dataclasses import dataclass


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


__all__ = ["Backoff"]
