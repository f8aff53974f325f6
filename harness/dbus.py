"""A dbus-daemon of a test's own on a socket under its directory: never the machine's system bus."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Self

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
{owns}    <allow send_destination="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow receive_type="*"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """The daemon, allowing the names (and name prefixes ending in ".*") the fakes on it own."""

    def __init__(self, workdir: Path, names: Iterable[str]) -> None:
        self.workdir = workdir
        self.socket = workdir / "bus.sock"
        self.config = workdir / "bus.conf"
        owns = "".join(
            f'    <allow own_prefix="{n[:-2]}"/>\n' if n.endswith(".*") else f'    <allow own="{n}"/>\n'
            for n in names
        )
        self.config.write_text(_CONFIG.format(socket=self.socket, owns=owns))
        self.proc: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"unix:path={self.socket}"

    def start(self) -> Self:
        exe = shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [exe, f"--config-file={self.config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        # It prints its address once it listens: no polling for the socket.
        line = self.proc.stdout.readline()
        if not line.startswith("unix:"):
            self.stop()
            raise RuntimeError(f"dbus-daemon did not start: {line!r}")
        return self

    def kill(self) -> None:
        """As if the daemon crashed: every connection to it breaks."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
