"""Every subsystem class the node knows, in start order; looked up by name for --only, schemas and tests."""

from __future__ import annotations

from typing import Any

from node.framework.subsystem import Subsystem
from node.sources.radio import Radio
from node.subsystems.equalizer import Equalizer
from node.subsystems.info import Info
from node.subsystems.player import Player
from node.subsystems.routing import Router
from node.subsystems.ui import Ui
from node.subsystems.volume import Volume

# Explicit and type-checked (see shared/STYLE.md §6): a new subsystem is one line here.
# Start order: the router writes asound.conf before the others open ALSA devices.
ALL: tuple[type[Subsystem[Any, Any]], ...] = (Info, Router, Equalizer, Volume, Radio, Player, Ui)


def names() -> list[str]:
    return [cls.name for cls in ALL]


def by_name(name: str) -> type[Subsystem[Any, Any]]:
    for cls in ALL:
        if cls.name == name:
            return cls
    raise KeyError(name)
