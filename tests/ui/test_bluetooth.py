"""The Bluetooth view in Chromium: the pairing dialog answers a request; a phone shows, then is forgotten."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Dialog, expect

from harness.alsa_sinks import sink_config
from harness.bluez import FakeBlueAlsa, FakeBluez, PrivateBus, fake_aplay
from harness.ui import FAST, open_page
from harness.waits import until
from node.app import Node
from node.config import NodeConfig
from node.sources.bluetooth import Bluetooth
from node.subsystems.info import Info
from node.subsystems.player import Player
from node.subsystems.routing import Routing
from node.subsystems.ui import Ui

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[tuple[PrivateBus, FakeBluez]]:
    bus = PrivateBus(tmp_path).start()
    bluez = await FakeBluez(bus.address).start()
    bluealsa = await FakeBlueAlsa(bus.address, bluez).start()
    yield bus, bluez
    await bluealsa.stop()
    await bluez.stop()
    bus.stop()


async def test_a_pairing_request_is_answered_in_the_dialog_and_a_phone_forgotten(
    browser: Browser, fakes: tuple[PrivateBus, FakeBluez], tmp_path: Path, node_id: str
) -> None:
    bus, bluez = fakes
    sections = {
        "routing": sink_config(tmp_path / "sinks"),
        "bluetooth": {
            "dbus_address": bus.address,
            "aplay": str(fake_aplay(tmp_path).path),
            "pairing": "ask",
            "pairing_timeout_s": 30,
        },
    }
    (tmp_path / "sinks").mkdir()
    config = NodeConfig(
        node_id=node_id,
        data_dir=tmp_path / "node",
        bind="127.0.0.1",
        mqtt_port=0,
        http_port=0,
        subsystems=sections,
    )
    node = Node(config, [Info, Routing, Bluetooth, Player, Ui], backoff=FAST)
    await node.start()
    try:
        page = await open_page(browser, f"http://127.0.0.1:{node.http_port}/#playing")
        phone = bluez.add_phone("AA:BB:CC:00:00:01", "Pixel 8")
        pairing = asyncio.ensure_future(phone.pair(passkey=123456))
        # The dialog shows over whatever view is open.
        dialog = page.locator("#bt-dialog")
        await expect(dialog).to_be_visible()
        await expect(page.locator("#bt-question")).to_contain_text("Pixel 8")
        await expect(dialog).to_contain_text("123456")
        await page.locator("#bt-accept").click()
        assert await asyncio.wait_for(pairing, 10) is True
        await expect(dialog).to_be_hidden()

        assert await phone.connect()
        await page.goto(f"http://127.0.0.1:{node.http_port}/#bluetooth")
        await expect(page.locator("#bt-phones [data-address='AA:BB:CC:00:00:01']")).to_contain_text("Pixel 8")
        await expect(page.locator("#bt-status")).to_contain_text(node_id)

        async def confirm(d: Dialog) -> None:
            await d.accept()

        page.on("dialog", confirm)
        await page.locator("#bt-paired [data-address='AA:BB:CC:00:00:01'] button").click()
        await until(lambda: bluez.removed == [phone.path])
        await expect(page.locator("#bt-paired li")).to_have_count(0)
    finally:
        await node.stop()
