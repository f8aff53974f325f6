"""Users and roles on the real embedded broker: CONNECT return codes, what each role may publish and read."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import struct
from pathlib import Path

import aiomqtt
import pytest

from broker.auth import AuthPolicy, Grant
from node import cli
from node.config import AuthOptions
from node.framework import users as users_module
from node.framework.users import Users, check_password, hash_password
from tests.conftest import NodeFactory
from tests.helpers import probe

STRICT = AuthOptions(anonymous="none")


def _field(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return struct.pack("!H", len(raw)) + raw


def connect_packet(
    client_id: str,
    user: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes, bool] | None = None,
) -> bytes:
    flags = 0x02
    payload = _field(client_id)
    if will is not None:
        flags |= 0x04 | (0x20 if will[2] else 0)
        payload += _field(will[0]) + _field(will[1])
    if user is not None:
        flags |= 0x80
        payload += _field(user)
    if password is not None:
        flags |= 0x40
        payload += _field(password)
    body = _field("MQTT") + bytes((4, flags)) + struct.pack("!H", 30) + payload
    assert len(body) < 128
    return bytes((0x10, len(body))) + body


async def connack(port: int, packet: bytes) -> int:
    """The CONNACK return code the broker answers a raw CONNECT with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(packet)
        answer = await asyncio.wait_for(reader.readexactly(4), 10)
        assert answer[:2] == b"\x20\x02", answer
        return answer[3]
    finally:
        writer.close()


def add_users(data: Path) -> Users:
    users = Users(data)
    users.add("alice", "control", "alice-pw")
    users.add("bob", "read", "bob-pw")
    users.add("sat", "node", "sat-pw")
    return users


async def test_connect_return_codes_tcp(run_node: NodeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with run_node(data_dir=data, auth=STRICT) as r:
        assert await connack(r.port, connect_packet("c1", "alice", "alice-pw")) == 0
        assert await connack(r.port, connect_packet("c2", "alice", "wrong")) == 4
        assert await connack(r.port, connect_packet("c3", "nobody", "x")) == 4
        assert await connack(r.port, connect_packet("c4")) == 5  # anonymous: not authorized
        # A read user's will on the node's status would be a forged `offline`: refused.
        will = (f"{r.base}/status", b"offline", True)
        assert await connack(r.port, connect_packet("c5", "bob", "bob-pw", will)) == 5
        assert await connack(r.port, connect_packet("c6", "sat", "sat-pw", will)) == 0


async def test_websocket_is_checked_the_same(run_node: NodeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with run_node(data_dir=data, auth=STRICT) as r:
        http_port = r.node.http_port
        assert http_port is not None
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with probe(http_port, transport="websockets"):
                pass
        assert refused.value.rc in (5, 135)  # paho reports 3.1.1's 5 as v5's "not authorized"
        with pytest.raises(aiomqtt.MqttCodeError) as bad:
            async with probe(http_port, transport="websockets", username="alice", password="no"):
                pass
        assert bad.value.rc in (4, 134)
        async with probe(http_port, transport="websockets", username="alice", password="alice-pw") as p:
            await p.subscribe(f"{r.base}/counter")
            await p.publish(f"{r.base}/counter/set", "7")
            await p.wait_for(f"{r.base}/counter", lambda g: g.json()["value"] == 7)


async def test_control_sets_read_only_reads(run_node: NodeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with (
        run_node(data_dir=data, auth=STRICT) as r,
        probe(r.port, username="alice", password="alice-pw") as alice,
        probe(r.port, username="bob", password="bob-pw") as bob,
    ):
        state, error = f"{r.base}/counter", f"{r.base}/error"
        await bob.subscribe(state, error)
        await alice.publish(f"{state}/set", "5")
        await bob.wait_for(state, lambda g: g.json()["value"] == 5)
        mark = bob.mark()
        await bob.publish(f"{state}/set", "9")
        refusal = (await bob.wait_for(error, after=mark)).json()
        assert refusal["code"] == "forbidden"
        assert refusal["topic"] == f"{state}/set" and refusal["payload"] == "9"
        assert "'bob'" in refusal["error"] and "read" in refusal["error"]
        await alice.publish(f"{state}/get", "")
        got = await bob.wait_for(state, after=mark)
        assert got.json()["value"] == 5


@pytest.mark.parametrize(
    ("path", "retain", "payload"),
    [
        ("counter", True, b'{"value": 99, "label": "spoofed"}'),
        ("counter", False, b'{"value": 99, "label": "spoofed"}'),
        ("counter", True, b""),  # clearing state
        ("status", True, b"offline"),
        ("error", False, b'{"code": "fake"}'),
        ("counter/set", True, b"42"),  # retained command
        ("info/nested/state", False, b"{}"),
    ],
)
async def test_only_the_node_publishes_state_status_error_and_retained(
    run_node: NodeFactory, tmp_path: Path, path: str, retain: bool, payload: bytes
) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with (
        run_node(data_dir=data, auth=STRICT) as r,
        probe(r.port, username="alice", password="alice-pw") as alice,
    ):
        topic = f"{r.base}/{path}"
        await alice.subscribe(f"{r.base}/error", f"{r.base}/counter", f"{r.base}/status")
        await alice.wait_for(f"{r.base}/counter")
        mark = alice.mark()
        await alice.publish(topic, payload, retain=retain)
        refusal = await alice.wait_for(
            f"{r.base}/error", lambda g: g.json()["code"] == "forbidden", after=mark
        )
        assert refusal.json()["topic"] == topic and "alice" in refusal.json()["error"]
        # Nobody else saw it, and the broker retained nothing of it.
        assert [g for g in alice.seen[mark:] if g.topic == topic and g.payload == payload] == []
        assert r.node.broker is not None
        stored = dict(r.node.broker.retained())
        assert stored[f"{r.base}/status"] == b"online"
        assert json.loads(stored[f"{r.base}/counter"]) == {"value": 0, "label": ""}
        assert topic not in stored or path in ("counter", "status")


async def test_reply_to_stays_in_the_clients_namespace(run_node: NodeFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with (
        run_node(data_dir=data, auth=STRICT) as r,
        probe(r.port, username="alice", password="alice-pw") as alice,
        probe(r.port, username="bob", password="bob-pw") as bob,
    ):
        error = f"{r.base}/error"
        mine = f"{r.base}/reply/alice/1"
        await alice.subscribe(error, mine)
        await bob.subscribe("milo/#")
        # Own namespace and anywhere outside milo/: answered.
        mark = alice.mark()
        await alice.publish(f"{r.base}/counter/echo", {"text": "hi", "reply_to": mine, "id": 1})
        assert (await alice.wait_for(mine, after=mark)).json()["result"] is not None
        reply = await alice.request(f"{r.base}/counter/echo", {"text": "out"})
        assert reply["ok"] is True
        # Someone else's namespace, or the node's own topics: dropped and reported.
        for target in (f"{r.base}/counter", f"{r.base}/reply/bob/1", f"{r.base}/status"):
            mark = alice.mark()
            await alice.publish(f"{r.base}/counter/get", {"reply_to": target, "id": 2})
            got = await alice.wait_for(error, after=mark)
            assert got.json()["code"] == "forbidden" and "reply_to" in got.json()["error"]
        # Replies reach their owner only, whoever holds `milo/#`.
        assert [g.topic for g in bob.seen if "/reply/" in g.topic] == []


async def test_the_node_itself_never_replies_onto_its_own_topics(run_node: NodeFactory) -> None:
    # On a broker that cannot look into payloads (mosquitto), the node refuses such a reply_to itself.
    async with run_node("mosquitto") as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error", f"{r.base}/counter")
        await p.wait_for(f"{r.base}/counter")
        mark = p.mark()
        await p.publish(f"{r.base}/counter/echo", {"text": "x", "reply_to": f"{r.base}/counter", "id": 1})
        error = (await p.wait_for(f"{r.base}/error", after=mark)).json()
        assert error["code"] == "invalid_request" and "reply_to" in error["error"]
        assert [g for g in p.seen[mark:] if g.topic == f"{r.base}/counter"] == []


async def test_subscribing_to_another_clients_replies_is_refused(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with (
        run_node(data_dir=data, auth=STRICT) as r,
        aiomqtt.Client("127.0.0.1", r.port, username="bob", password="bob-pw") as bob,
    ):
        granted = await bob.subscribe(
            [(f"{r.base}/reply/alice/#", 0), (f"{r.base}/reply/bob/#", 0), ("milo/#", 0)]
        )
        codes = [getattr(c, "value", c) for c in granted]
        assert codes == [0x80, 0, 0]


async def test_a_refused_client_never_takes_over_a_connected_one(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    add_users(data)
    async with (
        run_node(data_dir=data, auth=STRICT) as r,
        aiomqtt.Client("127.0.0.1", r.port, identifier="kitchen", username="alice", password="alice-pw") as c,
    ):
        assert await connack(r.port, connect_packet("kitchen", "alice", "wrong")) == 4
        assert await connack(r.port, connect_packet("kitchen")) == 5
        # Still connected: its round trip works.
        await c.subscribe("x/still")
        await c.publish("x/still", b"here", qos=1)
        async with asyncio.timeout(5):
            async for message in c.messages:
                assert message.payload == b"here"
                break


async def test_default_policy_loopback_and_fresh_install(run_node: NodeFactory, tmp_path: Path) -> None:
    # The real default: an anonymous client on loopback controls the node (the kiosk), users or not.
    async with run_node(auth=AuthOptions()) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/counter")
        await p.publish(f"{r.base}/counter/set", "3")
        await p.wait_for(f"{r.base}/counter", lambda g: g.json()["value"] == 3)
        users = Users(r.node.config.data_dir)
        # Off this host: control on a fresh install, login once the first user exists.
        assert r.node.policy.anonymous_role("192.168.1.20") == "control"
        users.add("alice", "control", "pw")
        assert r.node.policy.anonymous_role("192.168.1.20") is None
        assert r.node.policy.anonymous_role("::1") == "control"
        assert r.node.policy.anonymous_role("::ffff:127.0.0.1") == "control"


async def test_a_satellite_keeps_working_on_a_fresh_install(run_node: NodeFactory, tmp_path: Path) -> None:
    # No user yet: an anonymous client may act as a node under another node's base (a satellite's
    # `milo run --only volume` under its own id), never under this node's own.
    async with run_node(auth=AuthOptions()) as r:
        assert r.node.broker is not None
        satellite = "milo/sat1/volume"
        async with probe(r.port) as p:
            await p.subscribe(f"{r.base}/error", satellite)
            await p.publish(satellite, b'{"percent": 30}', retain=True)
            await p.wait_for(satellite)
            assert dict(r.node.broker.retained())[satellite] == b'{"percent": 30}'
            mark = p.mark()
            await p.publish(f"{r.base}/counter", b'{"value": 5}', retain=True)
            assert (await p.wait_for(f"{r.base}/error", after=mark)).json()["code"] == "forbidden"
        # Once a user exists, only a node user may: the satellite logs in as one.
        Users(r.node.config.data_dir).add("sat1", "node", "pw")
        async with probe(r.port) as p:
            await p.subscribe(f"{r.base}/error")
            mark = p.mark()
            await p.publish(satellite, b'{"percent": 31}', retain=True)
            assert (await p.wait_for(f"{r.base}/error", after=mark)).json()["code"] == "forbidden"
        async with probe(r.port, username="sat1", password="pw") as p:
            await p.subscribe(satellite)
            await p.publish(satellite, b'{"percent": 32}', retain=True)
            await p.wait_for(satellite, lambda g: g.payload == b'{"percent": 32}')


def test_anonymous_settings() -> None:
    async def nobody(_user: str, _password: str) -> str | None:
        return None

    def policy(**kw: object) -> AuthPolicy:
        return AuthPolicy(verify=nobody, has_users=lambda: True, **kw)  # type: ignore[arg-type]

    assert policy(anonymous="all").anonymous_role("10.0.0.5") == "read"
    assert policy(anonymous="all", anonymous_lan_role="control").anonymous_role("10.0.0.5") == "control"
    assert policy(anonymous="none").anonymous_role("127.0.0.1") is None
    assert policy(anonymous="loopback").anonymous_role("10.0.0.5") is None
    assert policy(anonymous="loopback").anonymous_role(None) is None
    control = Grant("control", "alice", "alice")
    rules = policy(request_paths=frozenset({"radio/search"}))
    assert rules.may_publish(control, "c", "milo/x/radio/search", False, b"{}") is None
    assert rules.may_publish(control, "c", "milo/x/source/radio/config/set", False, b"{}") is None
    assert rules.may_publish(control, "c", "homeassistant/status", True, b"online") is None
    assert rules.may_publish(control, "c", "milo/x/radio/favorites", False, b"{}") is not None
    assert rules.may_publish(control, "c", "milo/x/volume/set", True, b"") is None  # clears only


async def test_users_file_is_read_again_and_hashing_leaves_the_loop_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = Users(tmp_path)
    assert await users.verify_async("alice", "pw") is None
    users.add("alice", "control", "pw")
    hashes = 0
    real = users_module.check_password

    def counted(password: str, stored: str) -> bool:
        nonlocal hashes
        hashes += 1
        return real(password, stored)

    monkeypatch.setattr(users_module, "check_password", counted)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        assert await users.verify_async("alice", "pw") == "control"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert ticks > 1  # the loop ran other work while the hash was computed
    assert await users.verify_async("alice", "pw") == "control"
    assert await users.verify_async("alice", "wrong") is None
    assert hashes == 2  # the second good login came from the cache
    # Another process (the CLI) changes the file: a new password holds at once, the old is gone.
    Users(tmp_path).add("alice", "read", "new")
    assert await users.verify_async("alice", "pw") is None
    assert await users.verify_async("alice", "new") == "read"
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600
    stored = json.loads((tmp_path / "users.json").read_text())["users"]["alice"]["hash"]
    assert stored.startswith("$7$") and "new" not in stored
    # A damaged file locks, never opens: nobody logs in, and the LAN is not taken for a fresh install.
    (tmp_path / "users.json").write_text("[]")
    assert await users.verify_async("alice", "new") is None
    assert users.any()
    assert users.problem is not None
    assert check_password("x", hash_password("x", iterations=1000))
    assert not check_password("x", "$7$garbage")


def test_user_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert cli.main(["user", "add", "alice", "--role", "control", "--password-stdin", *data]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert cli.main(["user", "add", "bob", "--role", "read", "--password-stdin", *data]) == 0
    capsys.readouterr()
    assert cli.main(["user", "list", *data]) == 0
    assert capsys.readouterr().out == "alice\tcontrol\nbob\tread\n"
    assert Users(tmp_path).verify("alice", "s3cret") == "control"
    assert cli.main(["user", "remove", "bob", *data]) == 0
    assert cli.main(["user", "remove", "bob", *data]) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert cli.main(["user", "add", "bad name", "--role", "read", "--password-stdin", *data]) == 2
    assert [u.name for u in Users(tmp_path).all()] == ["alice"]
