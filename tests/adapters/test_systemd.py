"""The systemd adapter against a fake systemd1 on a private dbus-daemon (never the system bus)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from harness.systemd1 import DBusDaemon, FakeSystemd, FakeUnit
from node.adapters.systemd import JobFailedError, NotAllowedError, Systemd, SystemdError, UnitNotFoundError
from node.install.plan import polkit_rule

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dbus(tmp_path: Path) -> Iterator[DBusDaemon]:
    daemon = DBusDaemon(tmp_path).start()
    yield daemon
    daemon.stop()


@pytest.fixture
async def systemd1(dbus: DBusDaemon) -> AsyncIterator[FakeSystemd]:
    fake = FakeSystemd(dbus.address)
    fake.add(FakeUnit("snapserver.service"), allowed=True)
    fake.add(FakeUnit("go-librespot.service", fails=True), allowed=True)
    fake.add(FakeUnit("ssh.service", active=True))  # there, but not the node's
    await fake.start()
    yield fake
    await fake.stop()


async def test_start_stop_restart_and_status(systemd1: FakeSystemd) -> None:
    async with Systemd(systemd1.address) as sd:
        assert systemd1.subscribed == 1  # without Subscribe, systemd sends no JobRemoved
        before = await sd.status("snapserver.service")
        assert (before.load_state, before.active_state, before.unit_file_state) == (
            "loaded",
            "inactive",
            "enabled",
        )
        assert await sd.start("snapserver.service") == "done"
        assert (await sd.status("snapserver.service")).running
        assert await sd.restart("snapserver.service") == "done"
        assert await sd.stop("snapserver.service") == "done"
        after = await sd.status("snapserver.service")
        assert (after.active_state, after.sub_state) == ("inactive", "dead")
    assert systemd1.units["snapserver.service"].jobs == ["start", "restart", "stop"]


async def test_a_job_that_fails_says_so(systemd1: FakeSystemd) -> None:
    async with Systemd(systemd1.address) as sd:
        with pytest.raises(JobFailedError, match="failed") as caught:
            await sd.restart("go-librespot.service")
        assert caught.value.result == "failed"
        assert (await sd.status("go-librespot.service")).active_state == "failed"
        assert await sd.start("go-librespot.service", wait=False) == "queued"


async def test_polkit_refusals_and_unknown_units(systemd1: FakeSystemd) -> None:
    async with Systemd(systemd1.address) as sd:
        with pytest.raises(NotAllowedError, match=r"50-milo\.rules"):
            await sd.stop("ssh.service")
        assert systemd1.units["ssh.service"].active
        with pytest.raises(UnitNotFoundError):
            await sd.start("nothing.service")
        assert (await sd.status("nothing.service")).load_state == "not-found"
        with pytest.raises(SystemdError, match="not a unit name"):
            await sd.start("../../etc/passwd")


async def test_the_units_install_allows_are_the_ones_it_can_drive(systemd1: FakeSystemd) -> None:
    # The fake's `allowed` from the rule install renders: its units, and no other.
    rule = polkit_rule("milo", ["snapserver.service"])
    units = json.loads(re.search(r"var units = (\[.*?\]);", rule).group(1))  # type: ignore[union-attr]
    systemd1.allowed = set(units)
    async with Systemd(systemd1.address) as sd:
        assert await sd.start("snapserver.service") == "done"
        with pytest.raises(NotAllowedError):
            await sd.start("go-librespot.service")


async def test_no_bus_is_a_systemd_error(tmp_path: Path) -> None:
    with pytest.raises(SystemdError, match="D-Bus"):
        await Systemd(f"unix:path={tmp_path}/none.sock").connect()
    with pytest.raises(SystemdError, match="not connected"):
        await Systemd("unix:path=/nowhere").status("milo.service")


def test_no_sudo_anywhere_in_the_node() -> None:
    found = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "node").rglob("*")
        if p.is_file()
        and p.suffix in (".py", ".j2", ".toml", ".sh")
        and re.search(r"\bsudo\b", p.read_text())
    ]
    assert found == []
