"""Multiroom with Snapcast: the subsystem (subsystem.py), its models and the server's client table."""

from node.subsystems.multiroom.subsystem import Multiroom

__all__ = ["Multiroom"]
