"""Fixtures: a real mosquitto, nodes in-process on either broker, unique node ids, PulseAudio, ICY radio."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.icy_server import IcyServer, make_mp3
from harness.net import free_port
from harness.pulse import Pulse, running_pulse
from node.app import Node
from node.config import AuthOptions, NodeConfig
from node.framework.backoff import Backoff
from node.framework.subsystem import Subsystem
from node.subsystems.info import Info
from tests.fakes.counter import Counter

FAST = Backoff(first=0.05, cap=0.2, healthy=60.0)


@dataclass
class Mosquitto:
    port: int
    proc: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def start_mosquitto(workdir: Path, port: int | None = None) -> Mosquitto:
    port = port or free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "set_tcp_nodelay true\n"
        # stderr is unbuffered (stdout to a pipe is not, and "running" would never arrive).
        "log_dest stderr\n"
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
    )
    return Mosquitto(port, launch_mosquitto(conf))


def launch_mosquitto(conf: Path) -> subprocess.Popen[str]:
    """A real mosquitto on `conf` (which must log to stderr), returned once it says it is running."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    # Ready when it says so (its own log line), not after a guessed delay.
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if " running" in line:
            break
    else:
        raise RuntimeError("mosquitto did not start: " + "".join(lines))
    # Keep draining its log so a full pipe never blocks it.
    threading.Thread(target=lambda: [None for _ in proc.stderr or ()], daemon=True).start()
    return proc


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    m = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield m
    m.proc.terminate()
    m.proc.wait(10)


@pytest.fixture
def node_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Running:
    node: Node
    port: int  # where a test's MQTT client connects

    @property
    def base(self) -> str:
        return self.node.topics.base


NodeFactory = Callable[..., contextlib.AbstractAsyncContextManager[Running]]


@pytest.fixture
def run_node(tmp_path: Path, node_id: str, request: pytest.FixtureRequest) -> NodeFactory:
    """`async with run_node(kind, ...) as r:` starts a node in this event loop and stops it after."""

    @contextlib.asynccontextmanager
    async def factory(
        kind: str = "embedded",
        *,
        subsystems: Sequence[type[Subsystem[Any, Any]]] = (Info, Counter),
        sections: dict[str, dict[str, Any]] | None = None,
        data_dir: Path | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Running]:
        broker = None
        if kind == "mosquitto":
            broker = request.getfixturevalue("mosquitto").url
        # Tests stand in for other processes' subsystems (retained state from loopback): trusted as
        # a node, unless a test asks for the real policy (tests/broker/test_auth.py).
        overrides.setdefault("auth", AuthOptions(loopback_role="node"))
        config = NodeConfig(
            node_id=overrides.pop("node_id", node_id),
            data_dir=data_dir or tmp_path / "data",
            bind="127.0.0.1",
            mqtt_port=0,
            http_port=0,
            broker=broker,
            subsystems=sections or {},
            **overrides,
        )
        node = Node(config, subsystems, backoff=FAST)
        try:
            await node.start()
            port = node.mqtt_port if broker is None else request.getfixturevalue("mosquitto").port
            assert port is not None
            yield Running(node, port)
        finally:
            await node.stop()

    return factory


@pytest.fixture(scope="session", name="pulse_server")
def pulse_server_fixture() -> Iterator[Pulse]:
    with running_pulse() as pulse:
        yield pulse


@pytest.fixture(name="pulse")
def pulse_fixture(pulse_server: Pulse, monkeypatch: pytest.MonkeyPatch) -> Pulse:
    """The session's PulseAudio, selected through PULSE_SERVER, its `Master` back at 100 % and unmuted."""
    monkeypatch.setenv("PULSE_SERVER", pulse_server.server)
    pulse_server.set(65536, muted=False)
    return pulse_server


@pytest.fixture(scope="session")
def icy_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tone MP3 an `icy` server loops, encoded once per session (lame takes a while)."""
    return make_mp3(tmp_path_factory.mktemp("icy"))


@pytest.fixture
async def icy(icy_mp3: Path) -> AsyncIterator[IcyServer]:
    """A local paced ICY radio server on 127.0.0.1, fresh for each test (its counters start at 0)."""
    srv = await IcyServer(icy_mp3).start()
    yield srv
    await srv.close()
