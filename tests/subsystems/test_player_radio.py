"""The player driving the real radio (libmpv, a local ICY server): commands sent before the radio answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from harness.icy_server import IcyServer
from node.sources.radio import Radio
from node.subsystems.info import Info
from node.subsystems.player import Player
from tests.conftest import NodeFactory
from tests.helpers import Got, Probe, probe
from tests.sources.test_radio import WAIT, fast

pytestmark = pytest.mark.timeout(40)


def where(**fields: Any) -> Callable[[Got], bool]:
    return lambda g: bool(g.payload) and all(g.json().get(k) == v for k, v in fields.items())


@contextlib.asynccontextmanager
async def idle_radio(run_node: NodeFactory, icy: IcyServer) -> AsyncIterator[tuple[Probe, str]]:
    """A node whose radio has one favorite and has never played: it lists `play`, not `pause`."""
    sections = {"radio": fast()}
    async with run_node(subsystems=(Info, Player, Radio), sections=sections) as r, probe(r.port) as p:
        base = r.base
        await p.subscribe(f"{base}/player", f"{base}/source", f"{base}/source/radio", f"{base}/radio/#")
        await p.subscribe(f"{base}/error")
        await p.publish(f"{base}/radio/custom/set", {"add": {"name": "Local", "url": icy.url()}})
        custom = await p.wait_for(f"{base}/radio/custom", lambda g: bool(g.json()["stations"]))
        mark = p.mark()
        await p.publish(f"{base}/radio/favorites/set", custom.json()["stations"][0]["id"])
        await p.wait_for(f"{base}/radio/favorites", lambda g: bool(g.json()["stations"]), after=mark)
        # What the player checks a command against: the radio's last state, idle.
        await p.wait_for(f"{base}/player", where(active="none"))
        await p.wait_for(f"{base}/source", lambda g: "radio" in g.json()["available"])
        radio = await p.wait_for(f"{base}/source/radio", where(state="idle"))
        assert "pause" not in radio.json()["commands"]
        assert "toggle" not in radio.json()["commands"]
        yield p, base


async def no_error(p: Probe, base: str, mark: int) -> None:
    await p.quiet(f"{base}/error", after=mark, probe_topic=f"{base}/test/flush")


async def test_pause_right_after_choosing_the_radio_pauses_it(run_node: NodeFactory, icy: IcyServer) -> None:
    async with idle_radio(run_node, icy) as (p, base):
        mark = p.mark()
        # Back to back, as a script or a quick tap does: the radio has not said it plays yet.
        await p.publish(f"{base}/source/set", "radio")
        await p.publish(f"{base}/player/set", "pause")
        await p.wait_for(f"{base}/source/radio", where(state="paused"), after=mark, timeout=WAIT)
        await p.wait_for(f"{base}/player", where(active="radio", state="paused"), after=mark)
        await no_error(p, base, mark)
        # It did start on the way: tuned, then paused.
        states = [g.json()["state"] for g in p.on(f"{base}/source/radio", mark)]
        assert "buffering" in states
        assert states[-1] == "paused"
        # Answered now: the player checks against the radio's own state again, and play resumes it.
        mark = p.mark()
        await p.publish(f"{base}/player/set", "play")
        await p.wait_for(f"{base}/player", where(state="playing"), after=mark, timeout=WAIT)
        await no_error(p, base, mark)


async def test_toggle_right_after_choosing_the_radio_means_pause(
    run_node: NodeFactory, icy: IcyServer
) -> None:
    async with idle_radio(run_node, icy) as (p, base):
        mark = p.mark()
        await p.publish(f"{base}/source/set", "radio")
        # The player sent `play`: the user's toggle is its opposite, not `play` again.
        await p.publish(f"{base}/player/set", "toggle")
        await p.wait_for(f"{base}/source/radio", where(state="paused"), after=mark, timeout=WAIT)
        await p.wait_for(f"{base}/player", where(active="radio", state="paused"), after=mark)
        await no_error(p, base, mark)
        # And the other way round: a toggle right after a pause means play.
        mark = p.mark()
        await p.publish(f"{base}/player/set", "play")
        await p.wait_for(f"{base}/player", where(state="playing"), after=mark, timeout=WAIT)
        mark = p.mark()
        await p.publish(f"{base}/player/set", "pause")
        await p.publish(f"{base}/player/set", "toggle")
        paused = await p.wait_for(f"{base}/source/radio", where(state="paused"), after=mark)
        after = p.seen.index(paused)
        await p.wait_for(f"{base}/source/radio", where(state="playing"), after=after, timeout=WAIT)
        await p.wait_for(f"{base}/player", where(state="playing"), after=mark)
        await no_error(p, base, mark)
