"""ALSA file sinks standing in for the DAC and the Loopback on a machine with neither."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node import registry


def sink_config(out: Path, sources: Sequence[str] | None = None) -> dict[str, Any]:
    """Routing config whose outputs are WAV file sinks under `out` (no card, no snd-aloop here).

    `out/direct.wav` stands for the DAC, `out/loop_<source>.wav` for each source's Loopback subdevice;
    the sources are the registered ones unless a test names its own.
    """
    names = list(registry.source_names() if sources is None else sources)
    extra = []
    for name in ["direct", *(f"loop_{s}" for s in names)]:
        extra.append(
            f'pcm.test_{name}_file {{ type file; slave.pcm "null"; format "wav"; file "{out}/{name}.wav" }}\n'
            # S16 pinned before the file: float data would get a header claiming 32-bit integers.
            f'pcm.test_{name} {{ type plug; slave {{ pcm "test_{name}_file"; format S16_LE; rate 48000; '
            "channels 2 } }\n"
        )
    return {
        "card": "testcard",
        "output_pcm": "test_direct",
        "dmix": False,
        "loopback_pcms": {s: f"test_loop_{s}" for s in names},
        "extra": "".join(extra),
    }


def sinks_dir(tmp_path: Path) -> Path:
    """Where the file sinks of `sink_config` write their WAVs."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return out


def play(conf: Path, pcm: str, wav: Path) -> None:
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}
    done = subprocess.run(
        ["aplay", "-q", "-D", pcm, str(wav)], env=env, capture_output=True, timeout=20, check=False
    )
    assert done.returncode == 0, done.stderr.decode()


def pcms_listed(conf: Path) -> set[str]:
    env = {**os.environ, "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}
    done = subprocess.run(["aplay", "-L"], env=env, capture_output=True, timeout=20, check=True, text=True)
    return {line.strip() for line in done.stdout.splitlines() if line.startswith("milo_")}
