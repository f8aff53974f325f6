"""Whether a D-Bus address can be reached at all, told without dbus-fast (which costs ~3 MB resident)."""

# A node without a system bus (a container, a laptop, a Pi without BlueZ installed) then never loads
# dbus-fast: the Bluetooth source asks here first, and again on each of its retries.

from __future__ import annotations

import os
from pathlib import Path

from node.framework.errors import DaemonError

# dbus-fast's default for BusType.SYSTEM when DBUS_SYSTEM_BUS_ADDRESS is not set (its _private/address.py).
SYSTEM_BUS = "unix:path=/var/run/dbus/system_bus_socket"


class BusError(DaemonError):
    """The bus cannot be reached, or the connection to it was lost."""


def describe(address: str) -> str:
    return address or "the system bus"


def missing(address: str = "") -> BusError | None:
    """Why `address` (or the system bus when empty) cannot be reached, when that is sure without trying.

    Only a plain `unix:path=` socket that is not there is sure; every other transport (abstract sockets,
    tcp, several addresses) is left to the real connection attempt.
    """
    effective = address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS
    if ";" in effective or not effective.startswith("unix:"):
        return None
    options = dict(part.partition("=")[::2] for part in effective.removeprefix("unix:").split(","))
    path = options.get("path")
    if path is None or Path(path).exists():
        return None
    return BusError(f"cannot connect to {describe(address)}: no socket at {path}")
