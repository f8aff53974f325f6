"""A real Node-RED for the example flows: installed by scripts/node-red.sh, headless, on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from harness.ha_venv import installed_by
from harness.net import free_port
from node.adapters.http_client import http_request

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "examples" / "node-red"
# The first install downloads Node-RED and Dashboard 2 (about 2 minutes); later runs find the cache.
INSTALL_TIMEOUT = 900
START_TIMEOUT = 60.0
READY_LINE = "Server now running at"

# Its own userDir, no palette installs, no telemetry or update check (nothing leaves the machine),
# no credential encryption (there are no credentials), the editor and the dashboard on loopback only.
SETTINGS = """module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    flowFile: "flows.json",
    credentialSecret: false,
    telemetry: {{ enabled: false }},
    diagnostics: {{ enabled: false }},
    externalModules: {{ autoInstall: false, palette: {{ allowInstall: false }} }},
    logging: {{ console: {{ level: "info" }} }},
}};
"""


@cache
def red_js() -> Path:
    """Node-RED's red.js in the cached install, `npm ci`-ed first when missing or stale."""
    return installed_by("node-red.sh", INSTALL_TIMEOUT)


def flow(name: str) -> list[dict[str, Any]]:
    """One example flow file, as Node-RED's import would read it."""
    nodes: list[dict[str, Any]] = json.loads((FLOWS / name).read_text())
    return nodes


def pointed_at(nodes: list[dict[str, Any]], port: int, host: str = "127.0.0.1") -> list[dict[str, Any]]:
    """The flow with every mqtt-broker config node rewritten to `host:port` (what a user edits)."""
    return [{**n, "broker": host, "port": str(port)} if n["type"] == "mqtt-broker" else n for n in nodes]


def with_ping(nodes: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    """The flow plus an echo `<token>/ping` -> `<token>/pong` on its broker connection, subscribed last.

    A pong proves the broker has taken every SUBSCRIBE of that connection (they are sent in order) and
    Node-RED has had the retained states they brought, so a test's next event is not missed.
    """
    tab = next(n["id"] for n in nodes if n["type"] == "tab")
    broker = next(n["id"] for n in nodes if n["type"] == "mqtt-broker")
    return [
        *nodes,
        {"id": f"{token}-in", "type": "mqtt in", "z": tab, "topic": f"{token}/ping", "qos": "1",
         "datatype": "utf8", "broker": broker, "nl": False, "rap": True, "rh": 0, "inputs": 0,
         "wires": [[f"{token}-to"]]},
        {"id": f"{token}-to", "type": "change", "z": tab, "rules": [
            {"t": "set", "p": "topic", "pt": "msg", "to": f"{token}/pong", "tot": "str"}],
         "wires": [[f"{token}-out"]]},
        {"id": f"{token}-out", "type": "mqtt out", "z": tab, "topic": "", "qos": "1", "retain": "false",
         "broker": broker, "wires": []},
    ]  # fmt: skip


class NodeRed:
    """One Node-RED process with its own userDir; flows are deployed through the admin API."""

    def __init__(self, user_dir: Path) -> None:
        self.user_dir = user_dir
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NodeRed:
        self.user_dir.mkdir(parents=True, exist_ok=True)
        settings = self.user_dir / "settings.js"
        settings.write_text(SETTINGS.format(port=self.port))
        self.proc = subprocess.Popen(
            ["node", str(red_js()), "--userDir", str(self.user_dir), "--settings", str(settings)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        running = threading.Event()

        def drain() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                if READY_LINE in line:
                    running.set()
            running.set()  # it ended: stop waiting, the check below says why

        threading.Thread(target=drain, daemon=True).start()
        if not running.wait(START_TIMEOUT) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("Node-RED did not start:\n" + "".join(self.log[-40:]))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    async def deploy(self, nodes: list[dict[str, Any]]) -> None:
        """Replace every flow with `nodes` (a full deploy, as the editor's Deploy button does)."""
        answer = await http_request(
            "POST",
            f"{self.url}/flows",
            headers={"Content-Type": "application/json", "Node-RED-Deployment-Type": "full"},
            body=json.dumps(nodes).encode(),
            timeout=20,
        )
        assert answer.status in (200, 204), (answer.status, answer.body[:500], self.tail())

    async def flows(self) -> list[dict[str, Any]]:
        answer = await http_request("GET", f"{self.url}/flows", timeout=10)
        assert answer.status == 200, answer.status
        nodes: list[dict[str, Any]] = json.loads(answer.body)
        return nodes

    async def inject(self, node_id: str) -> None:
        """Press an inject node's button (what the editor does)."""
        answer = await http_request("POST", f"{self.url}/inject/{node_id}", timeout=10)
        assert answer.status == 200, (answer.status, answer.body[:500], self.tail())

    def tail(self) -> str:
        return "".join(self.log[-30:])


@contextmanager
def node_red(user_dir: Path) -> Iterator[NodeRed]:
    red = NodeRed(user_dir).start()
    try:
        yield red
    finally:
        red.stop()


def token() -> str:
    return f"nodered-test/{uuid.uuid4().hex[:12]}"
