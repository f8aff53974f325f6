"""Which unit templates of systemd/ an install writes where: main node, satellite, screen, unknown ones."""

# Every template in systemd/ is taken (node.adapters.units.templates()), so a daemon's unit added in
# its own branch is installed without a change here: one it does not name gets DEFAULT (a daemon of
# the main node, enabled at boot). A rule only says more where a daemon needs it: packages to
# install, a program that no package provides (its unit is enabled only once the program is there),
# the milo.toml keys that hand the daemon from the node (a child process) to its unit, and groups.

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from node.adapters.updates import PROGRAMS
from node.resources import data_dir

Role = Literal["main", "satellite", "screen"]
MAIN: frozenset[Role] = frozenset({"main"})


@dataclass(frozen=True)
class UnitRule:
    roles: frozenset[Role] = MAIN  # the unit file is written on these
    enabled: frozenset[Role] = MAIN  # and enabled (started at boot) on these; elsewhere the node starts it
    packages: tuple[str, ...] = ()
    program: str | None = None  # a context key naming a binary no package provides (go-librespot)
    hand_over: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # milo.toml, main node only
    groups: tuple[str, ...] = ()  # groups the user needs for it
    controlled: bool = True  # the node may start, stop and restart it (the polkit rule)
    instances: tuple[str, ...] = ()  # a template unit (name@.service): the instances the rule names
    # The rule lets the node only start it (a privileged step running as root): stopping it halfway
    # (an apt-get cut off mid-install) or resetting its failure (the step's result) is root's alone.
    start_only: bool = False


DEFAULT = UnitRule()
NODE_UNIT = "milo.service"

RULES: dict[str, UnitRule] = {
    # Controlled: after its own update the node restarts itself through systemd to run the new milo.
    NODE_UNIT: UnitRule(roles=frozenset({"main", "satellite"}), enabled=frozenset({"main", "satellite"})),
    "snapserver.service": UnitRule(packages=("snapserver",), hand_over={"multiroom": {"manage": "systemd"}}),
    # On the main node the multiroom subsystem starts its own client when multiroom is on; a satellite
    # plays nothing else.
    "snapclient.service": UnitRule(
        roles=frozenset({"main", "satellite"}),
        enabled=frozenset({"satellite"}),
        packages=("snapclient",),
        hand_over={"multiroom": {"manage": "systemd"}},
    ),
    "go-librespot.service": UnitRule(program="go_librespot", hand_over={"spotify": {"manage": "systemd"}}),
    "roc-recv.service": UnitRule(program="roc_recv", hand_over={"roc": {"manage": "systemd"}}),
    "shairport-sync.service": UnitRule(
        packages=("shairport-sync", "avahi-daemon"), hand_over={"airplay": {"service": "systemd"}}
    ),
    "bluealsa.service": UnitRule(packages=("bluez", "bluez-alsa-utils"), groups=("bluetooth",)),
    # An update's privileged step: never enabled, started by the node for one program at a time.
    "milo-update@.service": UnitRule(
        roles=frozenset({"main", "satellite"}),
        enabled=frozenset(),
        start_only=True,
        instances=tuple(f"milo-update@{n}.service" for n, p in PROGRAMS.items() if p.installable),
    ),
    "milo-kiosk.service": UnitRule(
        roles=frozenset({"screen"}),
        enabled=frozenset({"screen"}),
        packages=("cage", "chromium"),
        groups=("video", "render", "input"),
    ),
}


def rule(unit: str) -> UnitRule:
    return RULES.get(unit, DEFAULT)


def packages_file(unit: str) -> tuple[str, ...]:
    """Packages a template lists beside itself, systemd/<unit>.packages or <name>.packages, one a line."""
    folder = data_dir("systemd")
    found = [
        p for p in (folder / f"{unit}.packages", folder / f"{unit.rsplit('.', 1)[0]}.packages") if p.is_file()
    ]
    if not found:
        return ()
    path = found[0]
    words = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return tuple(w for w in words if w)
