"""Supervision: a crash is restarted with backoff, never takes others down, and every status shows in info."""

from __future__ import annotations

from tests.conftest import NodeFactory
from tests.helpers import Got, probe


def status_of(name: str, status: str):  # type: ignore[no-untyped-def]
    return lambda g: g.json()["subsystems"].get(name, {}).get("status") == status


async def test_crash_is_restarted_and_others_keep_working(run_node: NodeFactory) -> None:
    async with run_node() as r, probe(r.port) as p:
        base = r.base
        await p.subscribe(f"{base}/info", f"{base}/counter", f"{base}/error")
        await p.publish(f"{base}/counter/set", "9")
        await p.wait_for(f"{base}/counter", lambda g: g.json().get("value") == 9)
        mark = p.mark()
        await p.publish(f"{base}/counter/set", "crash")
        crashed = await p.wait_for(f"{base}/info", status_of("counter", "crashed"), after=mark)
        assert "counter exploded" in crashed.json()["subsystems"]["counter"]["detail"]
        err = await p.wait_for(f"{base}/error", lambda g: g.json()["code"] == "crashed", after=mark)
        assert "counter exploded" in err.json()["error"]
        await p.wait_for(f"{base}/info", status_of("counter", "running"), after=mark)
        # The restarted instance reloads its persisted data.
        back = await p.wait_for(f"{base}/counter", after=mark)
        assert back.json()["value"] == 9
        # info kept running throughout, and the restarted counter takes commands.
        assert crashed.json()["subsystems"]["info"]["status"] == "running"
        await p.publish(f"{base}/counter/set", "+1")
        await p.wait_for(f"{base}/counter", lambda g: g.json().get("value") == 10, after=mark)


async def test_unavailable_is_reported_and_others_run(run_node: NodeFactory) -> None:
    async with run_node(sections={"counter": {"available": False}}) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info", f"{r.base}/error")
        info = await p.wait_for(f"{r.base}/info", status_of("counter", "unavailable"))
        assert info.json()["subsystems"]["counter"]["detail"] == "the counter device is unplugged"
        assert info.json()["subsystems"]["info"]["status"] == "running"
        await p.publish(f"{r.base}/counter/set", "1")
        err = (await p.wait_for(f"{r.base}/error")).json()
        assert err["code"] == "unavailable"
        assert "unplugged" in err["error"]
        # Plugging it in (config) brings it up.
        mark = p.mark()
        await p.publish(f"{r.base}/counter/config/set", {"available": True})
        await p.wait_for(f"{r.base}/info", status_of("counter", "running"), after=mark)


async def test_config_error_in_file_disables_only_that_subsystem(run_node: NodeFactory) -> None:
    async with run_node(sections={"counter": {"step": 50, "colour": "red"}}) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info", f"{r.base}/error", f"{r.base}/counter/config")
        info = await p.wait_for(f"{r.base}/info", status_of("counter", "config_error"))
        detail = info.json()["subsystems"]["counter"]["detail"]
        assert "step" in detail
        assert "colour: unknown key" in detail
        assert info.json()["subsystems"]["info"]["status"] == "running"
        # A config/set that makes the whole valid starts it; unknown keys of the file cannot be fixed
        # over MQTT, so only the step is set and the file's extra key still blocks.
        await p.publish(f"{r.base}/counter/config/set", {"step": 2})
        err = await p.wait_for(f"{r.base}/error", lambda g: g.json()["code"] == "invalid_config")
        assert "colour" in err.json()["error"]


async def test_config_error_fixed_over_mqtt(run_node: NodeFactory) -> None:
    async with run_node(sections={"counter": {"step": 50}}) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info", f"{r.base}/counter/config")
        await p.wait_for(f"{r.base}/info", status_of("counter", "config_error"))
        mark = p.mark()
        await p.publish(f"{r.base}/counter/config/set", {"step": 2})
        cfg: Got = await p.wait_for(f"{r.base}/counter/config", after=mark)
        assert cfg.json()["step"] == 2
        await p.wait_for(f"{r.base}/info", status_of("counter", "running"), after=mark)


async def test_disabled_in_file_starts_disabled(run_node: NodeFactory) -> None:
    async with run_node(sections={"counter": {"enabled": False}}) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/info")
        await p.wait_for(f"{r.base}/info", status_of("counter", "disabled"))
        assert r.node.runners[1].status.value == "disabled"
