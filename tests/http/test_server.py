"""The HTTP port: static files, logo uploads and MQTT over WebSocket, over real sockets."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.typing import Subprotocol

from node.framework.errors import MiloError
from node.http import logos
from node.http import server as web_module
from node.http.logos import LogoError, store_logo
from node.http.server import WebServer, WebSocket
from node.http.wire import HttpError
from tests.conftest import NodeFactory
from tests.helpers import probe

TIMEOUT = 5.0
MAX_MESSAGE = 1000
MQTT = [Subprotocol("mqtt")]
INDEX = b"<!doctype html><html><body>milo</body></html>\n"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Echo:
    """The MQTT handler of these tests: echoes every message; 'close' makes the server close."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    ended_by: list[str] = field(default_factory=list)

    async def __call__(self, ws: WebSocket) -> None:
        try:
            async for message in ws:
                if message == "close":
                    await ws.close(1000, "asked to")
                    self.ended_by.append("server")
                    return
                await ws.send(message)
            self.ended_by.append("client")
        finally:
            self.done.set()


@dataclass
class Served:
    server: WebServer
    echo: Echo
    root: Path
    data_dir: Path

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/mqtt"


def _leftover_tasks() -> list[asyncio.Task[Any]]:
    names = ("WebServer.", "WebSocket.")
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "").startswith(names)
    ]


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[Served]:
    root = tmp_path / "web"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "app.js").write_text("console.log('milo')\n")
    (root / "sub" / "index.html").write_text("<html>sub</html>\n")
    (tmp_path / "secret.txt").write_text("outside the web root\n")
    echo = Echo()
    server = WebServer(
        root, echo, host="127.0.0.1", port=0, max_message=MAX_MESSAGE, data_dir=tmp_path / "data"
    )
    await server.start()
    try:
        yield Served(server, echo, root, tmp_path / "data")
    finally:
        await server.stop()
    assert _leftover_tasks() == []


async def raw(port: int, data: bytes) -> Reply:
    """Send bytes as they are and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split(" ")[1]), headers, body)


async def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return await raw(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))


def image(
    fmt: str, size: tuple[int, int], mode: str = "RGBA", color: Any = (200, 30, 30, 255), **kw: Any
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format=fmt, **kw)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height; its pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# Static files


async def test_get_serves_the_ui(web: Served) -> None:
    got = await request(web.port, "GET", "/")
    assert got.status == 200
    assert got.body == INDEX
    assert got.headers["content-type"] == "text/html; charset=utf-8"
    assert got.headers["cache-control"] == "no-cache"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["connection"] == "close"
    js = await request(web.port, "GET", "/app.js?v=2")
    assert (js.status, js.headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    sub = await request(web.port, "GET", "/sub/")
    assert sub.body == b"<html>sub</html>\n"


async def test_head_has_the_headers_and_no_body(web: Served) -> None:
    got = await request(web.port, "HEAD", "/index.html")
    assert got.status == 200
    assert got.headers["content-length"] == str(len(INDEX))
    assert got.body == b""


@pytest.mark.parametrize(
    "path",
    ["/nope.js", "/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt", "//etc/passwd", "/a%00b"],
)
async def test_missing_and_outside_files_are_404(web: Served, path: str) -> None:
    got = await request(web.port, "GET", path)
    assert got.status == 404
    assert b"outside" not in got.body


async def test_other_methods_are_405_with_allow(web: Served) -> None:
    got = await request(web.port, "DELETE", "/index.html")
    assert (got.status, got.headers["allow"]) == (405, "GET, HEAD")
    api = await request(web.port, "GET", "/api/logos")
    assert (api.status, api.headers["allow"]) == (405, "POST")
    assert api.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    ],
)
async def test_bad_requests_are_400(web: Served, data: bytes) -> None:
    assert (await raw(web.port, data)).status == 400


async def test_get_with_a_body_is_answered_once(web: Served) -> None:
    ok = await raw(web.port, b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert (ok.status, ok.body) == (200, INDEX)
    bad = await raw(web.port, b"GET / HTTP/1.1\r\nContent-Length: five\r\n\r\n")
    assert bad.status == 400
    assert b"HTTP/1.1" not in bad.body  # no second response behind the first


async def test_mqtt_path_without_upgrade_is_426(web: Served) -> None:
    got = await request(web.port, "GET", "/mqtt")
    assert got.status == 426
    assert got.headers["upgrade"] == "websocket"


# WebSocket


async def test_websocket_echoes_binary_and_text(web: Served) -> None:
    async with asyncio.timeout(TIMEOUT), connect(web.url, subprotocols=MQTT) as ws:
        assert ws.subprotocol == "mqtt"
        for message in (b"\x10\x00", bytes(range(256)) * 3, b""):
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send([b"frag", b"mented"])  # one message in three frames (the last empty)
        assert await ws.recv() == b"fragmented"
        await ws.send("héllo")
        assert await ws.recv() == "héllo"


async def test_websocket_answers_pings(web: Served) -> None:
    async with asyncio.timeout(TIMEOUT), connect(web.url, subprotocols=MQTT) as ws:
        pong = await ws.ping(b"are you there")
        await pong
        await ws.send(b"still open")
        assert await ws.recv() == b"still open"


async def test_client_close_ends_the_handler_and_the_tcp_connection(web: Served) -> None:
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(web.url, subprotocols=MQTT)
        await ws.send(b"x")
        await ws.recv()
        # websockets' client waits (up to 10 s) for the server to end TCP: quick means the server did.
        await ws.close()
        await web.echo.done.wait()
    assert ws.close_code == 1000
    assert web.echo.ended_by == ["client"]


async def test_server_close_reaches_the_client(web: Served) -> None:
    async with asyncio.timeout(TIMEOUT), connect(web.url, subprotocols=MQTT) as ws:
        await ws.send("close")
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        await web.echo.done.wait()
    assert (ws.close_code, ws.close_reason) == (1000, "asked to")
    assert web.echo.ended_by == ["server"]


async def test_message_over_the_limit_closes_with_1009(web: Served) -> None:
    async with asyncio.timeout(TIMEOUT), connect(web.url, subprotocols=MQTT) as ws:
        await ws.send(b"a" * (MAX_MESSAGE + 17))
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
        await web.echo.done.wait()
    assert ws.close_code == 1009


async def test_dropped_tcp_connection_ends_the_handler(web: Served) -> None:
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(web.url, subprotocols=MQTT)
        ws.transport.abort()
        await web.echo.done.wait()
        await ws.close()
    assert web.echo.ended_by == []  # the handler's loop raised: not a normal close


async def test_slow_request_head_gets_408(web: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_module, "HEAD_TIMEOUT", 0.2)
    got = await raw(web.port, b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert got.status == 408


async def test_slow_upload_body_gets_408(web: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_module, "BODY_TIMEOUT", 0.2)
    got = await raw(web.port, b"POST /api/logos HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n\x89PNG")
    assert (got.status, got.json()["code"]) == (408, "timeout")


async def test_stop_closes_open_websockets(web: Served) -> None:
    async with asyncio.timeout(TIMEOUT), connect(web.url, subprotocols=MQTT) as ws:
        await web.server.stop()
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
    assert ws.close_code == 1001
    assert _leftover_tasks() == []


# Logos


async def upload(port: int, data: bytes) -> Reply:
    return await request(port, "POST", "/api/logos", data)


async def test_png_upload_is_shrunk_stripped_and_served(web: Served) -> None:
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Comment", "taken at home")
    got = await upload(web.port, image("PNG", (1000, 600), pnginfo=meta))
    assert got.status == 201, got.body
    info = got.json()
    assert (info["width"], info["height"]) == (512, 307)
    assert info["url"].startswith("/logos/") and info["url"].endswith(".png")
    assert got.headers["location"] == info["url"]

    served = await request(web.port, "GET", info["url"])
    assert served.status == 200
    assert served.headers["content-type"] == "image/png"
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert len(served.body) == info["bytes"]
    with Image.open(io.BytesIO(served.body)) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGBA", (512, 307))
        assert "Comment" not in img.info
    head = await request(web.port, "HEAD", info["url"])
    assert (head.status, head.body) == (200, b"")

    again = await upload(web.port, image("PNG", (1000, 600), pnginfo=meta))
    assert again.json() == info
    assert len(list((web.data_dir / "logos").iterdir())) == 1


async def test_jpeg_upload_becomes_a_png(web: Served) -> None:
    got = await upload(web.port, image("JPEG", (2000, 1000), mode="RGB", color=(10, 120, 240)))
    assert got.status == 201, got.body
    assert (got.json()["width"], got.json()["height"]) == (512, 256)
    served = await request(web.port, "GET", got.json()["url"])
    with Image.open(io.BytesIO(served.body)) as img:
        assert (img.format, img.size) == ("PNG", (512, 256))
        pixel = img.getpixel((256, 128))
    assert isinstance(pixel, tuple)
    red, green, blue, alpha = pixel
    assert abs(red - 10) + abs(green - 120) + abs(blue - 240) < 20 and alpha == 255


async def test_small_logo_is_not_enlarged(web: Served) -> None:
    got = await upload(web.port, image("GIF", (64, 32), mode="P", color=3))
    assert got.status == 201, got.body
    assert (got.json()["width"], got.json()["height"]) == (64, 32)


async def test_upload_over_the_limit_is_refused_before_its_body(web: Served) -> None:
    head = (
        "POST /api/logos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    )
    got = await raw(web.port, head.encode() + b"\x89PNG\r\n\x1a\n" + b"\0" * 4096)
    assert got.status == 413
    assert got.json()["code"] == "too_large"


async def test_text_is_not_an_image(web: Served) -> None:
    got = await upload(web.port, b"hello, I am a station logo\n")
    assert (got.status, got.json()["code"]) == (415, "not_an_image")
    svg = await upload(web.port, b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    assert (svg.status, svg.json()["code"]) == (415, "not_an_image")


@pytest.mark.parametrize("size", [(100_000, 100_000), (5000, 5000), (4097, 4096)])
async def test_too_many_pixels_are_refused_before_decoding(web: Served, size: tuple[int, int]) -> None:
    got = await upload(web.port, png_claiming(*size))
    assert got.status == 422
    assert got.json()["code"] == "too_many_pixels"
    assert "error" in got.json()


async def test_truncated_image_is_refused(web: Served) -> None:
    whole = image("PNG", (300, 300), mode="RGB", color=None)
    got = await upload(web.port, whole[: len(whole) // 2])
    assert got.status == 422
    assert got.json()["code"] == "corrupt_image"


async def test_upload_needs_a_content_length(web: Served) -> None:
    got = await raw(web.port, b"POST /api/logos HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (got.status, got.json()["code"]) == (411, "length_required")
    chunked = await raw(
        web.port,
        b"POST /api/logos HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    )
    assert (chunked.status, chunked.json()["code"]) == (411, "length_required")


async def test_upload_with_expect_continue_gets_100_first(web: Served) -> None:
    data = image("PNG", (20, 20))
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    try:
        writer.write(
            f"POST /api/logos HTTP/1.1\r\nHost: a\r\nContent-Length: {len(data)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(data)
            assert (await reader.read()).startswith(b"HTTP/1.1 201 Created\r\n")
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/logos/0123456789abcdef0123456789abcdef.png", "/logos/x.png", "/logos/"])
async def test_unknown_logo_is_404(web: Served, path: str) -> None:
    assert (await request(web.port, "GET", path)).status == 404


async def test_no_data_dir_means_no_logos(tmp_path: Path) -> None:
    server = WebServer(tmp_path, Echo(), host="127.0.0.1", port=0, max_message=MAX_MESSAGE)
    await server.start()
    try:
        got = await upload(server.port, image("PNG", (8, 8)))
        assert (got.status, got.json()["code"]) == (404, "not_found")
    finally:
        await server.stop()


# store_logo on its own


def test_first_frame_of_an_animation(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    info = store_logo(out.getvalue(), tmp_path)
    with Image.open(tmp_path / info.name) as img:
        assert img.getpixel((20, 20)) == (255, 0, 0, 255)
        assert getattr(img, "n_frames", 1) == 1


def test_exif_orientation_applied_then_dropped(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: displayed rotated by 90 degrees
    exif[0x010F] = "PhoneMaker"
    info = store_logo(image("JPEG", (200, 100), mode="RGB", exif=exif.tobytes()), tmp_path)
    assert (info.width, info.height) == (100, 200)
    with Image.open(tmp_path / info.name) as img:
        assert not img.getexif()
        assert "exif" not in img.info and "icc_profile" not in img.info


def test_webp_is_accepted(tmp_path: Path) -> None:
    info = store_logo(image("WEBP", (30, 20)), tmp_path)
    assert (info.width, info.height, info.url) == (30, 20, f"/logos/{info.name}")
    assert logos.NAME_RE.fullmatch(info.name)


def test_directory_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logos, "MAX_LOGOS", 2)
    kept = [store_logo(image("PNG", (8, 8), color=(c, 0, 0, 255)), tmp_path) for c in (1, 2)]
    with pytest.raises(LogoError) as refused:
        store_logo(image("PNG", (8, 8), color=(3, 0, 0, 255)), tmp_path)
    assert refused.value.code == "too_many_logos"
    # An image already stored is still answered: it takes no new room.
    assert store_logo(image("PNG", (8, 8), color=(1, 0, 0, 255)), tmp_path) == kept[0]


def test_pixel_limit_is_a_parameter(tmp_path: Path) -> None:
    with pytest.raises(LogoError) as refused:
        store_logo(image("PNG", (100, 100)), tmp_path, max_pixels=99 * 100)
    assert refused.value.code == "too_many_pixels"
    assert store_logo(image("PNG", (100, 100)), tmp_path, max_pixels=100 * 100).width == 100


def test_refusals_are_milo_errors() -> None:
    assert issubclass(HttpError, MiloError)
    assert issubclass(LogoError, MiloError)
    with pytest.raises(MiloError, match="not a PNG"):
        store_logo(b"plain text", Path("/nonexistent"))


# Through a real node


async def test_mqtt_over_websocket_through_a_node(run_node: NodeFactory) -> None:
    async with run_node() as r:
        assert r.node.http_port is not None
        async with probe(r.node.http_port, transport="websockets") as ws, probe(r.port) as tcp:
            await tcp.subscribe("test/from-ws")
            await ws.subscribe(f"{r.base}/status")
            assert (await ws.wait_for(f"{r.base}/status")).text == "online"
            await ws.publish("test/from-ws", "x" * 5000)  # several TCP segments, one WS message
            assert (await tcp.wait_for("test/from-ws")).text == "x" * 5000
        got = await request(r.node.http_port, "GET", "/")
        assert got.status == 200


async def test_static_files_are_gzipped_and_revalidated(web: Served) -> None:
    (web.root / "app.js").write_text("export const answer = 42;\n" * 200)
    plain = await request(web.server.port, "GET", "/app.js")
    assert plain.status == 200
    assert "content-encoding" not in plain.headers
    etag = plain.headers["etag"]
    packed = await request(web.server.port, "GET", "/app.js", headers={"Accept-Encoding": "gzip, br"})
    assert (packed.headers["content-encoding"], packed.headers["vary"]) == ("gzip", "Accept-Encoding")
    assert gzip.decompress(packed.body) == plain.body
    assert len(packed.body) < len(plain.body) // 10
    same = await request(web.server.port, "GET", "/app.js", headers={"If-None-Match": etag})
    assert (same.status, same.body, same.headers["etag"]) == (304, b"", etag)
    (web.root / "app.js").write_text("export const answer = 43;\n")
    changed = await request(web.server.port, "GET", "/app.js", headers={"If-None-Match": etag})
    assert changed.status == 200
    assert changed.body == b"export const answer = 43;\n"


async def test_the_page_names_the_node_serving_it(tmp_path: Path) -> None:
    """index.html's milo-node placeholder carries the node's id, gzipped or not; other files are as stored."""
    root = tmp_path / "web"
    (root / "js").mkdir(parents=True)
    page = b'<head><meta name="milo-node" content=""></head>\n'
    (root / "index.html").write_bytes(page)
    (root / "js" / "index.html").write_bytes(page)
    server = WebServer(root, Echo(), host="127.0.0.1", port=0, max_message=MAX_MESSAGE, node_id="kitchen")
    await server.start()
    try:
        named = b'<head><meta name="milo-node" content="kitchen"></head>\n'
        plain = await request(server.port, "GET", "/")
        assert (plain.body, plain.headers["content-length"]) == (named, str(len(named)))
        packed = await request(server.port, "GET", "/index.html", headers={"Accept-Encoding": "gzip"})
        assert gzip.decompress(packed.body) == named
        assert "kitchen" in plain.headers["etag"]  # the same file served by another node is another page
        assert (await request(server.port, "GET", "/js/index.html")).body == page
    finally:
        await server.stop()


async def test_a_page_of_another_site_may_not_use_the_websocket_nor_upload(web: Served) -> None:
    # A browser always says where the page comes from; the node's own page comes from its own origin.
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": "mqtt",
    }
    for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example", "https://127.0.0.2"):
        got = await request(web.port, "GET", "/mqtt", headers={**upgrade, "Origin": origin})
        assert got.status == 403, origin
        got = await request(web.port, "POST", "/api/logos", image("PNG", (4, 4)), {"Origin": origin})
        assert got.status == 403, origin
    assert not any(web.data_dir.glob("logos/*.png"))
    # Its own origin, and a client that is not a browser (no Origin), are let in.
    async with asyncio.timeout(TIMEOUT), connect(web.url, subprotocols=MQTT, origin=None) as ws:
        await ws.send(b"\x10\x00")
        assert await ws.recv() == b"\x10\x00"
    own = {"Origin": "http://127.0.0.1"}
    assert (await request(web.port, "POST", "/api/logos", image("PNG", (4, 4)), own)).status == 201


async def test_a_rebound_name_is_not_the_nodes_own_origin(web: Served) -> None:
    # DNS rebinding: evil.example now resolves to the node, and the page's origin equals its Host.
    rebound = {"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}
    lines = ["POST /api/logos HTTP/1.1", *(f"{k}: {v}" for k, v in rebound.items()), "Connection: close"]
    body = image("PNG", (4, 4))
    head = "\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n"
    assert (await raw(web.port, head.encode() + body)).status == 403
