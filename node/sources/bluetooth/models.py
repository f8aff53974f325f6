"""The Bluetooth source's models: its config, its state (phones, pairing), and its commands."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

from node.sources import SourceConfig, SourceState

ADDRESS_PATTERN = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"
MAX_WINDOW_S = 3600

Address = Annotated[
    str,
    Field(pattern=ADDRESS_PATTERN, description="a Bluetooth address, AA:BB:CC:DD:EE:FF"),
    AfterValidator(str.upper),
]


class BluetoothConfig(SourceConfig):
    dbus_address: str = Field(
        default="",
        max_length=500,
        description="D-Bus address of BlueZ and bluez-alsa (unix:path=/run/x.sock); empty: the system bus",
    )
    adapter: str = Field(
        default="", max_length=32, pattern=r"^[a-z0-9]*$", description="hci0...; empty: the first adapter"
    )
    alias: str = Field(default="", max_length=248, description="the name phones see; empty: the node's id")
    visibility: Literal["always", "window"] = Field(
        default="always",
        description="always discoverable and pairable, or only for a window opened by the `pairable` command",
    )
    pairable_window_s: int = Field(
        default=180, ge=10, le=MAX_WINDOW_S, description="how long `pairable` opens the node, in seconds"
    )
    pairing: Literal["accept", "ask"] = Field(
        default="accept",
        description='accept every phone that pairs, or ask (pending_pairing, answered by {"accept": bool})',
    )
    pairing_timeout_s: int = Field(
        default=30, ge=1, le=300, description="an unanswered pairing request is refused after this long"
    )
    pin_code: str = Field(
        default="0000", pattern=r"^[0-9]{4,16}$", description="for old devices that pair with a PIN code"
    )
    trust: bool = Field(default=True, description="paired phones are trusted: they reconnect without asking")
    connections: Literal["newest", "refuse", "several"] = Field(
        default="newest",
        description="a second phone connecting: takes over (newest), is disconnected (refuse), or both stay",
    )
    volume_sync: bool = Field(
        default=True,
        description="the phone's volume (AVRCP absolute volume) and the node's volume follow each other",
    )
    aplay: str = Field(default="bluealsa-aplay", min_length=1, max_length=500, description="program path")
    aplay_args: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=20, description="extra bluealsa-aplay options"
    )
    bluealsa_suffix: str = Field(
        default="",
        max_length=64,
        pattern=r"^[A-Za-z0-9_]*$",
        description="bluealsa's -B name: the service is org.bluealsa.<suffix>; empty: org.bluealsa",
    )
    reconnect_cap_s: float = Field(
        default=10.0, ge=0.1, le=300.0, description="longest wait between attempts to reach D-Bus again"
    )


class Phone(BaseModel):
    """A connected phone."""

    model_config = ConfigDict(extra="forbid")

    address: str
    name: str
    codec: str | None = Field(default=None, description="A2DP codec (SBC, AAC...), once audio is set up")
    sample_rate: int | None = Field(default=None, description="Hz")
    volume: int | None = Field(
        default=None, ge=0, le=100, description="the phone's AVRCP absolute volume in %, where it sends one"
    )
    state: Literal["connected", "playing", "paused"] = "connected"
    player: str | None = Field(default=None, description="the phone's app that AVRCP controls, if any")


class PairedDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    name: str
    connected: bool = False
    trusted: bool = False


class PendingPairing(BaseModel):
    """A pairing waiting for `{"accept": true|false}` (pairing = ask)."""

    model_config = ConfigDict(extra="forbid")

    address: str
    name: str
    passkey: str | None = Field(default=None, description="six digits the phone shows too, when it does")
    expires_at: int = Field(description="Unix time in ms when it is refused unanswered")


class BluetoothState(SourceState):
    """Retained `<base>/source/bluetooth`."""

    alias: str | None = Field(default=None, description="the name phones see")
    adapter: str | None = Field(default=None, description="the adapter's address")
    discoverable: bool = False
    pairable: bool = False
    pairable_until: int | None = Field(
        default=None, description="Unix time in ms when the pairing window closes; None: no window open"
    )
    device: Phone | None = Field(default=None, description="the phone playing, or the newest connected")
    devices: list[Phone] = Field(default_factory=list, description="every connected phone, newest first")
    paired: list[PairedDevice] = Field(default_factory=list)
    pending_pairing: PendingPairing | None = None
    output: str | None = Field(default=None, description="the ALSA PCM bluealsa-aplay plays into now")
    bluealsa: str | None = Field(default=None, description="the bluez-alsa daemon's version")


# Commands ------------------------------------------------------------------------------------------
class Disconnect(BaseModel):
    """`disconnect`: every connected phone (true), or the one with this address."""

    model_config = ConfigDict(extra="forbid")

    disconnect: Literal[True] | Address


class Pairable(BaseModel):
    """`pairable`: open the pairing window for this many seconds (0 closes it)."""

    model_config = ConfigDict(extra="forbid")

    pairable: Annotated[int, Strict(), Field(ge=0, le=MAX_WINDOW_S)]


class Forget(BaseModel):
    """`{"forget": address}`: unpair a device (it must pair again to connect)."""

    model_config = ConfigDict(extra="forbid")

    forget: Address


class Accept(BaseModel):
    """`{"accept": true|false}`: the answer to `pending_pairing`."""

    model_config = ConfigDict(extra="forbid")

    accept: bool
