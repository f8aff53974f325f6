"""The server's clients, groups and streams as snapserver reports them, kept current by its notifications."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from node.subsystems.multiroom.models import ClientState, StreamState, client_key


@dataclass
class Client:
    id: str
    name: str = ""  # its own name on the server; "" shows the host's
    host: str = ""
    ip: str = ""
    connected: bool = False
    volume: int = 100
    muted: bool = False
    latency: int = 0
    version: str = ""
    group: str = ""


@dataclass
class Group:
    id: str
    stream: str = ""
    muted: bool = False


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


@dataclass
class Table:
    """Everything Server.GetStatus said, updated in place by each notification."""

    clients: dict[str, Client] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    streams: dict[str, str] = field(default_factory=dict)  # id -> status
    version: str = ""

    def load(self, server: Mapping[str, Any]) -> None:
        """Replace everything with a `server` object (Server.GetStatus, Server.OnUpdate)."""
        self.clients, self.groups, self.streams = {}, {}, {}
        snapserver = _dict(_dict(server.get("server")).get("snapserver"))
        self.version = str(snapserver.get("version") or self.version)
        for raw_group in server.get("groups") or []:
            group = _dict(raw_group)
            gid = str(group.get("id", ""))
            self.groups[gid] = Group(gid, str(group.get("stream_id") or ""), bool(group.get("muted")))
            for raw_client in group.get("clients") or []:
                client = self._client(_dict(raw_client))
                if client is not None:
                    client.group = gid
        for raw_stream in server.get("streams") or []:
            stream = _dict(raw_stream)
            if stream.get("id"):
                self.streams[str(stream["id"])] = str(stream.get("status") or "unknown")

    def _client(self, raw: Mapping[str, Any]) -> Client | None:
        cid = raw.get("id")
        if not isinstance(cid, str) or not cid:
            return None
        client = self.clients.setdefault(cid, Client(cid))
        config, host = _dict(raw.get("config")), _dict(raw.get("host"))
        volume = _dict(config.get("volume"))
        client.name = str(config.get("name") or "")
        client.host = str(host.get("name") or "")
        client.ip = str(host.get("ip") or "")
        client.connected = bool(raw.get("connected"))
        client.volume = min(100, max(0, _int(volume.get("percent"), 100)))
        client.muted = bool(volume.get("muted"))
        client.latency = _int(config.get("latency"))
        client.version = str(_dict(raw.get("snapclient")).get("version") or client.version)
        return client

    def apply(self, method: str, params: Mapping[str, Any]) -> bool:
        """Fold one notification in; False when it cannot be (re-read the whole status then)."""
        target = str(params.get("id", ""))
        client = self.clients.get(target)
        group = self.groups.get(target)
        if method == "Server.OnUpdate":
            self.load(_dict(params.get("server")))
        elif method in ("Client.OnConnect", "Client.OnDisconnect"):
            if client is None:
                return False  # a client never seen: its group is only in the full status
            self._client(_dict(params.get("client")))
            client.connected = method == "Client.OnConnect"
        elif method == "Client.OnVolumeChanged" and client is not None:
            volume = _dict(params.get("volume"))
            client.volume = min(100, max(0, _int(volume.get("percent"), client.volume)))
            client.muted = bool(volume.get("muted", client.muted))
        elif method == "Client.OnLatencyChanged" and client is not None:
            client.latency = _int(params.get("latency"), client.latency)
        elif method == "Client.OnNameChanged" and client is not None:
            client.name = str(params.get("name") or "")
        elif method == "Group.OnMute" and group is not None:
            group.muted = bool(params.get("mute"))
        elif method == "Group.OnStreamChanged" and group is not None:
            group.stream = str(params.get("stream_id") or "")
        elif method == "Stream.OnUpdate" and target:
            self.streams[target] = str(_dict(params.get("stream")).get("status") or "unknown")
        elif method in ("Group.OnNameChanged", "Stream.OnProperties"):
            pass  # nothing Milo shows
        else:
            return False  # an unknown method, or about something not in the table
        return True

    def by_key(self, key: str) -> Client | None:
        for client in self.clients.values():
            if client_key(client.id) == key:
                return client
        return None

    def group_of(self, client: Client) -> Group | None:
        return self.groups.get(client.group)

    def states(self, local_id: str) -> list[ClientState]:
        """Every client as the retained state lists it: this node's first, then by name."""
        out = []
        for c in self.clients.values():
            group = self.groups.get(c.group)
            out.append(
                ClientState(
                    id=client_key(c.id),
                    snapcast_id=c.id,
                    name=c.name or c.host or c.id,
                    host=c.host,
                    ip=c.ip,
                    connected=c.connected,
                    volume=c.volume,
                    muted=c.muted or (group.muted if group else False),
                    latency=c.latency,
                    version=c.version,
                    stream=(group.stream or None) if group else None,
                    local=c.id == local_id,
                )
            )
        out.sort(key=lambda s: (not s.local, s.name.lower(), s.id))
        return out

    def stream_states(self) -> list[StreamState]:
        return [StreamState(id=sid, status=status) for sid, status in sorted(self.streams.items())]

    def mark_disconnected(self) -> None:
        for client in self.clients.values():
            client.connected = False
