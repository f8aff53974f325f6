"""TLS on the LAN listeners: MQTT over TLS, HTTPS and secure WebSocket, with a certificate made here."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import aiomqtt

from node.config import AuthOptions, TlsOptions
from tests.broker.test_auth import add_users
from tests.conftest import NodeFactory
from tests.helpers import probe


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "node.crt", directory / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_mqtt_https_and_wss_over_tls(run_node: NodeFactory, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    data = tmp_path / "data"
    add_users(data)
    tls = TlsOptions(cert=cert, key=key, bind="127.0.0.1", mqtt_port=0, http_port=0)
    context = ssl.create_default_context(cafile=str(cert))
    async with run_node(data_dir=data, tls=tls, auth=AuthOptions(anonymous="none")) as r:
        mqtts, https = r.node.mqtt_tls_port, r.node.https_port
        assert mqtts is not None and https is not None
        # MQTT over TLS, logged in: a command and its state.
        async with probe(mqtts, tls_context=context, username="alice", password="alice-pw") as p:
            await p.subscribe(f"{r.base}/counter")
            await p.publish(f"{r.base}/counter/set", "6")
            await p.wait_for(f"{r.base}/counter", lambda g: g.json()["value"] == 6)
        # The same over a secure WebSocket on the HTTPS port.
        async with probe(
            https, transport="websockets", tls_context=context, username="bob", password="bob-pw"
        ) as p:
            await p.subscribe(f"{r.base}/counter")
            got = await p.wait_for(f"{r.base}/counter")
            assert got.json()["value"] == 6
        # HTTPS answers; a plain-text client on the TLS port gets nothing it can read.
        reader, writer = await asyncio.open_connection("127.0.0.1", https, ssl=context)
        writer.write(b"GET /api/auth HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401") and json.loads(answer.split(b"\r\n\r\n", 1)[1])
        # A client that does not trust the certificate is refused by its own TLS check.
        untrusting = ssl.create_default_context()
        try:
            async with aiomqtt.Client(
                "127.0.0.1", mqtts, tls_context=untrusting, username="alice", password="alice-pw"
            ):
                raise AssertionError("connected without trusting the certificate")
        except aiomqtt.MqttError:
            pass
