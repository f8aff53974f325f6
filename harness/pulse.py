"""A private PulseAudio with a null sink: a real ALSA `Master` control (device `pulse`) with no sound card."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import alsaaudio

# testing-without-hardware.md §1b. `-n` skips the system default.pa (no hardware detection, no
# D-Bus, no module-*-restore that would carry volumes over from a previous test run). As root,
# PulseAudio 16 only warns that it is not meant to run as root and runs as a per-user daemon with
# these flags; no --system is needed (verified on the CI image, which runs tests as root).
DEFAULT_PA = """\
load-module module-native-protocol-unix socket={socket} auth-anonymous=1
load-module module-null-sink sink_name=milo_null rate=48000 channels=2
set-default-sink milo_null
"""
READY_TIMEOUT = 10.0
SINK = "milo_null"


@dataclass
class Pulse:
    """A running PulseAudio: `server` is what PULSE_SERVER must hold for the ALSA `pulse` plug-in."""

    dir: Path
    proc: subprocess.Popen[str]

    @property
    def socket(self) -> Path:
        return self.dir / "native"

    @property
    def server(self) -> str:
        return f"unix:{self.socket}"

    def mixer(self) -> alsaaudio.Mixer:
        """A Mixer of its own, as another program would have (needs PULSE_SERVER set in os.environ)."""
        return alsaaudio.Mixer(control="Master", device="pulse")

    def raw(self) -> list[int]:
        mixer = self.mixer()
        try:
            return list(mixer.getvolume(units=alsaaudio.VOLUME_UNITS_RAW))
        finally:
            mixer.close()

    def muted(self) -> bool:
        mixer = self.mixer()
        try:
            return all(mixer.getmute())
        finally:
            mixer.close()

    def set(self, raw: int, *, muted: bool = False) -> None:
        mixer = self.mixer()
        try:
            mixer.setvolume(raw, units=alsaaudio.VOLUME_UNITS_RAW)
            mixer.setmute(int(muted))
        finally:
            mixer.close()


def _pactl_ok(server: str) -> bool:
    env = {**os.environ, "PULSE_SERVER": server}
    done = subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=5, check=False)
    return done.returncode == 0


def start_pulse(timeout: float = READY_TIMEOUT) -> Pulse:
    """Start PulseAudio in a fresh directory and return once `pactl info` answers through its socket."""
    if shutil.which("pulseaudio") is None:
        raise RuntimeError("pulseaudio is not installed (scripts/system-deps.sh)")
    # Not under pytest's tmp_path: a unix socket path must stay under 108 bytes.
    workdir = Path(tempfile.mkdtemp(prefix="milo-pa-"))
    (workdir / "runtime").mkdir()
    script = workdir / "default.pa"
    script.write_text(DEFAULT_PA.format(socket=workdir / "native"))
    # HOME and XDG_RUNTIME_DIR keep its cookie, state and lock files out of the real user's.
    env = {**os.environ, "HOME": str(workdir), "XDG_RUNTIME_DIR": str(workdir / "runtime")}
    env.pop("PULSE_SERVER", None)
    args = ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1"]
    # Its own log line says when it is up (stderr, read by a thread that also keeps the pipe drained).
    args += ["--disallow-exit", "--use-pid-file=no", "--log-target=stderr", "--log-level=info"]
    proc = subprocess.Popen(
        args, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    pulse = Pulse(workdir, proc)
    ready = threading.Event()
    log: list[str] = []

    def read_log() -> None:
        for line in proc.stderr or ():
            log.append(line)
            if "Daemon startup complete" in line:
                ready.set()
        ready.set()  # it exited: stop waiting, the check below tells which

    threading.Thread(target=read_log, daemon=True).start()
    if not ready.wait(timeout) or proc.poll() is not None or not _pactl_ok(pulse.server):
        stop_pulse(pulse)
        raise RuntimeError(f"PulseAudio did not come up within {timeout} s:\n{''.join(log)[-2000:]}")
    return pulse


def stop_pulse(pulse: Pulse) -> None:
    if pulse.proc.poll() is None:
        pulse.proc.terminate()
        try:
            pulse.proc.wait(5)
        except subprocess.TimeoutExpired:
            pulse.proc.kill()
            pulse.proc.wait(5)
    shutil.rmtree(pulse.dir, ignore_errors=True)


@contextlib.contextmanager
def running_pulse() -> Iterator[Pulse]:
    pulse = start_pulse()
    try:
        yield pulse
    finally:
        stop_pulse(pulse)
