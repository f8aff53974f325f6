"""The MQTT contract, on both brokers."""
