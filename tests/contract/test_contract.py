"""The MQTT contract of DESIGN.md, on the embedded broker and on a real mosquitto."""

from __future__ import annotations

import json

from node.framework.store import Store
from tests.conftest import NodeFactory
from tests.helpers import expect_errors, probe


async def test_status_and_whole_retained_states(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/#")
        status = await p.wait_for(f"{r.base}/status")
        assert (status.text, status.retain) == ("online", True)
        counter = await p.wait_for(f"{r.base}/counter")
        assert counter.retain
        assert counter.json() == {"value": 0, "label": ""}
        info = (await p.wait_for(f"{r.base}/info")).json()
        assert info["node_id"] == r.node.config.node_id
        assert info["schema_version"] == 1
        config = await p.wait_for(f"{r.base}/counter/config")
        assert config.retain
        assert config.json() == {"enabled": True, "step": 1, "maximum": 100, "label": "", "available": True}


async def test_set_json_and_plain_text_are_answered_by_the_new_state(
    run_node: NodeFactory, broker_kind: str
) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as p:
        state = f"{r.base}/counter"
        await p.subscribe(state)
        await p.wait_for(state)
        for payload, expected in [
            ("40", 40),
            ("+5", 45),
            ("-3", 42),
            ('{"value": 7}', 7),
            ('{"delta": 2}', 9),
        ]:
            mark = p.mark()
            await p.publish(f"{state}/set", payload)
            got = await p.wait_for(state, after=mark)
            assert got.json()["value"] == expected, payload


async def test_bad_commands_get_an_error_and_change_nothing(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as p:
        state = f"{r.base}/counter"
        await p.subscribe(state, f"{r.base}/error")
        await p.publish(f"{state}/set", "12")
        await p.wait_for(state, lambda g: g.json().get("value") == 12)
        cases: dict[str | bytes, str] = {
            "loud": "invalid_payload",
            '{"value": "x"}': "invalid_payload",
            '{"volume": 3}': "invalid_payload",
            "500": "out_of_range",
            "": "empty_payload",
            b"\xff\xfe": "invalid_encoding",
            "fail": "internal_error",
        }
        await expect_errors(p, r.base, f"{state}/set", cases)
        # Still 12, and still answering.
        mark = p.mark()
        await p.publish(f"{state}/get", "")
        assert (await p.wait_for(state, after=mark)).json()["value"] == 12
        await p.publish(f"{r.base}/info/set", "anything")
        assert (await p.wait_for(f"{r.base}/error", lambda g: "info" in g.json()["topic"])).json()[
            "code"
        ] == "read_only"


async def test_retained_set_is_never_acted_on(run_node: NodeFactory, broker_kind: str) -> None:
    # First run: a retained command is left on the broker.
    async with run_node(broker_kind) as r, probe(r.port) as p:
        state = f"{r.base}/counter"
        await p.subscribe(state, f"{r.base}/error")
        await p.wait_for(state)
        await p.publish(f"{state}/set", "33", retain=True)
        # The in-process bus sees the publisher's retain flag, and so does the MQTT 5 client on
        # mosquitto (retain-as-published): refused at once.
        err = await p.wait_for(f"{r.base}/error")
        assert err.json()["code"] == "retained_command"
        port = r.port
    # Second run on the same broker store: the replayed command must not apply.
    async with run_node(broker_kind) as r, probe(r.port if broker_kind == "embedded" else port) as p:
        state = f"{r.base}/counter"
        await p.subscribe(state)
        got = await p.wait_for(state)
        assert got.json()["value"] == 0
        mark = p.mark()
        await p.publish(f"{state}/get", "")
        assert (await p.wait_for(state, after=mark)).json()["value"] == 0
        await p.publish(f"{state}/set", b"", retain=True)  # clean up the broker


async def test_get_republishes_and_answers_reply_to(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as p:
        state = f"{r.base}/counter"
        await p.subscribe(state)
        await p.wait_for(state)
        mark = p.mark()
        await p.publish(f"{state}/get", "")
        again = await p.wait_for(state, after=mark)
        assert again.json() == {"value": 0, "label": ""}
        reply = await p.request(f"{state}/get", {"id": 5})
        assert reply == {
            "id": 5,
            "ok": True,
            "result": {"value": 0, "label": ""},
            "error": None,
            "code": None,
        }


async def test_request_response(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as p:
        topic = f"{r.base}/counter/echo"
        await p.subscribe(f"{r.base}/error")
        assert await p.request(topic, {"id": "a1", "text": "hi"}) == {
            "id": "a1",
            "ok": True,
            "result": {"echo": "hi", "value": 0},
        }
        bad = await p.request(topic, {"id": 2, "txt": "hi"})
        assert bad["ok"] is False
        assert bad["id"] == 2
        assert bad["code"] == "invalid_payload"
        # Without reply_to nobody can be answered but the error topic.
        await p.publish(topic, {"text": "hi"})
        err = (await p.wait_for(f"{r.base}/error")).json()
        assert err["code"] == "invalid_request"
        assert "reply_to" in err["error"]


async def test_config_set_validates_persists_and_republishes(
    run_node: NodeFactory, broker_kind: str, tmp_path: object
) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as p:
        cfg = f"{r.base}/counter/config"
        await p.subscribe(cfg, f"{r.base}/error", f"{r.base}/counter")
        await p.wait_for(cfg)
        mark = p.mark()
        await p.publish(f"{cfg}/set", {"step": 5, "label": "kitchen"})
        got = await p.wait_for(cfg, after=mark)
        assert got.json()["step"] == 5
        assert got.json()["label"] == "kitchen"
        await p.wait_for(f"{r.base}/counter", lambda g: g.json()["label"] == "kitchen")
        stored = json.loads(Store(r.node.config.data_dir).path("counter").read_text())
        assert stored["config"] == {"step": 5, "label": "kitchen"}
        # Invalid: every problem named, nothing changed.
        mark = p.mark()
        await p.publish(f"{cfg}/set", {"step": 99, "lable": "x"})
        err = (await p.wait_for(f"{r.base}/error", after=mark)).json()
        assert err["code"] == "invalid_config"
        assert "step" in err["error"]
        assert "did you mean 'label'" in err["error"]
        await p.publish(f"{cfg}/set", "not json")
        err = (await p.wait_for(f"{r.base}/error", lambda g: g.json()["code"] == "invalid_json")).json()
        mark = p.mark()
        await p.publish(f"{cfg}/get", "")
        assert (await p.wait_for(cfg, after=mark)).json()["step"] == 5
        # The step applies to relative commands.
        await p.publish(f"{r.base}/counter/set", "+1")
        await p.wait_for(f"{r.base}/counter", lambda g: g.json().get("value") == 5)
        # null resets a key to its default.
        mark = p.mark()
        await p.publish(f"{cfg}/set", {"step": None})
        assert (await p.wait_for(cfg, after=mark)).json()["step"] == 1


async def test_disable_and_enable_through_config(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as p:
        base = r.base
        await p.subscribe(f"{base}/info", f"{base}/error", f"{base}/counter")
        await p.wait_for(f"{base}/counter")
        await p.publish(f"{base}/counter/config/set", {"enabled": False})
        await p.wait_for(f"{base}/info", lambda g: g.json()["subsystems"]["counter"]["status"] == "disabled")
        await p.publish(f"{base}/counter/set", "3")
        err = (await p.wait_for(f"{base}/error")).json()
        assert err["code"] == "disabled"
        mark = p.mark()
        await p.publish(f"{base}/counter/config/set", {"enabled": True})
        await p.wait_for(
            f"{base}/info", lambda g: g.json()["subsystems"]["counter"]["status"] == "running", after=mark
        )
        await p.publish(f"{base}/counter/set", "3")
        await p.wait_for(f"{base}/counter", lambda g: g.json().get("value") == 3)


async def test_an_accepted_command_that_changes_nothing_is_echoed(
    run_node: NodeFactory, broker_kind: str
) -> None:
    # The echo is the acknowledgement (Zigbee2MQTT's habit): a flow or a non-optimistic Home Assistant
    # entity knows its command arrived even when the value was already there.
    async with run_node(broker_kind) as r, probe(r.port) as p:
        state = f"{r.base}/counter"
        await p.subscribe(state)
        await p.wait_for(state)
        for _ in range(2):
            mark = p.mark()
            await p.publish(f"{state}/set", "12")
            assert (await p.wait_for(state, after=mark)).json()["value"] == 12


async def test_a_get_to_a_stopped_subsystem_is_answered_on_reply_to(
    run_node: NodeFactory, broker_kind: str
) -> None:
    async with run_node(broker_kind, sections={"counter": {"enabled": False}}) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error")
        reply = await p.request(f"{r.base}/counter/get", {"id": 9})
        assert (reply["id"], reply["ok"], reply["code"]) == (9, False, "disabled")
        assert "disabled" in reply["error"]
        err = (await p.wait_for(f"{r.base}/error")).json()
        assert err["code"] == "disabled"


async def test_a_subsystem_that_does_not_run_says_why_on_its_state_topic(
    run_node: NodeFactory, broker_kind: str
) -> None:
    async with run_node(broker_kind, sections={"counter": {"available": False}}) as r, probe(r.port) as p:
        state = f"{r.base}/counter"
        await p.subscribe(state)
        got = await p.wait_for(state, lambda g: g.json().get("status") == "unavailable")
        assert got.retain
        assert got.json() == {"status": "unavailable", "reason": "the counter device is unplugged"}
        mark = p.mark()
        await p.publish(f"{state}/config/set", {"enabled": False})
        # The unavailable record is said again at each retry: the disabled one follows the config.
        got = await p.wait_for(state, lambda g: g.json().get("status") == "disabled", after=mark)
        assert got.json() == {"status": "disabled", "reason": "disabled"}
        mark = p.mark()
        await p.publish(f"{state}/config/set", {"enabled": True, "available": True})
        got = await p.wait_for(state, lambda g: "value" in g.json(), after=mark)
        assert got.json() == {"value": 0, "label": ""}


async def test_an_unknown_key_set_to_null_is_named_not_dropped(
    run_node: NodeFactory, broker_kind: str
) -> None:
    async with run_node(broker_kind) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error")
        await p.publish(f"{r.base}/counter/config/set", {"lable": None})
        err = (await p.wait_for(f"{r.base}/error")).json()
        assert err["code"] == "invalid_config"
        assert err["error"] == "lable: unknown key (did you mean 'label'?)"


async def test_the_node_defends_its_status_and_state_topics(run_node: NodeFactory, broker_kind: str) -> None:
    # On a broker whose ACL lets anyone publish there (mosquitto here), a spoofed or cleared retained
    # state is said again at once, and so is the node's `online`.
    async with run_node(broker_kind) as r, probe(r.port) as p:
        state, status = f"{r.base}/counter", f"{r.base}/status"
        await p.subscribe(state, status)
        await p.wait_for(state)
        for forged in (b'{"value": 99, "label": "spoofed"}', b""):
            mark = p.mark()
            await p.publish(state, forged, retain=True)
            await p.wait_for(
                state, lambda g: bool(g.payload) and g.json() == {"value": 0, "label": ""}, after=mark
            )
        mark = p.mark()
        await p.publish(status, "offline", retain=True)
        await p.wait_for(status, lambda g: g.text == "online", after=mark)
    # What a new subscriber sees is the node's, not the forgery.
    async with run_node(broker_kind) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/counter")
        assert (await p.wait_for(f"{r.base}/counter")).json().get("label") == ""
