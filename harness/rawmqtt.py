"""MQTT 3.1.1 packets by hand, for tests and benchmarks that must see the wire or skip a client library."""

from __future__ import annotations


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer: 7 bits a byte, high bit = more follows."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(s: str) -> bytes:
    data = s.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, keepalive: int, will: tuple[str, bytes] | None = None) -> bytes:
    flags = 0x02  # clean session
    payload = mqtt_string(client_id)
    if will:
        flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain
        payload += mqtt_string(will[0]) + len(will[1]).to_bytes(2, "big") + will[1]
    body = mqtt_string("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + payload
    return bytes([0x10]) + remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes) -> bytes:
    """QoS 0, not retained."""
    body = mqtt_string(topic) + payload
    return bytes([0x30]) + remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, topic: str) -> bytes:
    """One filter at QoS 0."""
    body = packet_id.to_bytes(2, "big") + mqtt_string(topic) + b"\x00"
    return bytes([0x82]) + remaining_length(len(body)) + body
