"""Adapters to outside programs and protocols (no MQTT, no subsystem inside); they raise DaemonError."""
