"""The bus's in-process dispatch: wildcard handlers follow subscriptions as they come and go."""

from __future__ import annotations

import asyncio
import uuid

from node.framework.bus import Message
from tests.conftest import NodeFactory
from tests.helpers import TIMEOUT, probe


class Inbox:
    """A handler that records payloads and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def __call__(self, message: Message) -> None:
        if not message.retain:
            self.got.put_nowait(message.payload)

    async def next(self) -> bytes:
        return await asyncio.wait_for(self.got.get(), TIMEOUT)


async def test_wildcard_handlers_follow_subscription_changes(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as client:
        bus, topic = r.node.bus, f"test/{uuid.uuid4().hex[:8]}"
        assert bus is not None
        one, all_ = Inbox(), Inbox()
        await bus.subscribe(f"{topic}/+/x", one)
        await client.publish(f"{topic}/1/x", "1")  # from the network
        assert await one.next() == b"1"
        await bus.subscribe(f"{topic}/#", all_)
        await client.publish(f"{topic}/1/x", "2")
        assert (await one.next(), await all_.next()) == (b"2", b"2")
        await bus.unsubscribe(f"{topic}/+/x", one)
        await bus.publish(f"{topic}/1/x", "3")  # in-process, to the same topic
        assert await all_.next() == b"3"
        await bus.publish(f"{topic}/2/x", "4")
        assert await all_.next() == b"4"
        assert one.got.empty()
