"""The favorites, custom and broken station lists: operations on RadioData that refuse with CommandError."""

# Each changes `data` only once every check has passed; saving and publishing are the caller's.

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from node.adapters.urlguard import UnsafeURLError, check_address
from node.framework.errors import CommandError
from node.sources.radio.models import (
    LOCAL_LOGO,
    MAX_BROKEN,
    MAX_CUSTOM,
    MAX_FAVORITES,
    BrokenStation,
    CustomPatch,
    RadioData,
    RadioStation,
    StationFields,
)


# Favorites ----------------------------------------------------------------------------------------
def is_favorite(data: RadioData, station: RadioStation | None) -> bool:
    return station is not None and has_favorite(data, station.id)


def has_favorite(data: RadioData, station_id: str) -> bool:
    return any(f.id == station_id for f in data.favorites)


def check_favorite_room(data: RadioData) -> None:
    if len(data.favorites) >= MAX_FAVORITES:
        raise CommandError("too_many", f"at most {MAX_FAVORITES} favorites")


def add_favorite(data: RadioData, station: RadioStation) -> None:
    """Append a copy of the station, whole, so it plays without the directory."""
    check_favorite_room(data)
    data.favorites = [*data.favorites, station]


def remove_favorite(data: RadioData, station_id: str) -> None:
    favorites = list(data.favorites)
    favorites.pop(_favorite_index(favorites, station_id))
    data.favorites = favorites


def move_favorite(data: RadioData, station_id: str, to: int) -> None:
    favorites = list(data.favorites)
    moved = favorites.pop(_favorite_index(favorites, station_id))
    favorites.insert(min(to, len(favorites)), moved)
    data.favorites = favorites


def _favorite_index(favorites: list[RadioStation], station_id: str) -> int:
    ids = [f.id for f in favorites]
    if station_id not in ids:
        raise CommandError("unknown_station", f"{station_id!r} is not a favorite")
    return ids.index(station_id)


def neighbour(data: RadioData, current: RadioStation | None, step: int) -> RadioStation:
    """The favorite `step` places from the current station (next and previous go through the favorites)."""
    favorites = data.favorites
    if not favorites:
        raise CommandError("unsupported", "next and previous go through the favorites: there are none")
    ids = [f.id for f in favorites]
    if current is None or current.id not in ids:
        return favorites[0 if step > 0 else -1]
    return favorites[(ids.index(current.id) + step) % len(favorites)]


# Custom stations ----------------------------------------------------------------------------------
def add_custom(data: RadioData, fields: StationFields, *, allow_private: bool, data_dir: Path) -> None:
    if len(data.custom) >= MAX_CUSTOM:
        raise CommandError("too_many", f"at most {MAX_CUSTOM} custom stations")
    values = fields.model_dump()
    check_custom(values, allow_private=allow_private, data_dir=data_dir)
    station = RadioStation(id=f"custom-{secrets.token_hex(6)}", custom=True, **values)
    data.custom = [*data.custom, station]


def update_custom(data: RadioData, patch: CustomPatch, *, allow_private: bool, data_dir: Path) -> None:
    """Change the given fields; the favorite copying the station (if any) changes with it."""
    custom = list(data.custom)
    index = _custom_index(custom, patch.id)
    changes = patch.model_dump(exclude_unset=True, exclude={"id"})
    fields = {**custom[index].model_dump(exclude={"id", "custom"}), **changes}
    try:
        checked = StationFields.model_validate(fields).model_dump()
    except ValueError as exc:
        raise CommandError("invalid_payload", str(exc)) from None
    check_custom(checked, allow_private=allow_private, data_dir=data_dir)
    custom[index] = RadioStation(id=patch.id, custom=True, **checked)
    # A favorite is a copy: keep it the same as the station it copies.
    data.favorites = [custom[index] if f.id == patch.id else f for f in data.favorites]
    data.custom = custom


def remove_custom(data: RadioData, station_id: str) -> None:
    """Remove the station, and the favorite that copies it."""
    custom = list(data.custom)
    custom.pop(_custom_index(custom, station_id))
    data.favorites = [f for f in data.favorites if f.id != station_id]
    data.custom = custom


def _custom_index(custom: list[RadioStation], station_id: str) -> int:
    ids = [c.id for c in custom]
    if station_id not in ids:
        raise CommandError("unknown_station", f"no custom station {station_id!r}")
    return ids.index(station_id)


def check_custom(fields: dict[str, Any], *, allow_private: bool, data_dir: Path) -> None:
    """What can be judged without the network: an address written as an IP, a logo on the node."""
    host = _literal_host(fields["url"])
    if host is not None:
        try:
            check_address(host, allow_private=allow_private)
        except UnsafeURLError as exc:
            raise CommandError("unsafe_url", str(exc)) from None
    logo = fields.get("logo") or ""
    if LOCAL_LOGO.match(logo) and not (data_dir / logo.lstrip("/")).is_file():
        raise CommandError("unknown_logo", f"no uploaded logo {logo}; upload it to /api/logos first")


def _literal_host(url: str) -> str | None:
    host = (urlsplit(url).hostname or "").strip("[]")
    return host if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host) and ("." in host or ":" in host) else None


# Broken stations ----------------------------------------------------------------------------------
def mark_broken(data: RadioData, station: RadioStation, reason: str) -> None:
    """Hide the station from search; past MAX_BROKEN the oldest marks go."""
    broken = dict(data.broken)
    broken[station.id] = BrokenStation(name=station.name, reason=reason[:300], at=time.time())
    while len(broken) > MAX_BROKEN:
        broken.pop(next(iter(broken)))
    data.broken = broken


def unbreak(data: RadioData, ids: list[str]) -> None:
    data.broken = {k: v for k, v in data.broken.items() if k not in ids}


def reset_broken(data: RadioData, reset: str) -> None:
    """`reset` is a station id, or "all"."""
    if reset != "all" and reset not in data.broken:
        raise CommandError("unknown_station", f"station {reset!r} is not marked broken")
    unbreak(data, list(data.broken) if reset == "all" else [reset])
