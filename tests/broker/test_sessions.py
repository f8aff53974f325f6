"""Connected clients lose at once what users.json no longer gives them (`milo user` while the node runs)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from broker.auth import AuthPolicy, Grant, Login
from node.config import AuthOptions, TlsOptions
from node.framework import users as users_module
from node.framework.users import Users
from tests.broker.test_auth import STRICT, add_users, connack, connect_packet
from tests.conftest import NodeFactory
from tests.helpers import probe
from tests.http.test_tls import self_signed

TIMEOUT = 10.0
# The node looks at the file once a second (node/app.py USERS_WATCH_S): cut off well within this.
PROMPT_S = 3.0


class Link:
    """A real paho client on its own thread; `closed` is set when the broker drops the connection."""

    def __init__(
        self,
        port: int,
        *,
        transport: str = "tcp",
        login: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.connected: asyncio.Future[int] = self.loop.create_future()
        self.closed = asyncio.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"link-{uuid.uuid4().hex[:8]}",
            transport="websockets" if transport == "websockets" else "tcp",
            reconnect_on_failure=False,  # a dropped session must stay dropped for the test to see it
        )
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if tls is not None:
            self.client.tls_set_context(tls)
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        def settle() -> None:
            if not self.connected.done():
                self.connected.set_result(rc.value)

        self.loop.call_soon_threadsafe(settle)

    def _on_disconnect(self, _c: object, _u: object, _f: object, _rc: object, _p: object) -> None:
        self.loop.call_soon_threadsafe(self.closed.set)

    async def start(self) -> int:
        """Connect; the CONNACK's code (paho reports 3.1.1's 4 and 5 as 134 and 135)."""
        self.client.connect_async("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        return await asyncio.wait_for(self.connected, TIMEOUT)

    async def wait_closed(self) -> float:
        """Seconds until the broker closed the connection."""
        started = time.monotonic()
        await asyncio.wait_for(self.closed.wait(), TIMEOUT)
        return time.monotonic() - started

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def milo(*args: str, stdin: bytes = b"") -> None:
    """The real CLI, in a process of its own, as an admin runs it while the node runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode == 0, out.decode()


async def milo_add(data: Path, name: str, role: str, password: str) -> None:
    await milo("user", "add", name, "--role", role, "--password-stdin", "--data-dir", str(data),
               stdin=f"{password}\n".encode())  # fmt: skip


async def test_removing_a_user_closes_their_sessions_at_once(
    run_node: NodeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.auth")
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    data = tmp_path / "data"
    add_users(data)
    tls = TlsOptions(cert=cert, key=key, bind="127.0.0.1", mqtt_port=0, http_port=0)
    async with run_node(data_dir=data, auth=STRICT, tls=tls) as r:
        assert r.node.http_port is not None and r.node.mqtt_tls_port is not None
        alice = ("alice", "alice-pw")
        links = [
            Link(r.port, login=alice),
            Link(r.node.http_port, transport="websockets", login=alice),
            Link(r.node.mqtt_tls_port, login=alice, tls=context),
        ]
        bob = Link(r.port, login=("bob", "bob-pw"))
        try:
            for link in (*links, bob):
                assert await link.start() == 0
            await milo("user", "remove", "alice", "--data-dir", str(data))
            for link in links:
                assert await link.wait_closed() < PROMPT_S
            # Her reconnection is refused, on every listener; bob, untouched, still round-trips.
            assert await connack(r.port, connect_packet("again", "alice", "alice-pw")) == 4
            again = Link(r.node.http_port, transport="websockets", login=alice)
            assert await again.start() in (4, 134)
            again.stop()
            assert not bob.closed.is_set()
            async with probe(r.port, username="bob", password="bob-pw") as p:
                await p.subscribe(f"{r.base}/counter")
                await p.wait_for(f"{r.base}/counter")
            assert not bob.closed.is_set()
        finally:
            for link in (*links, bob):
                link.stop()
    said = [m for m in caplog.messages if "disconnected" in m and "'alice'" in m]
    assert len(said) == 3 and all("the user was removed" in m for m in said), said


async def test_a_new_password_or_role_logs_the_user_out(run_node: NodeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with run_node(data_dir=data, auth=STRICT) as r:
        link = Link(r.port, login=("alice", "alice-pw"))
        assert await link.start() == 0
        await milo_add(data, "alice", "control", "alice-new")
        assert await link.wait_closed() < PROMPT_S
        link.stop()
        assert await connack(r.port, connect_packet("old", "alice", "alice-pw")) == 4
        link = Link(r.port, login=("alice", "alice-new"))
        assert await link.start() == 0
        # A new role: out as well, and back in with the new role's rights only.
        await milo_add(data, "alice", "read", "alice-read")
        assert await link.wait_closed() < PROMPT_S
        link.stop()
        async with probe(r.port, username="alice", password="alice-read") as p:
            await p.subscribe(f"{r.base}/error")
            mark = p.mark()
            await p.publish(f"{r.base}/counter/set", "4")
            refusal = (await p.wait_for(f"{r.base}/error", after=mark)).json()
            assert refusal["code"] == "forbidden" and "read" in refusal["error"]


async def test_the_first_user_ends_anonymous_lan_sessions(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    async with run_node(data_dir=data, auth=AuthOptions()) as r:
        assert r.node.http_port is not None
        local = Link(r.port)
        assert await local.start() == 0
        # Tests run on 127.0.0.1 only: these two stand in for clients on the LAN.
        monkeypatch.setattr(r.node.policy, "is_local", lambda _address: False)
        lan = [Link(r.port), Link(r.node.http_port, transport="websockets")]
        try:
            for link in lan:
                assert await link.start() == 0  # a fresh install: the LAN controls without logging in
            await milo_add(data, "alice", "control", "pw")
            for link in lan:
                assert await link.wait_closed() < PROMPT_S
            assert await connack(r.port, connect_packet("lan-again")) == 5
            # The client on this host is left alone and still controls the node.
            monkeypatch.undo()
            assert not local.closed.is_set()
            async with probe(r.port) as p:
                await p.subscribe(f"{r.base}/counter")
                await p.publish(f"{r.base}/counter/set", "8")
                await p.wait_for(f"{r.base}/counter", lambda g: g.json()["value"] == 8)
            assert not local.closed.is_set()
        finally:
            for link in (local, *lan):
                link.stop()


def test_review_decides_from_the_file_as_it_is_now() -> None:
    users: dict[str, Login] = {"alice": Login("control", "h1")}
    exists = True

    async def nobody(_user: str, _password: str) -> Login | None:
        return None

    policy = AuthPolicy(
        verify=nobody,
        has_users=lambda: exists,
        lookup=lambda name: users.get(name) or "the user was removed",
        own_base="milo/main/",
    )
    alice = Grant("control", "alice", "alice", "h1")
    assert policy.review(alice) is alice
    users["alice"] = Login("control", "h2")
    assert policy.review(alice) == "its password changed"
    users["alice"] = Login("read", "h3")
    assert policy.review(alice) == "its role changed from control to read"
    del users["alice"]
    assert policy.review(alice) == "the user was removed"
    # Anonymous: on this host kept, only its right to act for other nodes follows the fresh-install rule.
    exists = False
    kiosk = Grant("control", "kiosk", local=True, other_bases=True)
    phone = Grant("control", "phone", local=False, other_bases=True)
    assert policy.review(kiosk) is kiosk and policy.review(phone) is phone
    exists = True
    narrowed = policy.review(kiosk)
    assert isinstance(narrowed, Grant) and narrowed.role == "control" and not narrowed.other_bases
    assert policy.review(phone) == "a user exists now: clients from the network must log in"


async def test_a_password_changed_while_a_login_is_checked_is_not_let_in(
    run_node: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    add_users(data)
    real = users_module.check_password
    changed = False

    def change_meanwhile(password: str, stored: str) -> bool:
        nonlocal changed
        if not changed:  # `milo user add` lands while the old password is being hashed
            changed = True
            Users(data).add("alice", "control", "alice-new")
        return real(password, stored)

    monkeypatch.setattr(users_module, "check_password", change_meanwhile)
    async with run_node(data_dir=data, auth=STRICT) as r:
        assert await connack(r.port, connect_packet("c1", "alice", "alice-pw")) == 4
        assert changed
        assert await connack(r.port, connect_packet("c2", "alice", "alice-pw")) == 4  # nor cached
        assert await connack(r.port, connect_packet("c3", "alice", "alice-new")) == 0


async def test_a_login_checked_before_a_change_but_started_after_it_is_closed(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with run_node(data_dir=data, auth=STRICT) as r:
        # Without the watch: only the check as the client's message loop starts can catch this one.
        assert r.node._users_watch is not None
        r.node._users_watch.cancel()
        verify = r.node.policy.verify

        async def then_changed(name: str, password: str) -> Login | None:
            login = await verify(name, password)
            Users(data).add("alice", "control", "alice-new")  # lands before the session starts
            return login

        r.node.policy.verify = then_changed
        link = Link(r.port, login=("alice", "alice-pw"))
        try:
            await link.start()
            await link.wait_closed()
        finally:
            link.stop()


async def test_a_damaged_users_file_locks_everyone_out(run_node: NodeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with (
        run_node(data_dir=data, auth=AuthOptions()) as r,
        probe(r.port) as watcher,  # anonymous on this host: not logged in, so left connected
    ):
        await watcher.subscribe(f"{r.base}/info")
        link = Link(r.port, login=("alice", "alice-pw"))
        try:
            assert await link.start() == 0
            (data / "users.json").write_text("[]")  # a hand edit gone wrong
            assert await link.wait_closed() < PROMPT_S
        finally:
            link.stop()
        info = await watcher.wait_for(
            f"{r.base}/info", lambda g: any("nobody can log in" in n for n in g.json()["notices"])
        )
        assert any("users.json" in n for n in info.json()["notices"])
        assert await connack(r.port, connect_packet("again", "alice", "alice-pw")) == 4
