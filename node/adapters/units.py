"""systemd unit files rendered from systemd/*.j2 (jinja2, every variable required)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from node.resources import data_dir

SUFFIX = ".j2"


def templates() -> list[str]:
    """The unit names there is a template for, e.g. `milo.service`."""
    return sorted(p.name.removesuffix(SUFFIX) for p in data_dir("systemd").glob(f"*{SUFFIX}"))


def render_unit(unit: str, context: Mapping[str, Any]) -> str:
    """The text of `unit` (a name from `templates()`) for `context`; a missing variable is an error."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(data_dir("systemd")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - unit files, not HTML
    )
    return env.get_template(unit + SUFFIX).render(**context)


def base_context(
    *,
    milo: str = "/usr/bin/milo",
    user: str = "milo",
    data_dir: str = "/var/lib/milo",
    config: str = "/etc/milo/milo.toml",
    gpio: bool = True,
    http_port: int = 8080,
    go_librespot: str = "/usr/local/bin/go-librespot",
    roc_recv: str = "/usr/local/bin/roc-recv",
    roc_ports: tuple[int, int, int] = (10011, 10012, 10013),
    snapserver: str = "/usr/bin/snapserver",
    snapclient: str = "/usr/bin/snapclient",
    snapserver_host: str = "127.0.0.1",
    bluealsa: str = "/usr/bin/bluealsa",
    bluealsa_options: Sequence[str] = (),
    groups: Sequence[str] | None = None,
    writable_paths: Sequence[str] = (),
    **daemons: Any,
) -> dict[str, Any]:
    """What every template may use: who runs it, where its files are, where the programs are.

    `groups` are the user's supplementary groups (default audio, and gpio when `gpio`): an install
    passes those that exist, since a unit naming a missing group does not start. `writable_paths`
    are more ReadWritePaths= of the node's unit (a screen's backlight in sysfs). `daemons` overrides a
    program's path or adds a key a daemon's template needs.
    """
    return {
        "milo": milo,
        "user": user,
        "groups": list(groups) if groups is not None else ["audio", *(["gpio"] if gpio else [])],
        "writable_paths": list(writable_paths),
        "data_dir": data_dir,
        "config": config,
        "gpio": gpio,
        "http_port": http_port,
        "node_unit": "milo.service",
        # The kiosk: cage (a Wayland kiosk compositor) on this console, Chromium in it.
        "tty": "tty1",
        "cage": "/usr/bin/cage",
        "chromium": "/usr/bin/chromium",
        # Daemons built by hand on a Pi (README: Spotify and ROC); the roc-recv unit listens on loopback
        # ports behind the node's relay (source, repair, control), the same as the roc source's unit_ports.
        "go_librespot": go_librespot,
        "roc_recv": roc_recv,
        "roc_ports": roc_ports,
        # snapserver/snapclient units (multiroom); a satellite's client names its main node's host.
        "snapserver": snapserver,
        "snapclient": snapclient,
        "snapserver_host": snapserver_host,
        # bluealsa.service: the daemon, and options after `-p a2dp-sink --a2dp-volume` (e.g. -c aac).
        "bluealsa": bluealsa,
        "bluealsa_options": list(bluealsa_options),
        **daemons,
    }
