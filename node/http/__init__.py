"""The node's HTTP port: static web UI, station logo uploads, MQTT over WebSocket."""
