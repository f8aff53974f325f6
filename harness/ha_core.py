"""A real Home Assistant core for the tests: its config dir, started headless, and its REST API."""

# Home Assistant 2025.4 takes the MQTT broker only from a config entry (the UI's flow), and its API only
# with a token: both are written into .storage before it starts, in the formats its own stores save
# (core.config_entries, auth), so it starts as an instance that was set up by hand would. Nothing it
# loads reaches the network: no default_config (no cloud, no zeroconf, no analytics), the location is
# given, and pip is never run (--skip-pip: everything it needs is in the venv).

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import websockets

from harness.ha_venv import ha_python
from harness.net import free_port

VERSION = "2025.4.4"
START_TIMEOUT = 90.0  # 3 to 10 s on an idle machine; much longer on a loaded one
POLL_S = 0.1  # between two looks at the REST API, which announces nothing

CONFIGURATION = """\
homeassistant:
  name: Milo test
  latitude: 48.85
  longitude: 2.35
  elevation: 35
  unit_system: metric
  time_zone: UTC
  country: FR
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {http_port}
api:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def access_token(refresh_token_id: str, jwt_key: str, lifetime_s: int = 3600) -> str:
    """What Home Assistant's auth checks an API call's bearer token against: an HS256 JWT it issued."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"iss": refresh_token_id, "iat": now, "exp": now + lifetime_s}).encode())
    signed = f"{header}.{claims}".encode()
    signature = hmac.new(jwt_key.encode(), signed, hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def _store(key: str, data: dict[str, Any], minor_version: int = 1) -> str:
    return json.dumps({"version": 1, "minor_version": minor_version, "key": key, "data": data}, indent=2)


def write_config(config_dir: Path, *, broker_port: int, http_port: int, prefix: str) -> str:
    """A config dir with the MQTT integration on 127.0.0.1:`broker_port`; the API's bearer token."""
    storage = config_dir / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(CONFIGURATION.format(http_port=http_port))
    now = datetime.now(UTC).isoformat()
    entry: dict[str, Any] = {
        "created_at": now,
        "data": {"broker": "127.0.0.1", "port": broker_port},
        "discovery_keys": {},
        "disabled_by": None,
        "domain": "mqtt",
        "entry_id": secrets.token_hex(13),
        "minor_version": 2,
        "modified_at": now,
        "options": {"discovery": True, "discovery_prefix": prefix},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "subentries": [],
        "title": "127.0.0.1",
        "unique_id": None,
        "version": 1,
    }
    (storage / "core.config_entries").write_text(_store("core.config_entries", {"entries": [entry]}, 5))
    user_id, token_id, jwt_key = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(64)
    auth = {
        "users": [
            {
                "id": user_id,
                "group_ids": ["system-admin"],
                "is_owner": True,
                "is_active": True,
                "name": "Milo tests",
                "system_generated": False,
                "local_only": False,
            }
        ],
        "groups": [],
        "credentials": [],
        "refresh_tokens": [
            {
                "id": token_id,
                "user_id": user_id,
                "client_id": None,
                "client_name": "milo tests",
                "client_icon": None,
                "token_type": "long_lived_access_token",
                "created_at": now,
                "access_token_expiration": 3600.0,
                "token": secrets.token_hex(64),
                "jwt_key": jwt_key,
                "last_used_at": None,
                "last_used_ip": None,
                "expire_at": None,
                "credential_id": None,
                "version": VERSION,
            }
        ],
    }
    (storage / "auth").write_text(_store("auth", auth))
    return access_token(token_id, jwt_key)


class Core:
    """A running Home Assistant and the calls the tests make to its REST API."""

    def __init__(self, process: asyncio.subprocess.Process, url: str, token: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.token = token
        self.log = log

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # only ever http://127.0.0.1
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        # In a thread: the node under test runs on this loop, and Home Assistant waits on its broker.
        return await asyncio.to_thread(self._request, method, path, body)

    async def states(self) -> dict[str, dict[str, Any]]:
        status, found = await self.call("GET", "/api/states")
        assert status == 200, found
        return {state["entity_id"]: state for state in found}

    async def until(
        self,
        condition: Callable[[Any], Any],
        timeout: float = 20.0,
        what: str = "",
        read: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """Poll `read()` (the states by default) until `condition` holds of what it read; its value."""
        read = read or self.states
        deadline = time.monotonic() + timeout
        while True:
            found = await read()
            if result := condition(found):
                return result
            if time.monotonic() > deadline:
                states = await self.states()
                mine = {k: v["state"] for k, v in states.items() if "milo" in k}
                raise AssertionError(f"Home Assistant: not within {timeout} s: {what}; states: {mine}")
            await asyncio.sleep(POLL_S)

    async def entity_registry(self) -> list[dict[str, Any]]:
        """Every entity Home Assistant registered (its websocket API: REST has no unique ids)."""
        async with websockets.connect(f"ws{self.url.removeprefix('http')}/api/websocket") as ws:
            assert json.loads(await ws.recv())["type"] == "auth_required"
            await ws.send(json.dumps({"type": "auth", "access_token": self.token}))
            assert json.loads(await ws.recv())["type"] == "auth_ok"
            await ws.send(json.dumps({"id": 1, "type": "config/entity_registry/list"}))
            answer = json.loads(await ws.recv())
            assert answer["success"], answer
            entries: list[dict[str, Any]] = answer["result"]
            return entries

    def problems(self) -> list[str]:
        """What Home Assistant logged about MQTT at warning or above (a payload refused, a template)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [
            line
            for line in text.splitlines()
            if (" ERROR " in line or " WARNING " in line) and "mqtt" in line.lower()
        ]


@contextlib.asynccontextmanager
async def home_assistant(
    config_dir: Path, *, broker_port: int, prefix: str = "homeassistant"
) -> AsyncIterator[Core]:
    """Home Assistant's core on 127.0.0.1, MQTT on `broker_port`; stopped (and waited for) on exit."""
    http_port = free_port()
    token = write_config(config_dir, broker_port=broker_port, http_port=http_port, prefix=prefix)
    log = config_dir / "home-assistant.log"
    process = await asyncio.create_subprocess_exec(
        str(ha_python()),
        "-m",
        "homeassistant",
        "--config",
        str(config_dir),
        "--skip-pip",
        "--log-no-color",
        "--log-file",
        str(log),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    core = Core(process, f"http://127.0.0.1:{http_port}", token, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.returncode is not None:
                raise AssertionError(f"Home Assistant exited ({process.returncode}):\n{_tail(log)}")
            with contextlib.suppress(OSError):
                status, _ = await core.call("GET", "/api/")
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"Home Assistant's API not up within {START_TIMEOUT} s:\n{_tail(log)}")
            await asyncio.sleep(POLL_S)
        yield core
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"
