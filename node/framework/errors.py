"""The node's exceptions: one root, and one kind per way a user or a daemon can fail."""

from __future__ import annotations

from typing import Any

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


# What pydantic names a union's alternatives in an error's location: a model's class name, a
# validator-wrapped type ("function-after[...]"), a literal ("literal['play', ...]") or a plain type.
_PLAIN_TYPES = frozenset({"int", "str", "float", "bool", "list", "dict", "none"})
# Errors that say the input has another shape than the alternative: not this form at all.
_SHAPE = frozenset({"extra_forbidden", "missing", "model_type", "model_attributes_type", "dict_type"})


def _is_alternative(head: object) -> bool:
    return isinstance(head, str) and (head[:1].isupper() or "[" in head or head in _PLAIN_TYPES)


def _matching_alternative(errors: list[Any]) -> list[Any]:
    """For a union, only the errors of the alternative the payload was written as (fewest shape errors).

    A user who sent `{"delete_preset": "flat"}` meant DeletePreset: the nine other alternatives'
    complaints (missing `bands`, ...) only hide the useful one. When no alternative fits better than
    another (a payload of no known form), every complaint stays.
    """
    heads = {e["loc"][0] if e["loc"] else None for e in errors}
    if len(heads) < 2 or not all(_is_alternative(h) for h in heads):
        return errors
    groups = {h: [e for e in errors if e["loc"][0] == h] for h in heads}

    def shape(group: list[Any]) -> int:
        return sum(1 for e in group if (e["type"] in _SHAPE and len(e["loc"]) <= 2) or len(e["loc"]) == 1)

    ranked = sorted(groups.values(), key=lambda g: (shape(g), len(g)))
    if shape(ranked[0]) == shape(ranked[1]):
        return errors
    return [{**e, "loc": e["loc"][1:]} for e in ranked[0]]


def unknown_key(key: str, known: list[str]) -> str:
    import difflib  # noqa: PLC0415 - only a refused key pays for it (~0.2 MB resident)

    close = difflib.get_close_matches(key, known, n=1)
    return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")


def validation_messages(exc: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """Every error of a validation, one per key, with a did-you-mean for unknown keys (Mopidy's habit)."""
    known = list(model.model_fields) if model is not None else []
    parts = []
    for err in _matching_alternative(exc.errors()):
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and known:
            msg = unknown_key(str(err["loc"][-1]), known)
        parts.append(f"{loc}: {msg}")
    return parts


def format_validation(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    return "; ".join(validation_messages(exc, model))
