"""Node configuration: defaults < TOML file < MILO_* environment < command line, checked as a whole."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from node.framework.bus import BrokerURL
from node.framework.errors import ConfigError, validation_messages
from node.framework.topics import default_node_id, valid_node_id
from node.resources import data_dir

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEM_CONFIG = Path("/etc/milo/milo.toml")
SYSTEM_DATA_DIR = Path("/var/lib/milo")


def default_data_dir() -> Path:
    """/var/lib/milo where this user may write there (an installed Pi), else the user's data dir."""
    if SYSTEM_DATA_DIR.is_dir() and os.access(SYSTEM_DATA_DIR, os.W_OK):
        return SYSTEM_DATA_DIR
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "milo"


class MqttOptions(BaseModel):
    """The embedded broker's limits (`[mqtt]` in the config file)."""

    model_config = ConfigDict(extra="forbid")

    max_payload: int = Field(default=1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    retained_flush_s: float = Field(default=1.0, ge=0.0, le=60.0)
    keepalive_grace_s: int = Field(default=2, ge=0, le=60)
    # Limits per client (README "Security"); 0 switches one off.
    connect_timeout_s: float = Field(default=5.0, ge=0.0, le=300.0)
    max_connections: int = Field(default=256, ge=0, le=100_000)
    max_subscriptions: int = Field(default=200, ge=0, le=100_000)
    rate: float = Field(default=200.0, ge=0.0, le=1_000_000.0, description="PUBLISH per second per client")
    burst: int = Field(default=400, ge=1, le=1_000_000)
    rate_grace_s: float = Field(default=5.0, ge=0.0, le=3600.0)


class AuthOptions(BaseModel):
    """Who may use the node without logging in (`[auth]`; README, Security)."""

    model_config = ConfigDict(extra="forbid")

    # "loopback": clients on the node's own host (the kiosk, scripts) need no login; LAN clients
    # neither while no user exists (a fresh install works from a phone), and must log in once the
    # first user is added. "all": anonymous LAN clients get `anonymous_lan_role`. "none": everyone
    # logs in, the kiosk too.
    anonymous: Literal["loopback", "all", "none"] = "loopback"
    anonymous_lan_role: Literal["read", "control"] = "read"
    # What anonymous clients on the node's own host may do: "node" trusts every local process with
    # the node's own rights (another node process on the same host, the test suite).
    loopback_role: Literal["control", "node", "read"] = "control"


class TlsOptions(BaseModel):
    """MQTT over TLS and HTTPS (with MQTT over secure WebSocket), beside the plain listeners (`[tls]`).

    Only in the node's config file, like every node setting: nothing over MQTT changes them.
    """

    model_config = ConfigDict(extra="forbid")

    cert: Path
    key: Path
    bind: str | None = None  # default: the node's `bind`
    mqtt_port: int = Field(default=8883, ge=0, le=65535)
    http_port: int = Field(default=8443, ge=0, le=65535)


NODE_SECTIONS = ("mqtt", "auth", "tls")


class NodeConfig(BaseModel):
    """Settings of the node process; subsystem sections are validated by each subsystem's own model."""

    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(default_factory=default_node_id)
    data_dir: Path = Field(default_factory=default_data_dir)
    bind: str = "0.0.0.0"
    mqtt_port: int = Field(default=1883, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    broker: str | None = None
    # The password of `broker`'s user, in a file of the node's user (0600), never in this file or on a
    # command line: `milo install --satellite --broker-user NAME` writes both.
    broker_password_file: Path | None = None
    only: list[str] = Field(default_factory=list)
    # Subsystems this process leaves out (another process runs them: `milo run --join` on a second Pi).
    skip: list[str] = Field(default_factory=list)
    # This process runs part of a node whose main process is elsewhere (on `broker`): `<base>/status`
    # is that process's; a death of this one shows on its first subsystem's state topic instead.
    join: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The packaged web/ (the checkout's own in an editable install); a user may serve another copy.
    # Pages on these origins may use the node's WebSocket and upload logos, besides its own origin
    # (e.g. "http://milo.local:8080" behind a proxy); any other web page a visitor opens may not.
    allowed_origins: list[str] = Field(default_factory=list, max_length=32)
    web_root: Path = Field(default_factory=lambda: data_dir("web"))
    # Where the router writes asound.conf: /etc/asound.conf on an installed Pi, else <data_dir>/asound.conf.
    alsa_config: Path | None = None
    mqtt: MqttOptions = Field(default_factory=MqttOptions)
    auth: AuthOptions = Field(default_factory=AuthOptions)
    tls: TlsOptions | None = None
    subsystems: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not valid_node_id(value):
            raise ValueError("must match [a-z0-9_-]+")
        return value

    @field_validator("only", "skip", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v for v in value.replace(",", " ").split() if v]
        return value


ENV_KEYS = (
    "node_id",
    "data_dir",
    "bind",
    "mqtt_port",
    "http_port",
    "broker",
    "broker_password_file",
    "only",
    "skip",
    "join",
    "log_level",
    "web_root",
    "alsa_config",
)


def broker_url(config: NodeConfig) -> BrokerURL | None:
    """The external broker with its credentials (the password from its file), None: the embedded one."""
    if not config.broker:
        return None
    url = BrokerURL.parse(config.broker)
    return url.with_password_file(config.broker_password_file) if config.broker_password_file else url


def read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def _split_sections(
    raw: dict[str, Any], subsystem_names: Sequence[str], renamed: Mapping[str, str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Take the `[subsystem]` tables out of `raw`; a table that names no subsystem is a problem."""
    sections: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for key in list(raw):
        value = raw[key]
        if key in renamed and isinstance(value, dict) and renamed[key] not in raw:
            logger.warning("config: [%s] is now called [%s]; please rename it", key, renamed[key])
            sections[renamed[key]] = raw.pop(key)
        elif key in subsystem_names and isinstance(value, dict):
            sections[key] = raw.pop(key)
        elif isinstance(value, dict) and key not in NODE_SECTIONS:
            import difflib  # noqa: PLC0415 - only a misspelt section pays for it (~0.2 MB resident)

            close = difflib.get_close_matches(key, list(subsystem_names), n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            problems.append(f"[{key}]: no such subsystem{hint}")
            raw.pop(key)
    return sections, problems


def load(
    *,
    subsystem_names: Sequence[str],
    renamed: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Merge every source and validate; a ConfigError lists every problem at once."""
    env = os.environ if env is None else env
    path = config_file or (Path(env["MILO_CONFIG"]) if env.get("MILO_CONFIG") else None)
    if path is None and SYSTEM_CONFIG.exists():
        path = SYSTEM_CONFIG
    raw = read_file(path) if path is not None else {}
    renamed = renamed or {}
    sections, problems = _split_sections(raw, subsystem_names, renamed)
    for key in ENV_KEYS:
        value = env.get(f"MILO_{key.upper()}")
        if value not in (None, ""):
            raw[key] = value
    for key, value in (cli or {}).items():
        if value is not None:
            raw[key] = value
    raw["subsystems"] = sections
    try:
        config = NodeConfig.model_validate(raw)
    except ValidationError as exc:
        problems += validation_messages(exc, NodeConfig)
        config = None
    if config is not None:
        config.only = [renamed.get(name, name) for name in config.only]
        config.skip = [renamed.get(name, name) for name in config.skip]
        for option, names in (("--only", config.only), ("--skip", config.skip)):
            unknown = [name for name in names if name not in subsystem_names]
            if unknown:
                known = ", ".join(subsystem_names)
                problems.append(f"{option}: unknown subsystem(s) {unknown}; known: {known}")
        problems += join_problems(config)
    if problems or config is None:
        where = f" ({path})" if path else ""
        raise ConfigError(f"invalid configuration{where}:\n  " + "\n  ".join(problems))
    return config


def join_problems(config: NodeConfig) -> list[str]:
    """What makes `join` meaningless: a process that joins a node must not be that node."""
    if not config.join:
        return []
    problems = []
    if not config.broker:
        problems.append("--join: needs --broker, the broker of the node this process joins")
    if not config.only:
        problems.append("--join: needs --only, the subsystems this process runs for that node")
    if "info" in config.only:
        problems.append("--join: info is the node's main process's; run it there")
    return problems


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # amqtt logs every connection at INFO; keep the node's own lines readable.
    if level != "debug":
        logging.getLogger("amqtt").setLevel(logging.WARNING)
