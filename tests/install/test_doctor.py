"""`milo doctor` on a rendered tree (its simulated machine) and on a node running here on 127.0.0.1."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port
from node import registry
from node.cli import main
from node.install.doctor import Check, Doctor, diagnose, report
from node.install.plan import Options
from node.install.run import install
from node.install.system import SIMULATED_STATE, SimulatedSystem
from node.subsystems.info import Info
from tests.conftest import NodeFactory
from tests.fakes.counter import Counter
from tests.fakes.unplugged import Unplugged
from tests.install.test_install import MILO, pi_root

CONFIG = Path("/etc/milo/milo.toml")


def installed(tmp_path: Path, node_id: str = "living", **state: Any) -> Path:
    root = pi_root(tmp_path)
    opts = Options(node_id=node_id, milo=MILO, dac="hifiberry-dacplus")
    install(opts, root=root, templates=("milo.service",), subsystems=registry.names(), out=io.StringIO())
    if state:
        path = root / SIMULATED_STATE
        path.write_text(json.dumps({**json.loads(path.read_text()), **state}))
    return root


async def checks(root: Path, broker: str | None = None) -> dict[str, Check]:
    doctor = Doctor(SimulatedSystem(root), CONFIG, registry.names(), broker)
    return {c.name: c for c in await diagnose(doctor)}


async def test_a_fresh_install_is_fine_but_for_what_only_a_running_pi_has(tmp_path: Path) -> None:
    found = await checks(
        installed(tmp_path, cards={"Loopback": [], "sndrpihifiberry": ["Digital", "DSP Program"]})
    )
    levels = {name: c.level for name, c in found.items()}
    assert levels == {
        "config": "ok",
        "user": "ok",
        "data dir": "ok",
        "asound.conf": "warn",  # the node writes it when it starts
        "loopback": "ok",
        "sound card": "ok",
        "unit milo.service": "ok",
        "clock": "skip",
        "broker": "skip",
    }
    assert report(list(found.values()), io.StringIO()) == 0


async def test_what_is_wrong_comes_with_its_fix(tmp_path: Path) -> None:
    root = installed(tmp_path, cards={"Loopback": [], "vc4hdmi": ["PCM"]}, modules=[], enabled=[])
    (root / "etc/asound.conf").unlink()
    found = await checks(root)
    assert found["sound card"].level == "fail"
    assert "dtoverlay" in found["sound card"].fix
    assert (found["loopback"].level, found["loopback"].fix) == ("fail", "modprobe snd-aloop")
    assert found["unit milo.service"].fix == "systemctl enable --now milo.service"
    assert found["asound.conf"].fix == "ln -sfn /var/lib/milo/asound.conf /etc/asound.conf"
    out = io.StringIO()
    assert report(list(found.values()), out) == 1
    assert "FAIL  sound card: sndrpihifiberry not found (cards: Loopback, vc4hdmi)" in out.getvalue()
    assert "      fix: modprobe snd-aloop" in out.getvalue()


async def test_a_mixer_the_card_lacks(tmp_path: Path) -> None:
    found = await checks(installed(tmp_path, cards={"sndrpihifiberry": ["Master"]}))
    assert found["mixer"].level == "fail"
    assert "amixer -c sndrpihifiberry scontrols" in found["mixer"].fix


async def test_not_installed(tmp_path: Path) -> None:
    found = await checks(pi_root(tmp_path))
    assert list(found) == ["config"]
    assert found["config"].level == "fail" and "milo install" in found["config"].fix


async def test_a_running_node(tmp_path: Path, run_node: NodeFactory, node_id: str) -> None:
    root = installed(tmp_path, node_id=node_id)
    async with run_node(subsystems=(Info, Counter, Unplugged)) as running:
        found = await checks(root, broker=f"mqtt://127.0.0.1:{running.port}")
    assert found["broker"].level == "ok"
    assert found["node"].message == f"milo/{node_id} online"
    assert found["version"].message.startswith("milo ")
    assert found["subsystem unplugged"].level == "warn"
    assert "not there" in found["subsystem unplugged"].message
    assert "subsystem counter" not in found  # running: nothing to say


async def test_no_node_on_the_broker(tmp_path: Path, run_node: NodeFactory) -> None:
    root = installed(tmp_path, node_id="elsewhere")
    async with run_node() as running:
        found = await checks(root, broker=f"mqtt://127.0.0.1:{running.port}")
    assert found["broker"].level == "ok"
    assert found["node"].level == "fail" and "not there" in found["node"].message
    assert "journalctl -u milo" in found["node"].fix


async def test_no_broker(tmp_path: Path) -> None:
    found = await checks(installed(tmp_path), broker=f"mqtt://127.0.0.1:{free_port()}")
    assert found["broker"].level == "fail"
    assert "systemctl status milo" in found["broker"].fix


def test_the_cli_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = installed(tmp_path, cards={"sndrpihifiberry": ["Digital"]})
    assert main(["doctor", "--root", str(root)]) == 0
    assert "0 failed" in capsys.readouterr().out
    assert main(["doctor", "--root", str(tmp_path / "empty")]) == 1
    assert "FAIL  config" in capsys.readouterr().out
