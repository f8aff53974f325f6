"""The real machine's side of install and doctor: what it reads here, without changing anything."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from node import registry
from node.install import doctor
from node.install.system import RealSystem, kernel_clock_synced


def test_what_the_real_system_reads() -> None:
    system = RealSystem()
    assert system.package_installed("libmpv2")  # scripts/system-deps.sh installs it
    assert not system.package_installed("no-such-package-here")
    root = system.user("root")
    assert root is not None and root.uid == 0
    assert system.user("no-such-user-here") is None
    assert system.group_exists("audio") and not system.group_exists("no-such-group-here")
    assert system.owner("/") == "root"
    assert system.module_loaded("no_such_module") in (False, None)
    cards = system.cards()
    assert isinstance(cards, dict)
    assert kernel_clock_synced() in (True, False, None)


def test_install_needs_root_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    from node.install.plan import Options  # noqa: PLC0415
    from node.install.run import install  # noqa: PLC0415
    from node.install.system import InstallError  # noqa: PLC0415

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(InstallError, match="must run as root"):
        install(Options(node_id="x", milo="/opt/milo/bin/milo"), root=None, templates=(), subsystems=())


def test_doctor_on_this_machine_finds_no_install() -> None:
    if Path("/etc/milo/milo.toml").exists():
        pytest.skip("this machine has a milo install")
    out = io.StringIO()
    assert (
        doctor.run(root=None, config=Path("/etc/milo/milo.toml"), subsystems=registry.names(), out=out) == 1
    )
    assert "FAIL  config: /etc/milo/milo.toml is missing" in out.getvalue()
