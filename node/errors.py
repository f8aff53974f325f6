"""The node's exceptions: one root, and one kind per way a user or a daemon can fail."""

from __future__ import annotations


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
