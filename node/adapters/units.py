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
    groups: Sequence[str] | None = None,
    writable_paths: Sequence[str] = (),
) -> dict[str, Any]:
    """What every template may use: who runs it, where its files are. Daemons' templates add their own.

    `groups` are the user's supplementary groups (default audio, and gpio when `gpio`): an install
    passes those that exist, since a unit naming a missing group does not start. `writable_paths`
    are more ReadWritePaths= of the node's unit (a screen's backlight in sysfs).
    """
    return {
        "milo": milo,
        "user": user,
        "groups": list(groups) if groups is not None else ["audio", *(["gpio"] if gpio else [])],
        "writable_paths": list(writable_paths),
        "data_dir": data_dir,
        "config": config,
        "gpio": gpio,
    }
