"""The HTTP side of the roles on a real node: `/api/auth` for the page's login, uploads need `control`."""

from __future__ import annotations

import base64
from pathlib import Path

from node.config import AuthOptions
from tests.broker.test_auth import add_users
from tests.conftest import NodeFactory
from tests.http.test_server import image, request


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_uploads_need_a_control_login_when_the_node_asks_for_one(
    run_node: NodeFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    add_users(data)
    logo = image("PNG", (64, 64))
    async with run_node(data_dir=data, auth=AuthOptions(anonymous="none")) as r:
        port = r.node.http_port
        assert port is not None
        anonymous = await request(port, "POST", "/api/logos", logo)
        assert (anonymous.status, anonymous.json()["code"]) == (401, "login_required")
        assert "www-authenticate" not in anonymous.headers  # the page's form, not the browser's dialog
        wrong = await request(port, "POST", "/api/logos", logo, basic("alice", "nope"))
        assert (wrong.status, wrong.json()["code"]) == (401, "bad_credentials")
        reader = await request(port, "POST", "/api/logos", logo, basic("bob", "bob-pw"))
        assert (reader.status, reader.json()["code"]) == (403, "forbidden")
        garbled = await request(port, "POST", "/api/logos", logo, {"Authorization": "Bearer x"})
        assert garbled.status == 400
        control = await request(port, "POST", "/api/logos", logo, basic("alice", "alice-pw"))
        assert control.status == 201, control.body
        assert not list((data / "logos").glob("*.tmp"))
        # The page asks what it may do before it shows controls.
        me = await request(port, "GET", "/api/auth", headers=basic("bob", "bob-pw"))
        assert me.json() == {"role": "read", "write": False}
        me = await request(port, "GET", "/api/auth", headers=basic("alice", "alice-pw"))
        assert me.json() == {"role": "control", "write": True}
        assert (await request(port, "GET", "/api/auth")).status == 401


async def test_the_default_lets_this_host_in_without_a_login(run_node: NodeFactory) -> None:
    async with run_node(auth=AuthOptions()) as r:
        port = r.node.http_port
        assert port is not None
        assert (await request(port, "GET", "/api/auth")).json() == {"role": "control", "write": True}
        assert (await request(port, "POST", "/api/logos", image("PNG", (32, 32)))).status == 201
        # A foreign page is still refused before any credential is looked at.
        foreign = await request(port, "GET", "/api/auth", headers={"Origin": "http://evil.example"})
        assert foreign.status == 403
