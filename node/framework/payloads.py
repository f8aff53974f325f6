"""Payload models shared by every subsystem: errors, replies, requests, and command parsing."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from node.framework.errors import CommandError

# Longest payload echoed back in an error answer: enough to recognise it, not a way to amplify.
ECHO_LIMIT = 512


class ErrorPayload(BaseModel):
    """Published (not retained) on `<base>/error` when a command cannot be applied."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(description="the topic the refused message was published to")
    payload: str = Field(description="the refused payload, as text, cut to 512 characters")
    error: str = Field(description="a message for a person")
    code: str = Field(description="a stable machine code, e.g. invalid_payload, unknown_command, disabled")


class Request(BaseModel):
    """The envelope of a request/response call: `<base>/<sub>/<verb>`, answered on `reply_to`."""

    model_config = ConfigDict(extra="allow")

    reply_to: str = Field(min_length=1, max_length=256, description="topic the answer is published to")
    id: str | int | None = Field(default=None, description="echoed in the answer")

    @field_validator("reply_to")
    @classmethod
    def _no_wildcards(cls, value: str) -> str:
        if "+" in value or "#" in value or value.startswith("$"):
            raise ValueError("reply_to must be a plain topic (no wildcards, no $)")
        # Else a request would make the node publish on a state, status or error topic (also on a
        # broker whose ACL is not the node's; the embedded one checks the owner too, broker/auth.py).
        levels = value.split("/")
        if value.startswith("milo/") and (len(levels) < 4 or levels[2] != "reply"):
            raise ValueError("reply_to under milo/ must be milo/<id>/reply/<client>/...")
        return value


class Reply(BaseModel):
    """The answer to a request, on its `reply_to` topic."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = None
    ok: bool
    result: Any = None
    error: str | None = None
    code: str | None = None


Availability = Literal["online", "offline"]


def echo(payload: bytes) -> str:
    return payload[:ECHO_LIMIT].decode("utf-8", errors="replace")


RELATIVE = re.compile(r"^[+-][0-9]+(\.[0-9]+)?$")  # ASCII digits only (\d takes any script's)
# Bounds checked before json.loads sees a payload: Python's parser recurses per nesting level
# (10,000 levels is a RecursionError) and turns 4,300 digits into an integer slowly, then refuses.
MAX_DEPTH = 32
MAX_DIGITS = 40
_DIGITS = re.compile(rb"[0-9]{%d,}" % (MAX_DIGITS + 1))


def check_json_limits(data: bytes) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH or holding a number of more than MAX_DIGITS digits."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise CommandError("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
        elif byte in (0x5D, 0x7D):
            depth -= 1
    if _DIGITS.search(_outside_strings(data)):
        raise CommandError("number_too_long", f"a number of more than {MAX_DIGITS} digits")


def _outside_strings(data: bytes) -> bytes:
    # Digits inside strings (a station id, a URL) are text, not numbers.
    return re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', data)


def decode_command(payload: bytes) -> Any:
    """JSON if it parses, else the stripped text: `40` -> 40, `{"percent": 40}` -> dict, `+5` -> "+5".

    A leading sign always means relative (`-5` is "five less", as on a knob), so signed numbers stay
    text for the subsystem's `parse_text` even though `-5` is valid JSON.
    """
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise CommandError("invalid_encoding", "payload is not UTF-8 text") from exc
    if not text:
        raise CommandError("empty_payload", "empty command")
    check_json_limits(payload)
    if RELATIVE.match(text):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def decode_object(payload: bytes) -> dict[str, Any]:
    """A JSON object, or a CommandError that says why not."""
    check_json_limits(payload)
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError("invalid_json", f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CommandError("invalid_json", "a JSON object is expected")
    return value
