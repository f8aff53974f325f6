"""Station playlists (PLS, M3U, ASX, XSPF): their entries, and the checked stream URL a station plays."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from node.adapters.http_client import follow_redirects, http_request
from node.adapters.urlguard import redirect_checker, resolve_url
from node.framework.errors import DaemonError

# Played through our own fetch and check; `.m3u8` is HLS, which mpv must open itself.
PLAYLIST_EXTENSIONS = (".pls", ".m3u", ".asx", ".xspf")
PLAYLIST_MAX_BYTES = 64 * 1024
_PLAYLIST_URL = re.compile(
    r"^\s*File\d+\s*=\s*(\S+)\s*$"  # PLS
    r"|^\s*([a-z][a-z0-9+.-]*://\S+)\s*$"  # M3U: a URL alone on its line
    r"|<ref\s+href\s*=\s*\"([^\"]+)\""  # ASX
    r"|<location>\s*([^<\s]+)\s*</location>",  # XSPF
    re.IGNORECASE | re.MULTILINE,
)


def playlist_entries(text: str) -> list[str]:
    """Stream URLs listed in a PLS, M3U, ASX or XSPF playlist, in order; anything else is ignored."""
    found: list[str] = []
    for match in _PLAYLIST_URL.finditer(text):
        url = next(g for g in match.groups() if g is not None).strip()
        if url.lower().startswith(("http://", "https://")) and url not in found:
            found.append(url)
    return found


class PlaylistError(DaemonError):
    """A station's playlist answered, but with nothing mpv could play."""


async def stream_of(url: str, *, allow_private: bool, user_agent: str, timeout: float) -> str:
    """The URL to hand to mpv: the station's, or the first entry of its playlist, each one checked.

    mpv would expand a playlist itself and open its entries unchecked; those URLs come from the
    station's server, not from the user or the directory, so they get the same SSRF check here.
    Redirects are followed here, each hop checked, and mpv is given where they end (it is told not
    to follow any itself: node/adapters/mpv.py); a redirect to a playlist is expanded as one.
    Raises UnsafeURLError for a refused address; HttpClientError or PlaylistError for a playlist
    that cannot be used.
    """
    safe = await resolve_url(url, allow_private=allow_private)
    check = redirect_checker(allow_private=allow_private)
    if not _is_playlist(url):
        url = await follow_redirects(
            url,
            redirect_check=check,
            headers={"User-Agent": user_agent},
            timeout=timeout,
            connect_address=safe.address,
        )
        if not _is_playlist(url):
            return url
        safe = await resolve_url(url, allow_private=allow_private)
    response = await http_request(
        "GET",
        url,
        headers={"User-Agent": user_agent},
        timeout=timeout,
        max_bytes=PLAYLIST_MAX_BYTES,
        connect_address=safe.address,
        max_redirects=3,
        redirect_check=check,
    )
    if not 200 <= response.status < 300:
        raise PlaylistError(f"HTTP {response.status} {response.reason}")
    entries = playlist_entries(response.body.decode("utf-8", errors="replace"))
    if not entries:
        raise PlaylistError("no stream URL in it")
    entry = entries[0]
    safe = await resolve_url(entry, allow_private=allow_private)
    return await follow_redirects(
        entry,
        redirect_check=check,
        headers={"User-Agent": user_agent},
        timeout=timeout,
        connect_address=safe.address,
    )


def _is_playlist(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(PLAYLIST_EXTENSIONS)
