"""Station logos: an uploaded image is checked, shrunk, stripped and stored as a PNG named by its hash."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from node.framework.errors import MiloError
from node.framework.files import write_atomic

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["MAX_LOGOS", "NAME_RE", "LogoError", "LogoInfo", "sniff", "store_logo"]

# Names are content hashes, so the HTTP side can serve them as immutable and nothing else matches.
NAME_RE = re.compile(r"[0-9a-f]{16,64}\.png")
MAX_LOGOS = 500
HASH_CHARS = 32

# By magic bytes, never by the client's Content-Type or file name: SVG (scripts), TIFF, PSD and the
# rest of what Pillow can open are not worth their parsers' attack surface for a station logo.
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_GIF = (b"GIF87a", b"GIF89a")


class LogoError(MiloError):
    """A refused upload: `code` for programs, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LogoInfo:
    """One stored logo."""

    name: str
    width: int
    height: int
    size: int

    @property
    def url(self) -> str:
        return f"/logos/{self.name}"


def sniff(data: bytes) -> str | None:
    """The Pillow format name for the image types we take, or None."""
    if data.startswith(_PNG):
        return "PNG"
    if data.startswith(_JPEG):
        return "JPEG"
    if data.startswith(_GIF):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def store_logo(
    data: bytes, directory: Path, *, max_pixels: int = 4096 * 4096, max_side: int = 512
) -> LogoInfo:
    """Re-encode an uploaded image as a PNG of at most `max_side` a side and store it in `directory`.

    Blocking and CPU-heavy: call it in a thread. Raises LogoError for anything refused.
    """
    kind = sniff(data)
    if kind is None:
        raise LogoError("not_an_image", "this is not a PNG, JPEG, GIF or WebP image")
    # Pillow costs several MB of resident memory: only a node that is handed an upload pays for it.
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    # Pillow checks the header's size as it opens a file, but only warns above its limit and fails at
    # twice it: with the warning made an error it refuses at ours. The limit is process-wide, hence
    # put back after (the node decodes one upload at a time).
    saved_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            frame = _small_first_frame(data, kind, max_pixels, max_side)
    except LogoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise LogoError(
            "too_many_pixels", f"the image has too many pixels; at most {max_pixels} are accepted"
        ) from exc
    except UnidentifiedImageError as exc:
        raise LogoError("not_an_image", f"not a readable {kind} image") from exc
    except ValueError as exc:  # a pixel format convert() has no path for (16-bit greyscale, ...)
        raise LogoError("unsupported_image", f"unsupported {kind} image: {exc}") from exc
    except (OSError, SyntaxError, EOFError) as exc:  # Pillow's plugins report broken files with these
        raise LogoError("corrupt_image", f"damaged {kind} image: {exc}") from exc
    except Exception as exc:
        # Crafted files reach parser corners (EXIF above all) that fail with struct.error, IndexError...:
        # whatever the cause, the upload is unusable and the client should hear so.
        raise LogoError("corrupt_image", f"damaged {kind} image ({type(exc).__name__})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit

    # A fresh image carries no metadata at all (EXIF with GPS, ICC, text chunks), unlike a converted one.
    clean = Image.frombytes("RGBA", frame.size, frame.tobytes())
    out = io.BytesIO()
    clean.save(out, format="PNG", optimize=True)
    png = out.getvalue()

    name = hashlib.sha256(png).hexdigest()[:HASH_CHARS] + ".png"
    target = directory / name
    info = LogoInfo(name=name, width=clean.width, height=clean.height, size=len(png))
    if target.is_file():
        return info  # the same image again: same bytes, same name, nothing to write
    if directory.is_dir() and sum(1 for p in directory.iterdir() if NAME_RE.fullmatch(p.name)) >= MAX_LOGOS:
        raise LogoError("too_many_logos", f"there are already {MAX_LOGOS} logos, the most this node keeps")
    write_atomic(target, png)
    return info


def _small_first_frame(data: bytes, kind: str, max_pixels: int, max_side: int) -> PILImage:
    """The first frame, upright, as RGBA, fitted into max_side x max_side (never enlarged)."""
    from PIL import Image, ImageOps  # noqa: PLC0415

    with Image.open(io.BytesIO(data), formats=[kind]) as img:
        width, height = img.size  # from the header: nothing is decoded yet
        if width * height > max_pixels:
            raise LogoError(
                "too_many_pixels", f"the image is {width}x{height} pixels; at most {max_pixels} are accepted"
            )
        if kind == "JPEG":
            # The decoder scales by 1/2..1/8 as it decodes: a 4000x3000 photo never takes its 48 MB
            # in memory, and the result still has at least max_side pixels a side.
            img.draft(None, (max_side, max_side))
        img.load()  # decodes all of the first frame's data: truncated files fail here
        # Shrunk before any conversion where resampling works on the decoded mode, so a large image
        # is never copied at full size; palette and 1-bit images must become RGBA first.
        frame = img if img.mode in ("RGB", "RGBA", "L", "LA") else img.convert("RGBA")
        frame.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return ImageOps.exif_transpose(frame).convert("RGBA")
