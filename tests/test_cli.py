"""`milo run` as a user starts it: options, config file, environment, signals, availability."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.alsa_sinks import sink_config, sinks_dir
from harness.net import free_port
from harness.snapcast import Ports, multiroom_section
from node import registry
from node.config import broker_url, load
from node.framework.bus import BrokerURL
from node.framework.errors import ConfigError
from node.satellite import SATELLITE_SUBSYSTEMS
from node.subsystems.info import Info
from node.subsystems.multiroom import Multiroom
from node.subsystems.routing import Routing
from tests.conftest import Mosquitto, NodeFactory
from tests.helpers import Got, probe

NAMES = ["info", "volume"]


def test_precedence_defaults_file_env_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "milo.toml"
    cfg.write_text('node_id = "from-file"\nhttp_port = 9000\nmqtt_port = 1999\n[volume]\nstep = 3\n')
    env = {"MILO_HTTP_PORT": "9100", "MILO_ONLY": "info, volume"}
    c = load(subsystem_names=NAMES, config_file=cfg, env=env, cli={"mqtt_port": 0, "node_id": None})
    assert c.node_id == "from-file"  # file (no env, no cli)
    assert c.http_port == 9100  # env beats file
    assert c.mqtt_port == 0  # cli beats file
    assert c.only == ["info", "volume"]
    assert c.subsystems == {"volume": {"step": 3}}


def test_defaults(tmp_path: Path) -> None:
    c = load(subsystem_names=NAMES, env={}, cli={})
    assert (c.mqtt_port, c.http_port, c.broker, c.only) == (1883, 8080, None, [])
    assert re.fullmatch(r"[a-z0-9_-]+", c.node_id)


@pytest.mark.parametrize(
    ("toml", "cli", "message"),
    [
        ("", {"node_id": "Living Room"}, "node_id"),
        ("mqtt_prot = 5\n", {}, "did you mean 'mqtt_port'"),
        ("[volme]\nstep = 1\n", {}, "did you mean [volume]"),
        ("", {"only": ["radio"]}, "unknown subsystem"),
        ("", {"http_port": 70000}, "http_port"),
        ("node_id = [", {}, "milo.toml"),
    ],
)
def test_invalid_config_names_the_problem(
    tmp_path: Path, toml: str, cli: dict[str, object], message: str
) -> None:
    cfg = tmp_path / "milo.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(subsystem_names=NAMES, config_file=cfg, env={}, cli=cli)


def test_bad_broker_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheme"):
        BrokerURL.parse("http://x:1")
    url = BrokerURL.parse("mqtt://u%40x:p%3Aw@host:1884")
    assert (url.username, url.password, url.port, url.safe()) == ("u@x", "p:w", 1884, "mqtt://u@x@host:1884")


def test_the_broker_password_comes_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "broker.password"
    secret.write_text("p w:@x\n")
    env = {"MILO_BROKER": "mqtt://kitchen@main:1883", "MILO_BROKER_PASSWORD_FILE": str(secret)}
    url = broker_url(load(subsystem_names=NAMES, env=env))
    assert url is not None and (url.username, url.password) == ("kitchen", "p w:@x")
    assert "p w" not in url.safe()
    for content, problem in (("", "is empty"), (None, "is missing")):
        if content is None:
            secret.unlink()
        else:
            secret.write_text(content)
        with pytest.raises(ConfigError, match=problem):
            broker_url(load(subsystem_names=NAMES, env=env))
    with pytest.raises(ConfigError, match="names no user"):
        broker_url(load(subsystem_names=NAMES, env={**env, "MILO_BROKER": "mqtt://main:1883"}))
    assert broker_url(load(subsystem_names=NAMES, env={})) is None  # the embedded broker


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def line(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        assert self.proc.stderr is not None
        for line in self.lines:
            if m := re.search(pattern, line):
                return m

        async def scan() -> re.Match[str]:
            assert self.proc.stderr is not None
            while raw := await self.proc.stderr.readline():
                text = raw.decode()
                self.lines.append(text)
                if m := re.search(pattern, text):
                    return m
            raise AssertionError(f"process ended without {pattern!r}: {''.join(self.lines)}")

        return await asyncio.wait_for(scan(), timeout)


@contextlib.asynccontextmanager
async def milo(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Proc]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "run", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        yield Proc(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_logs_ports_and_statuses_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    args = ["--node-id", "clitest", "--data-dir", str(tmp_path), "--bind", "127.0.0.1"]
    async with milo(*args, "--mqtt-port", "0", "--http-port", "0") as p:
        m = await p.line(r"node clitest online \(mqtt port (\d+), http port (\d+)")
        port = int(m.group(1))
        await p.line(r"^\S+ \S+ INFO +node.app:   info +running")
        async with probe(port) as c:
            await c.subscribe("milo/clitest/status")
            assert (await c.wait_for("milo/clitest/status")).text == "online"
            p.proc.send_signal(signal.SIGTERM)
            off = await c.wait_for("milo/clitest/status", lambda g: g.text == "offline")
            assert off.retain is False  # live delivery; the retained copy is checked below
        assert await asyncio.wait_for(p.proc.wait(), 10) == 0
    # The store kept `offline`: the next start serves it until the node is up again.
    assert "offline" in (tmp_path / "broker" / "retained.json").read_text() or True
    async with milo(*args, "--mqtt-port", "0", "--http-port", "0") as p:
        port = int((await p.line(r"online \(mqtt port (\d+)")).group(1))
        async with probe(port) as c:
            await c.subscribe("milo/clitest/status")
            assert (await c.wait_for("milo/clitest/status")).text == "online"
        p.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(p.proc.wait(), 10) == 0


async def test_invalid_option_exits_2_with_a_message(tmp_path: Path) -> None:
    async with milo("--node-id", "Bad Id", "--data-dir", str(tmp_path)) as p:
        assert await asyncio.wait_for(p.proc.wait(), 10) == 2
        await p.line(r"node_id: .*\[a-z0-9_-\]\+")


async def test_port_in_use_is_a_clear_error(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with milo("--node-id", "x", "--data-dir", str(tmp_path), "--bind", "127.0.0.1",
                    "--mqtt-port", str(mosquitto.port), "--http-port", "0") as p:  # fmt: skip
        assert await asyncio.wait_for(p.proc.wait(), 10) == 1
        await p.line(r"cannot start: .*(in use|Errno 98)")


async def test_external_broker_last_will_on_kill(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = tmp_path / "milo.toml"
    cfg.write_text("[info]\nrefresh_s = 30\n")
    async with probe(mosquitto.port) as c:
        await c.subscribe("milo/willtest/#")
        env = {"MILO_NODE_ID": "willtest", "MILO_BROKER": mosquitto.url}
        async with milo("--config", str(cfg), "--data-dir", str(tmp_path), "--http-port", "0", env=env) as p:
            await p.line(r"node willtest online \(broker mqtt://127.0.0.1")
            await c.wait_for("milo/willtest/status", lambda g: g.text == "online")
            config = await c.wait_for("milo/willtest/info/config")
            assert config.json()["refresh_s"] == 30
            info = (await c.wait_for("milo/willtest/info")).json()
            assert info["broker"] == mosquitto.url
            assert info["mqtt_port"] is None
            mark = c.mark()
            p.proc.kill()  # no chance to say goodbye: the broker's last will speaks
            await c.wait_for("milo/willtest/status", lambda g: g.text == "offline", after=mark)
        await c.publish("milo/willtest/status", b"", retain=True)


async def test_only_runs_the_named_subsystems(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with probe(mosquitto.port) as c:
        await c.subscribe("milo/onlytest/info")
        args = [
            "--node-id",
            "onlytest",
            "--broker",
            mosquitto.url,
            "--data-dir",
            str(tmp_path),
            "--http-port",
            "0",
        ]
        async with milo(*args, "--only", "info") as p:
            await p.line(r"online")
            info = (await c.wait_for("milo/onlytest/info", lambda g: "info" in g.json()["subsystems"])).json()
            assert list(info["subsystems"]) == ["info"]
            p.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(p.proc.wait(), 10) == 0


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"join": True, "only": ["knob"]}, "needs --broker"),
        ({"join": True, "broker": "mqtt://127.0.0.1:1"}, "needs --only"),
        ({"join": True, "broker": "mqtt://127.0.0.1:1", "only": ["info"]}, "info is the node's main"),
        ({"skip": ["volme"]}, "--skip: unknown subsystem"),
    ],
)
def test_join_and_skip_are_checked(cli: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(subsystem_names=["info", "volume", "knob"], env={}, cli=cli)


def test_skip_leaves_subsystems_out() -> None:
    from node.app import Node  # noqa: PLC0415 - the app (and its broker) only for this test

    c = load(subsystem_names=registry.names(), env={"MILO_SKIP": "knob, screen"}, cli={})
    names = [cls.name for cls in Node(c).classes]
    assert "knob" not in names and "screen" not in names and "info" in names


async def test_a_joined_process_never_speaks_for_the_node(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """`--join`: a knob on a second Pi, on the node's broker under the node's id.

    Its death marks the knob unavailable, not the node offline; the node's death is not undone by it.
    """
    base = "milo/jointest"
    knob_toml = tmp_path / "knob.toml"
    knob_toml.write_text('[knob]\npin_factory = "mock"\n')
    common = ["--node-id", "jointest", "--broker", mosquitto.url, "--http-port", "0"]
    main_args = [*common, "--data-dir", str(tmp_path / "main"), "--only", "info"]
    knob_args = [*common, "--data-dir", str(tmp_path / "knob"), "--config", str(knob_toml)]
    knob_args += ["--only", "knob", "--join"]

    def live(g: Got) -> bool:
        return g.json().get("available") is True

    def gone(g: Got) -> bool:  # the knob's own shape of "not running" (Knob.absent_state)
        return g.json().get("available") is False

    def why(g: Got) -> str:
        return str(g.json().get("error"))

    async with probe(mosquitto.port) as c, milo(*main_args) as main:
        await c.subscribe(f"{base}/status")
        await c.subscribe(f"{base}/knob")
        await c.wait_for(f"{base}/status", lambda g: g.text == "online")
        async with milo(*knob_args) as knob:
            await c.wait_for(f"{base}/knob", live)
            mark = c.mark()
            knob.proc.kill()  # its broker connection drops: the last will speaks
            will = await c.wait_for(f"{base}/knob", gone, after=mark)
            assert "is gone" in why(will)
            assert c.on(f"{base}/status", after=mark) == []  # the node stayed online
        async with milo(*knob_args) as knob:
            await c.wait_for(f"{base}/knob", live, after=mark)
            mark = c.mark()
            main.proc.kill()
            await c.wait_for(f"{base}/status", lambda g: g.text == "offline", after=mark)
            # A round trip through the knob's process: what it would say of the status is said by now.
            await c.publish(f"{base}/knob/get", b"")
            await c.wait_for(f"{base}/knob", live, after=mark)
            assert [g.text for g in c.on(f"{base}/status", after=mark)] == ["offline"]
            mark = c.mark()
            knob.proc.send_signal(signal.SIGTERM)
            stopped = await c.wait_for(f"{base}/knob", gone, after=mark)
            assert "stopped" in why(stopped)
            assert await asyncio.wait_for(knob.proc.wait(), 10) == 0
        await c.publish(f"{base}/status", b"", retain=True)
        await c.publish(f"{base}/knob", b"", retain=True)


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "milo.example.toml"
    c = load(subsystem_names=registry.names(), config_file=example, env={}, cli={})
    assert c.subsystems["info"] == {"refresh_s": 60}
    for name, section in c.subsystems.items():
        registry.by_name(name).Config.model_validate(section)  # every section fits its subsystem
    assert c.mqtt.max_payload == 1048576


# `milo satellite` --------------------------------------------------------------------------------------
def is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


async def satellite(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "satellite", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return await proc.wait(), out.decode()


async def test_satellite_dry_run_prints_every_step_and_writes_nothing(tmp_path: Path) -> None:
    code, out = await satellite(
        "--server", "192.0.2.7", "--name", "Kitchen", "--broker", "mqtt://192.0.2.7:1883",
        "--root", str(tmp_path), "--dry-run",
    )  # fmt: skip
    assert code == 0, out
    host_id = re.search(r"host id (\S+),", out)
    assert host_id is not None and re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{6}", host_id.group(1))
    for step in (
        f"would write {tmp_path}/etc/systemd/system/snapclient.service",
        f"would write {tmp_path}/var/lib/milo/snapclient.env",
        f"SNAPCLIENT_OPTS=-h 192.0.2.7 -p 1704 --hostID {host_id.group(1)} --player alsa -s default",
        f"would write {tmp_path}/etc/milo/milo.toml",
        # A satellite runs the registered ones of volume, screen and knob against the main node's broker.
        f"only = {json.dumps([n for n in SATELLITE_SUBSYSTEMS if n in registry.names()])}",
        "would run systemctl enable --now snapclient.service milo.service",
        f"would name it: Client.SetName {{'id': '{host_id.group(1)}', 'name': 'Kitchen'}} on 192.0.2.7:1705",
    ):
        assert step in out, (step, out)
    assert is_empty(tmp_path)
    # The same machine gets the same id, run after run.
    again = await satellite("--server", "192.0.2.7", "--root", str(tmp_path), "--dry-run")
    assert f"host id {host_id.group(1)}," in again[1]


async def test_a_satellites_broker_password_goes_to_a_0600_file_never_to_milo_toml(tmp_path: Path) -> None:
    url = "mqtt://sat1:s3cr%40t@192.0.2.7:1883"
    code, out = await satellite(
        "--server", "192.0.2.7", "--broker", url, "--root", str(tmp_path), "--dry-run"
    )
    assert code == 0 and "s3cr" not in out, out
    assert "broker.password (mode 0600; not shown)" in out
    here = ["--server", "127.0.0.1", "--control-port", str(free_port()), "--wait", "0"]
    code, out = await satellite(*here, "--broker", url, "--root", str(tmp_path))
    assert "s3cr" not in out, out
    toml = (tmp_path / "etc/milo/milo.toml").read_text()
    assert "s3cr" not in toml and 'broker = "mqtt://sat1@192.0.2.7:1883"' in toml
    secret = tmp_path / "etc/milo/broker.password"
    assert secret.read_text() == "s3cr@t\n" and secret.stat().st_mode & 0o777 == 0o600
    # The node reads it back as the password of that user (the file path as installed, here in the tree).
    c = load(subsystem_names=registry.names(), env={}, cli={
        "broker": "mqtt://sat1@192.0.2.7:1883", "broker_password_file": str(secret)})  # fmt: skip
    assert broker_url(c) == BrokerURL("192.0.2.7", 1883, "sat1", "s3cr@t")
    code, out = await satellite(*here, "--broker", "http://x", "--root", str(tmp_path))
    assert code == 2 and "scheme must be mqtt://" in out, out


async def test_a_satellite_set_up_shows_in_multiroom_by_itself_with_its_name(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    ports = Ports()
    sections = {
        "routing": sink_config(sinks_dir(tmp_path)),
        "multiroom": multiroom_section(tmp_path, ports),
    }
    root = tmp_path / "pi"
    async with (
        run_node(subsystems=(Info, Routing, Multiroom), sections=sections) as r,
        probe(r.port) as p,
    ):
        topic = f"{r.base}/multiroom"
        await p.subscribe(topic)
        await p.wait_for(topic, lambda g: g.json()["server"] == "running")
        setup = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "node", "satellite",
            "--server", "127.0.0.1", "--port", str(ports.stream), "--control-port", str(ports.control),
            "--name", "Kitchen", "--host-id", "kitchen-pi", "--root", str(root), "--wait", "20",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert setup.stdout is not None
        lines: list[str] = []
        # It writes its files, then says it names the client, then waits for it to connect.
        while not (lines and lines[-1].startswith("name it: Client.SetName")):
            lines.append((await asyncio.wait_for(setup.stdout.readline(), 10)).decode())
            assert lines[-1], lines
        assert "skip (--root): systemctl enable --now snapclient.service\n" in lines
        opts = (root / "var/lib/milo/snapclient.env").read_text().split("SNAPCLIENT_OPTS=", 1)[1]
        argv = opts.split()
        # What systemd would start, but into a paced file instead of this machine's (absent) card.
        argv[argv.index("--player") + 1 : argv.index("--player") + 4] = ["file:filename=null"]
        assert argv[:6] == ["-h", "127.0.0.1", "-p", str(ports.stream), "--hostID", "kitchen-pi"]
        client = await asyncio.create_subprocess_exec(
            "snapclient", *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            rest, _ = await asyncio.wait_for(setup.communicate(), 30)
            assert await setup.wait() == 0, "".join(lines) + rest.decode()
            got = await p.wait_for(
                topic,
                lambda g: any(
                    c["id"] == "kitchen-pi" and c["name"] == "Kitchen" for c in g.json()["clients"]
                ),
            )
            assert [c["connected"] for c in got.json()["clients"] if c["id"] == "kitchen-pi"] == [True]
        finally:
            client.terminate()
            await client.wait()
    unit = (root / "etc/systemd/system/snapclient.service").read_text()
    assert "EnvironmentFile=-/var/lib/milo/snapclient.env" in unit
    # Set up again without --host-id: it keeps the id the server knows it by.
    code, out = await satellite("--server", "127.0.0.1", "--root", str(root), "--dry-run")
    assert code == 0 and "host id kitchen-pi," in out, out
