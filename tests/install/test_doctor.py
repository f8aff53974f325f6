"""`milo doctor` on a rendered tree (its simulated machine) and on a node running here on 127.0.0.1."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port
from node import registry
from node.app import Node
from node.cli import main
from node.config import AuthOptions, load
from node.framework.users import Users
from node.install.doctor import Check, Doctor, diagnose, report
from node.install.plan import Options
from node.install.run import install
from node.install.system import SIMULATED_STATE, SimulatedSystem
from node.subsystems.info import Info
from tests.conftest import FAST, NodeFactory
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


# A satellite on a main node that has users: the LAN logs in (here `anonymous = "none"` stands for it,
# every test client being on loopback), the satellite as a `node` user.
LAN_LOGIN = AuthOptions(anonymous="none")
PASSWORD = "kitchen pw: long enough"


def satellite(tmp_path: Path, port: int, **login: Any) -> Path:
    root = pi_root(tmp_path) if not (tmp_path / "root").exists() else tmp_path / "root"
    opts = Options(
        node_id="kitchen", milo=MILO, dac="hifiberry-amp", satellite=True, main=f"127.0.0.1:{port}", **login
    )
    install(opts, root=root, templates=("milo.service",), subsystems=registry.names(), out=io.StringIO())
    return root


async def test_a_satellite_logs_in_to_a_main_node_with_users(tmp_path: Path, run_node: NodeFactory) -> None:
    data = tmp_path / "main"
    Users(data).add("kitchen", "node", PASSWORD)
    async with run_node(data_dir=data, auth=LAN_LOGIN) as main_node:
        root = satellite(tmp_path, main_node.port, broker_user="kitchen", broker_password=PASSWORD)
        # The password is in its own file, the node user's, 0600; nowhere else in the tree.
        config = (root / "etc/milo/milo.toml").read_text()
        assert f'broker = "mqtt://kitchen@127.0.0.1:{main_node.port}"' in config
        assert 'broker_password_file = "/etc/milo/broker.password"' in config
        secret = root / "etc/milo/broker.password"
        assert secret.read_text() == f"{PASSWORD}\n" and secret.stat().st_mode & 0o777 == 0o600
        assert (
            json.loads((root / SIMULATED_STATE).read_text())["owners"]["/etc/milo/broker.password"] == "milo"
        )
        others = [p for p in root.rglob("*") if p.is_file() and p != secret]
        assert [p for p in others if PASSWORD.encode() in p.read_bytes()] == []

        found = await checks(root)
        assert found["broker"].level == "ok", found["broker"]
        assert found["broker"].message.endswith("user kitchen accepted")
        assert "broker login" not in found
        assert found["node"].level == "fail"  # the satellite's own milo does not run here yet...
        assert "a `node` user" in found["node"].fix

        # ...and once it does, with that file, it publishes under its own id on the main node's broker.
        cfg = load(subsystem_names=registry.names(), config_file=root / "etc/milo/milo.toml", env={}, cli={})
        sat = Node(
            cfg.model_copy(
                update={
                    "data_dir": tmp_path / "sat-data",
                    "broker_password_file": secret,
                    "http_port": 0,
                    "bind": "127.0.0.1",
                    "only": [],
                }
            ),
            (Info,),
            backoff=FAST,
        )
        await sat.start()
        try:
            found = await checks(root)
        finally:
            await sat.stop()
        assert (found["node"].level, found["node"].message) == ("ok", "milo/kitchen online")

        # A wrong password: refused by the CONNACK, and said so with where to fix it.
        secret.write_text("not the password\n")
        found = await checks(root)
        assert found["broker"].level == "fail"
        assert "refused user kitchen: wrong user name or password (CONNACK 4)" in found["broker"].message
        assert "milo user add kitchen --role node" in found["broker"].fix
        assert "node" not in found

        # No file at all: the node cannot log in, said before any connection is tried.
        secret.unlink()
        found = await checks(root)
        assert found["broker login"].level == "fail"
        assert "broker_password_file /etc/milo/broker.password is missing" in found["broker login"].message
        assert "--broker-user kitchen --broker-password-file FILE" in found["broker login"].fix
        assert "broker" not in found

        # Readable by others: works, with a warning.
        satellite(tmp_path, main_node.port, broker_user="kitchen", broker_password=PASSWORD)
        secret.chmod(0o644)
        found = await checks(root)
        assert found["broker login"].level == "warn" and found["broker login"].fix.startswith("chmod 600")
        assert found["broker"].level == "ok"

        # Installed again without a login: the file goes, and the broker wants one.
        satellite(tmp_path, main_node.port)
        assert not secret.exists()
        assert "broker_password_file" not in (root / "etc/milo/milo.toml").read_text()
        found = await checks(root)
        assert found["broker"].level == "fail"
        assert "refused an anonymous client (CONNACK 5, not authorized)" in found["broker"].message
        assert "that node has users" in found["broker"].message
        assert "--broker-user NAME --broker-password-file FILE" in found["broker"].fix


async def test_a_broker_that_never_answers(tmp_path: Path) -> None:
    # A socket that accepts and says nothing (a firewall's drop looks the same): no CONNACK, not "ok".
    import asyncio  # noqa: PLC0415

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        doctor = Doctor(
            SimulatedSystem(installed(tmp_path)), CONFIG, registry.names(), f"mqtt://127.0.0.1:{port}"
        )
        doctor.check_config()
        await doctor.check_broker(timeout=0.5)
    finally:
        server.close()
    found = {c.name: c for c in doctor.checks}
    assert found["broker"].level == "fail" and "no CONNACK within 0.5 s" in found["broker"].message
