"""The runner's delivery: a wildcard watch beside the subsystem's own command topic acts once."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from node.framework.bus import Message
from node.framework.store import Store, StoredFile
from node.framework.subsystem import Owned, Subsystem, SubsystemConfig
from node.subsystems.info import Info
from tests.conftest import NodeFactory
from tests.helpers import probe


class TallyState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seen: list[str] = Field(default_factory=list, description="watched topics, in arrival order")


class ItemsState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    commands: list[int] = Field(default_factory=list)


class Tally(Subsystem[TallyState, SubsystemConfig]):
    """Owns `items` (with `items/set`) and watches `items/+`, which matches `items/set` too."""

    name = "tally"
    State = TallyState
    owned: ClassVar[dict[str, Owned]] = {"items": Owned(ItemsState, TypeAdapter(int))}
    watches: ClassVar[tuple[str, ...]] = ("items/+",)

    async def setup(self) -> None:
        self._items = ItemsState()
        await self.publish_owned("items", self._items)

    async def on_topic(self, message: Message, path: str) -> None:
        await self.set_state(seen=[*self.state.seen, f"{path}={message.payload.decode()}"])

    async def on_owned_command(self, path: str, command: Any) -> None:
        self._items = ItemsState(commands=[*self._items.commands, command])
        await self.publish_owned("items", self._items)


async def test_a_wildcard_watch_and_an_own_command_topic_act_once(
    run_node: NodeFactory, broker_kind: str
) -> None:
    async with run_node(broker_kind, subsystems=(Info, Tally)) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/tally", f"{r.base}/items")
        await p.wait_for(f"{r.base}/items")
        # A retained state under the watch, published before the subsystem subscribed, is read at start;
        # the retained item is another client's, so it is cleaned up afterwards.
        await p.publish(f"{r.base}/items/alpha", "1", retain=True)
        await p.wait_for(f"{r.base}/tally", lambda g: g.json()["seen"] == ["items/alpha=1"])
        mark = p.mark()
        await p.publish(f"{r.base}/items/set", "7")
        await p.wait_for(f"{r.base}/items", lambda g: g.json()["commands"] == [7], after=mark)
        await p.publish(f"{r.base}/items/beta", "2")
        got = await p.wait_for(f"{r.base}/tally", lambda g: len(g.json()["seen"]) == 2, after=mark)
        # The command reached the command path once and the watch never.
        assert got.json()["seen"] == ["items/alpha=1", "items/beta=2"]
        await p.quiet(f"{r.base}/items", after=p.mark(), probe_topic=f"{r.base}/test/flush")
        assert [g.json()["commands"] for g in p.on(f"{r.base}/items", mark)] == [[7]]
        await p.publish(f"{r.base}/items/alpha", b"", retain=True)


async def test_a_retained_watch_shapes_the_first_state(run_node: NodeFactory, tmp_path: Any) -> None:
    data = tmp_path / "data"
    async with run_node(subsystems=(Info, Tally), data_dir=data) as r, probe(r.port) as p:
        await p.publish(f"{r.base}/items/alpha", "1", retain=True)
        await p.subscribe(f"{r.base}/tally")
        await p.wait_for(f"{r.base}/tally", lambda g: g.json()["seen"] == ["items/alpha=1"])
    async with run_node(subsystems=(Info, Tally), data_dir=data) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/tally")
        # The very first state published after a restart already holds the retained item.
        first = await p.wait_for(f"{r.base}/tally")
        assert first.json()["seen"] == ["items/alpha=1"]


class Renamed(Tally):
    name = "tallied"
    formerly = ("tally",)


async def test_a_renamed_subsystem_keeps_its_former_store_file(run_node: NodeFactory, tmp_path: Any) -> None:
    data = tmp_path / "data"
    Store(data).save("tally", StoredFile(config={"enabled": True}))
    async with run_node(subsystems=(Info, Renamed), data_dir=data) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/tallied/config")
        await p.wait_for(f"{r.base}/tallied/config")
    assert not (data / "tally.json").exists()
    assert json.loads((data / "tallied.json").read_text())["config"] == {"enabled": True}
