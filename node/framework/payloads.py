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


RELATIVE = re.compile(r"^[+-]\d+(\.\d+)?$")


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
    if RELATIVE.match(text):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def decode_object(payload: bytes) -> dict[str, Any]:
    """A JSON object, or a CommandError that says why not."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError("invalid_json", f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CommandError("invalid_json", "a JSON object is expected")
    return value
