"""A D-Bus address that surely leads nowhere is told without dbus-fast; anything else is left to a try."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.adapters.dbus_address import BusError, missing


def test_a_unix_socket_that_is_not_there_is_missing(tmp_path: Path) -> None:
    error = missing(f"unix:path={tmp_path}/none.sock")
    assert isinstance(error, BusError)
    assert (
        str(error) == f"cannot connect to unix:path={tmp_path}/none.sock: no socket at {tmp_path}/none.sock"
    )


def test_a_socket_that_is_there_is_tried(tmp_path: Path) -> None:
    (tmp_path / "bus").touch()
    assert missing(f"unix:path={tmp_path}/bus,guid=0123") is None


@pytest.mark.parametrize(
    "address", ["unix:abstract=/tmp/dbus-x", "tcp:host=127.0.0.1,port=1", "unix:path=/nope;tcp:host=h,port=1"]
)
def test_other_transports_are_left_to_the_connection(address: str) -> None:
    assert missing(address) is None


def test_the_system_bus_is_dbus_fasts_default_or_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/system.sock")
    error = missing("")
    assert error is not None
    assert str(error) == f"cannot connect to the system bus: no socket at {tmp_path}/system.sock"
    (tmp_path / "system.sock").touch()
    assert missing("") is None
