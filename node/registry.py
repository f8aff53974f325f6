"""Every subsystem and source the node knows, in start order: for the app, --only, schemas and tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from node.adapters.alsa import loopback_subdevices
from node.framework.subsystem import SourceSpec, Subsystem
from node.sources import Source
from node.sources.airplay import Airplay
from node.sources.bluetooth import Bluetooth
from node.sources.radio import Radio
from node.sources.roc import Roc
from node.sources.spotify import Spotify
from node.subsystems.equalizer import Equalizer
from node.subsystems.homeassistant import HomeAssistant
from node.subsystems.info import Info
from node.subsystems.knob import Knob
from node.subsystems.multiroom import Multiroom
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from node.subsystems.screen import Screen
from node.subsystems.ui import Ui
from node.subsystems.update import Update
from node.subsystems.volume import Volume

# Explicit and type-checked (see shared/STYLE.md §6). A new source is one line here, in the order a UI
# lists the sources; its Loopback subdevice comes from its class, not from this order.
SOURCES: tuple[type[Source[Any, Any]], ...] = (
    Spotify,
    Bluetooth,
    Airplay,
    Roc,
    Radio,
)

# Start order: the router writes asound.conf before the others open ALSA devices; the sources start
# before the player, which aggregates them.
ALL: tuple[type[Subsystem[Any, Any]], ...] = (
    Info,
    Routing,
    Equalizer,
    Volume,
    *SOURCES,
    Multiroom,
    Player,
    Knob,
    Screen,
    Ui,
    Update,
    HomeAssistant,  # last: it describes the others' topics, so it starts when they are there
)


def names() -> list[str]:
    return [cls.name for cls in ALL]


def renamed() -> dict[str, str]:
    """Former subsystem names -> today's (config sections, --only)."""
    return {old: cls.name for cls in ALL for old in cls.formerly}


def source_names() -> list[str]:
    return [cls.name for cls in SOURCES]


def by_name(name: str) -> type[Subsystem[Any, Any]]:
    for cls in ALL:
        if cls.name == name:
            return cls
    raise KeyError(name)


def source_specs(classes: Iterable[type[Subsystem[Any, Any]]] = SOURCES) -> tuple[SourceSpec, ...]:
    """The sources among `classes`, each with its Loopback subdevice.

    A pinned subdevice never moves (snapserver's streams are bound to them); the others take the
    lowest free ones in list order, so adding a source never moves an existing one.
    """
    sources = [cls for cls in classes if issubclass(cls, Source)]
    pinned = {cls.name: cls.loopback for cls in sources if cls.loopback is not None}
    if len(set(pinned.values())) != len(pinned):
        raise ValueError(f"two sources pin the same Loopback subdevice: {pinned}")
    subdevices = loopback_subdevices([cls.name for cls in sources], pinned)
    specs = []
    for cls in sources:
        sub = subdevices[cls.name]
        if sub is None:
            raise ValueError(f"no Loopback subdevice left for source {cls.name!r}")
        specs.append(SourceSpec(name=cls.name, subdevice=sub, program=cls.program))
    return tuple(specs)


def with_sources(classes: Sequence[type[Subsystem[Any, Any]]]) -> tuple[SourceSpec, ...]:
    """The registered sources, and any other Source among `classes` (a test's), after them."""
    extra = [cls for cls in classes if issubclass(cls, Source) and cls not in SOURCES]
    return source_specs([*SOURCES, *extra])


def request_paths(classes: Iterable[type[Subsystem[Any, Any]]] = ALL) -> list[str]:
    """Request topics under a node's base (`radio/search`): besides `/set` and `/get`, the commands.

    The embedded broker's roles and `milo broker-config`'s ACL let `control` users publish these.
    """
    out: list[str] = []
    for cls in classes:
        base = cls.request_topic or cls.state_topic()
        out += [f"{base}/{verb}" for verb in cls.requests]
    return out
