"""Topic names of the MQTT contract, node-id validation and filter matching."""

from __future__ import annotations

import re
import socket

NODE_ID_RE = re.compile(r"^[a-z0-9_-]+$")
PREFIX = "milo"


def valid_node_id(node_id: str) -> bool:
    return bool(NODE_ID_RE.match(node_id))


def default_node_id() -> str:
    """The host name, lowered and reduced to the characters a node id may hold."""
    raw = socket.gethostname().split(".")[0].lower()
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", raw).strip("-")
    return cleaned or "milo"


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 filter matching (`+` one level, `#` the rest; `$` topics never match a leading wildcard)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level not in ("+", t_levels[i])):
            return False
    return len(f_levels) == len(t_levels)


class Topics:
    """Every topic of one node, built from its base `milo/<node_id>`."""

    def __init__(self, node_id: str) -> None:
        if not valid_node_id(node_id):
            raise ValueError(f"node id {node_id!r} must match [a-z0-9_-]+")
        self.node_id = node_id
        self.base = f"{PREFIX}/{node_id}"

    def of(self, path: str) -> str:
        return f"{self.base}/{path}"

    @property
    def status(self) -> str:
        return self.of("status")

    @property
    def error(self) -> str:
        return self.of("error")
