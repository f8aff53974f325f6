"""The aiomqtt bus: MQTT 5 where the broker has it, 3.1.1 otherwise (another node's embedded broker)."""

from __future__ import annotations

import aiomqtt

from node.app import Node
from node.config import NodeConfig
from node.framework.mqttbus import MqttBus
from node.subsystems.info import Info
from tests.conftest import FAST, Mosquitto, NodeFactory
from tests.fakes.counter import Counter
from tests.helpers import probe


async def test_second_node_on_the_first_nodes_embedded_broker(
    run_node: NodeFactory, tmp_path: object
) -> None:
    async with run_node() as first, probe(first.port) as p:
        config = NodeConfig(
            node_id="second",
            data_dir=first.node.config.data_dir / "second",
            bind="127.0.0.1",
            mqtt_port=0,
            http_port=0,
            broker=f"mqtt://127.0.0.1:{first.port}",
        )
        second = Node(config, (Info, Counter), backoff=FAST)
        await p.subscribe("milo/second/status", "milo/second/counter", "milo/second/error")
        await second.start()
        try:
            assert isinstance(second.bus, MqttBus)
            assert second.bus.protocol is aiomqtt.ProtocolVersion.V311  # amqtt has no MQTT 5
            assert (await p.wait_for("milo/second/status", lambda g: g.text == "online")).retain is False
            await p.publish("milo/second/counter/set", "+2")
            await p.wait_for("milo/second/counter", lambda g: g.json().get("value") == 2)
        finally:
            await second.stop()
        await p.wait_for("milo/second/status", lambda g: g.text == "offline")


async def test_mqtt5_on_mosquitto(run_node: NodeFactory, mosquitto: Mosquitto) -> None:
    async with run_node("mosquitto") as r:
        assert isinstance(r.node.bus, MqttBus)
        assert r.node.bus.protocol is aiomqtt.ProtocolVersion.V5
