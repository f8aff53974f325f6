"""The embedded MQTT broker: amqtt 0.12.1 with its known bugs patched and a retained store of its own."""

from broker.embedded import BrokerSettings, EmbeddedBroker, InboundMessage
from broker.limits import LimitSettings

__all__ = ["BrokerSettings", "EmbeddedBroker", "InboundMessage", "LimitSettings"]
