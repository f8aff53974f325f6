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


def connect_packet(
    client_id: str,
    keepalive: int,
    will: tuple[str, bytes] | None = None,
    login: tuple[str, str] | None = None,
) -> bytes:
    flags = 0x02  # clean session
    payload = mqtt_string(client_id)
    if will:
        flags |= 0x04 | 0x08 | 0x20  # will, will QoS 1, will retain
        payload += mqtt_string(will[0]) + len(will[1]).to_bytes(2, "big") + will[1]
    if login:
        flags |= 0x80 | 0x40  # user name, password
        payload += mqtt_string(login[0]) + mqtt_string(login[1])
    body = mqtt_string("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + payload
    return bytes([0x10]) + remaining_length(len(body)) + body


def publish_packet(
    topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0, retain: bool = False, dup: bool = False
) -> bytes:
    """QoS 0 and not retained unless asked; a QoS 1/2 packet carries `packet_id`."""
    body = mqtt_string(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    return bytes([first]) + remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, topic: str, qos: int = 0) -> bytes:
    """One filter, at QoS 0 unless asked."""
    body = packet_id.to_bytes(2, "big") + mqtt_string(topic) + bytes([qos])
    return bytes([0x82]) + remaining_length(len(body)) + body


def unsubscribe_packet(packet_id: int, topic: str) -> bytes:
    body = packet_id.to_bytes(2, "big") + mqtt_string(topic)
    return bytes([0xA2]) + remaining_length(len(body)) + body


def ack_packet(kind: str, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP for `packet_id`."""
    first = {"puback": 0x40, "pubrec": 0x50, "pubrel": 0x62, "pubcomp": 0x70}[kind]
    return bytes([first, 2]) + packet_id.to_bytes(2, "big")


def parse_packets(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole packets at the start of `buf` as (first byte, body), and the rest not yet complete."""
    out: list[tuple[int, bytes]] = []
    while len(buf) >= 2:
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return out, buf
            byte = buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(buf) < i + length:
            break
        out.append((buf[0], buf[i : i + length]))
        buf = buf[i + length :]
    return out, buf


def parse_publish(first: int, body: bytes) -> tuple[str, int, int | None, bytes, bool]:
    """A PUBLISH's (topic, qos, packet id, payload, retain)."""
    qos = (first >> 1) & 3
    tlen = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + tlen].decode()
    at = 2 + tlen
    packet_id = int.from_bytes(body[at : at + 2], "big") if qos else None
    return topic, qos, packet_id, body[at + (2 if qos else 0) :], bool(first & 1)
