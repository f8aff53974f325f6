"""Milo: a Raspberry Pi audio node whose one and only API is MQTT."""

__version__ = "0.1.0"
# Bumped whenever a payload model changes incompatibly; published in `info` and in schemas/.
SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "__version__"]
