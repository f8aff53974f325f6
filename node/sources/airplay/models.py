"""The AirPlay source's models: its retained state, its config and what it keeps between starts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from node.sources import SourceConfig, SourceState


class AirplayState(SourceState):
    """Retained `source/airplay`: the sender, its track, and whether it can be remote-controlled."""

    sender: str | None = Field(default=None, description="the sending device's name, e.g. Anna's iPhone")
    sender_address: str | None = Field(default=None, description="its IP address")
    user_agent: str | None = Field(default=None, description="its AirPlay software, e.g. AirPlay/381.13")
    remote: bool = Field(
        default=False, description="the sender accepts play/pause/next/previous from the node (DACP)"
    )
    volume_db: float | None = Field(
        default=None, description="the sender's own volume slider, 0 (full) to -30 dB; -144 = muted"
    )
    name: str = Field(default="", description="the name senders see")
    device: str = Field(default="", description="the ALSA PCM its audio goes to now")
    version: str = Field(default="", description="shairport-sync's version")


class AirplayConfig(SourceConfig):
    """`[airplay]`: how shairport-sync is run and announced."""

    name: str = Field(default="", max_length=63, description="the name senders see; empty = the node's id")
    program: str = Field(default="shairport-sync", description="the binary, a name on PATH or a path")
    service: Literal["child", "systemd"] = Field(
        default="child",
        description="child: the node starts it and restarts it with backoff; systemd: its unit",
    )
    port: int = Field(default=5000, ge=1, le=65535, description="RTSP port senders connect to")
    udp_port_base: int = Field(default=6001, ge=1024, le=65500, description="first of its ten UDP ports")
    output_device: str = Field(
        default="", description="ALSA PCM to play into; empty = the one routing assigns (milo_airplay)"
    )
    backend: Literal["alsa", "dummy"] = Field(default="alsa", description="dummy plays nowhere (tests)")
    sender_volume: bool = Field(
        default=True, description="the sender's volume slider attenuates the stream (else full level)"
    )
    allow_interruption: bool = Field(
        default=False, description="a second sender may take over from the one playing"
    )
    session_timeout_s: int = Field(
        default=120, ge=0, le=3600, description="a silent sender is dropped after this; 0 = never"
    )
    restart_to_move: bool = Field(
        default=True,
        description="a routing change while a sender plays without remote control restarts "
        "shairport-sync (the sender is disconnected); false: the move waits for its next pause",
    )
    start_timeout_s: float = Field(default=5.0, gt=0, le=60)
    restart_first_s: float = Field(default=0.5, gt=0, le=60, description="first restart delay after it dies")
    restart_cap_s: float = Field(default=30.0, gt=0, le=600)
    remote_timeout_s: float = Field(default=2.0, gt=0, le=30, description="for a command to the sender")
    covers_kept: int = Field(default=20, ge=1, le=200, description="cover images kept under /logos/")


class AirplayData(BaseModel):
    """The cover images this source stored (oldest first), so it removes only its own."""

    model_config = ConfigDict(extra="forbid")

    covers: list[str] = Field(default_factory=list)
