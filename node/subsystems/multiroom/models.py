"""The multiroom subsystem's models: its retained state, config, persisted data, commands and presets."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from node.adapters.snapcast import Codec
from node.framework.subsystem import SubsystemConfig

PresetName = Literal["low_latency", "balanced", "quality"]
Preset = Literal["low_latency", "balanced", "quality", "custom"]
ServerStatus = Literal["starting", "running", "restarting", "unreachable"]
MAX_BUFFER_MS = 10_000
MAX_LATENCY_MS = 10_000
# Client ids are MACs, `MAC#2` for a second instance, or a --hostID: anything but MQTT's wildcards
# and separators may stand in a topic level.
CLIENT_KEY = r"^[^/#+\s]{1,100}$"
_UNSAFE = re.compile(r"[/#+\s]")


def client_key(snapcast_id: str) -> str:
    """The id a client has on MQTT (`multiroom/client/<id>/set`): its Snapcast id, made topic-safe."""
    return _UNSAFE.sub("_", snapcast_id)[:100] or "_"


class Settings(BaseModel):
    """The server settings a preset stands for."""

    model_config = ConfigDict(extra="forbid")

    buffer_ms: int = Field(default=1000, ge=100, le=MAX_BUFFER_MS, description="end-to-end latency")
    codec: Codec = Field(default="flac", description="what the audio travels as")
    chunk_ms: int = Field(default=20, ge=10, le=100, description="read chunk of the sources")


PRESETS: dict[PresetName, Settings] = {
    # Speakers in one room with the TV: pcm costs no encoder delay; a wired or quiet Wi-Fi network.
    "low_latency": Settings(buffer_ms=300, codec="pcm", chunk_ms=10),
    # Snapcast's own defaults.
    "balanced": Settings(buffer_ms=1000, codec="flac", chunk_ms=20),
    # Lossless and the longest buffer: rides out Wi-Fi dropouts of two seconds.
    "quality": Settings(buffer_ms=2500, codec="flac", chunk_ms=26),
}


def preset_of(settings: Settings) -> Preset:
    for name, preset in PRESETS.items():
        if preset == settings:
            return name
    return "custom"


class ServerSettings(Settings):
    """The server's settings now, and which preset they match."""

    preset: Preset = "balanced"
    sample_format: str = Field(default="48000:16:2", description="rate:bits:channels of every stream")


class ClientState(BaseModel):
    """One Snapcast client (this node's own, a satellite, any other snapclient)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=CLIENT_KEY, description="`multiroom/client/<id>/set` addresses it")
    snapcast_id: str = Field(description="its id on the server (MAC, MAC#n or --hostID)")
    name: str = Field(description="its name, else its host's name")
    host: str = Field(default="", description="the host it runs on")
    ip: str = ""
    connected: bool = False
    volume: int = Field(default=100, ge=0, le=100)
    muted: bool = Field(default=False, description="muted itself, or its group is")
    latency: int = Field(default=0, description="ms added to compensate its own output delay")
    version: str = Field(default="", description="snapclient version")
    stream: str | None = Field(default=None, description="the stream its group plays")
    local: bool = Field(default=False, description="the node's own client, on its DAC")


class StreamState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    status: str = Field(description="idle, playing, disabled, unknown")


class MultiroomState(BaseModel):
    """Retained `<base>/multiroom`: the server, its settings, the stream playing, every client."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="multiroom mode is on (routing.multiroom)")
    server: ServerStatus = "starting"
    version: str = Field(default="", description="snapserver version")
    managed: Literal["child", "systemd", "external"] = "child"
    error: str | None = Field(default=None, description="why the server is not running")
    restarts: int = Field(default=0, description="times snapserver was restarted after it died")
    applying: bool = Field(
        default=False, description="new settings wait for the server's restart (a few seconds)"
    )
    stream_port: int = 0
    control_port: int = 0
    settings: ServerSettings = Field(default_factory=ServerSettings)
    presets: dict[PresetName, Settings] = Field(default_factory=lambda: dict(PRESETS))
    stream: str | None = Field(default=None, description="the stream every client is set to")
    streams: list[StreamState] = Field(default_factory=list)
    local_client: str = Field(default="", description="id of this node's own client")
    local_running: bool = Field(default=False, description="this node's snapclient is running")
    clients: list[ClientState] = Field(default_factory=list)


class MultiroomConfig(SubsystemConfig):
    """`[multiroom]`: how snapserver and the local snapclient are run and reached."""

    manage: Literal["child", "systemd", "external"] = Field(
        default="child",
        description="child: the node runs snapserver/snapclient itself; systemd: their units; "
        "external: a snapserver someone else runs (settings are then read-only)",
    )
    snapserver: str = Field(default="snapserver", max_length=300, description="the snapserver program")
    snapclient: str = Field(default="snapclient", max_length=300, description="the snapclient program")
    systemctl: str = Field(default="systemctl", max_length=300)
    server_host: str = Field(default="127.0.0.1", max_length=253, description="where the control port is")
    bind: str = Field(default="0.0.0.0", max_length=253, description="where snapserver listens")
    stream_port: int = Field(default=1704, ge=1, le=65535)
    control_port: int = Field(default=1705, ge=1, le=65535)
    http_port: int = Field(default=0, ge=0, le=65535, description="snapserver's HTTP/WebSocket; 0: off")
    sample_format: str = Field(default="48000:16:2", pattern=r"^\d{4,6}:(16|24|32):[12]$")
    loopback_card: str = Field(default="Loopback", max_length=64, pattern=r"^[A-Za-z0-9_]+$")
    loopback_capture_device: int = Field(
        default=1, ge=0, le=1, description="the Loopback side snapserver captures (sources play into 0)"
    )
    streams: dict[str, str] = Field(
        default_factory=dict,
        description="source -> snapserver source URI replacing its Loopback capture (tests: a pipe)",
    )
    local_client: bool = Field(default=True, description="play on this node's DAC in multiroom mode")
    host_id: str = Field(
        default="", max_length=100, pattern=r"^[A-Za-z0-9_.:-]*$", description="local client id; empty: node"
    )
    client_soundcard: str = Field(
        default="", max_length=200, description="the local client's PCM; empty: the DAC routing plays to"
    )
    client_player: str = Field(default="alsa", max_length=300, description="snapclient --player")
    client_mixer: str = Field(default="software", max_length=100, description="snapclient --mixer")
    client_pcm_latency: int = Field(default=0, ge=0, le=2000, description="snapclient --latency (ms)")
    initial_volume: int | None = Field(
        default=None, ge=0, le=100, description="a new client's volume when no other one plays"
    )
    rpc_timeout_s: float = Field(default=2.0, gt=0, le=30)
    restart_first_s: float = Field(default=0.2, gt=0, le=30, description="first restart delay")
    restart_cap_s: float = Field(default=10.0, gt=0, le=300, description="longest restart delay")
    settle_s: float = Field(
        default=3.0,
        ge=0,
        le=30,
        description="a settings change restarts snapserver no sooner than this after its last start",
    )


class Remembered(BaseModel):
    """What the node knows of a client, to give it back when snapserver lost it (a crash)."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    volume: int = Field(default=100, ge=0, le=100)
    muted: bool = False
    latency: int = 0


class MultiroomData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    settings: Settings = Field(default_factory=Settings)  # the defaults are the balanced preset
    stream: str | None = None
    clients: dict[str, Remembered] = Field(default_factory=dict, description="by Snapcast id")


# Commands -----------------------------------------------------------------------------------------
class MultiroomCommand(BaseModel):
    """`multiroom/set`: a preset, server settings, or multiroom on/off (forwarded to routing)."""

    model_config = ConfigDict(extra="forbid")

    preset: PresetName | None = None
    buffer_ms: int | None = Field(default=None, ge=100, le=MAX_BUFFER_MS)
    codec: Codec | None = None
    chunk_ms: int | None = Field(default=None, ge=10, le=100)
    enabled: bool | None = Field(default=None, description="routing/set {multiroom}")

    @model_validator(mode="after")
    def _something(self) -> MultiroomCommand:
        if not self.model_fields_set - {"preset"} and self.preset is None:
            raise ValueError("give preset, buffer_ms, codec, chunk_ms or enabled")
        if self.preset is not None and {"buffer_ms", "codec", "chunk_ms"} & self.model_fields_set:
            raise ValueError("give a preset or settings, not both")
        return self


class ClientChange(BaseModel):
    """`multiroom/client/<id>/set`: any of name, volume, muted, latency; or forget a gone client."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    volume: int | None = Field(default=None, ge=0, le=100)
    delta: int | None = Field(default=None, ge=-100, le=100, description="relative volume change")
    muted: bool | None = None
    latency: int | None = Field(default=None, ge=0, le=MAX_LATENCY_MS, description="ms, at most the buffer")
    forget: bool | None = Field(default=None, description="remove a disconnected client from the list")

    @model_validator(mode="after")
    def _something(self) -> ClientChange:
        if not self.model_fields_set:
            raise ValueError("give name, volume, delta, muted, latency or forget")
        if self.volume is not None and self.delta is not None:
            raise ValueError("give volume or delta, not both")
        return self


ClientKeyword = Literal["mute", "unmute", "toggle_mute"]


def _client_form(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "volume"
    if isinstance(value, dict | ClientChange):
        return "change"
    if isinstance(value, str):
        return "keyword"
    return None


ClientCommand = Annotated[
    Annotated[Annotated[int, Field(ge=0, le=100)], Tag("volume")]
    | Annotated[ClientChange, Tag("change")]
    | Annotated[ClientKeyword, Tag("keyword")],
    Discriminator(
        _client_form,
        custom_error_type="invalid_command",
        custom_error_message="expected a volume 0-100, +N/-N, mute, unmute, toggle_mute or a JSON object",
    ),
]
