"""The node's exceptions: one root, and one kind per way a user or a daemon can fail."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError


class MiloError(Exception):
    """Root of every error the node raises on purpose."""


class ConfigError(MiloError):
    """The configuration (file, environment, command line or a config/set) is not valid."""


class CommandError(MiloError):
    """A command that cannot be applied; answered on `<base>/error` with `code`, state unchanged."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SubsystemUnavailableError(MiloError):
    """What a subsystem needs (a program, a device) is not there; it is retried later."""


class DaemonError(MiloError):
    """A program the node drives failed or went away."""


def validation_messages(exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """Every error of a validation, one per key, with a did-you-mean for unknown keys (Mopidy's habit)."""
    known = list(model.model_fields) if model is not None else []
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and known:
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            msg = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
        parts.append(f"{loc}: {msg}")
    return parts


def format_validation(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    return "; ".join(validation_messages(exc, model))
