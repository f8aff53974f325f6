"""Fixtures of the UI tests: a real node serving web/, Debian's headless Chromium, and an MQTT probe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from harness.pulse import Pulse
from harness.ui import UiNode, chromium, ui_node
from tests.helpers import Probe, probe


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
async def milo(tmp_path: Path, node_id: str, pulse: Pulse) -> AsyncIterator[UiNode]:
    """Every subsystem the UI shows, the volume on the test PulseAudio's `Master`."""
    async with ui_node(tmp_path, node_id) as n:
        yield n


@pytest.fixture
async def mqtt(milo: UiNode) -> AsyncIterator[Probe]:
    """Another MQTT client of the same node, to act as a third screen and to check what the node did."""
    async with probe(milo.mqtt_port) as p:
        await p.subscribe(f"{milo.base}/#")
        yield p
