"""The node's asound.conf read twice by alsa-lib defines exactly the PCMs of one reading."""

# On an installed Pi both happen: /etc/asound.conf links to <data_dir>/asound.conf (alsa-lib reads it
# by itself), and node/app.py also names that file in ALSA_CONFIG_PATH, since it is not /etc/asound.conf.

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "adapters" / "golden"
ALSA_BASE = "/usr/share/alsa/alsa.conf"


def pcms(*files: Path) -> str:
    env = {**os.environ, "ALSA_CONFIG_PATH": ":".join([ALSA_BASE, *map(str, files)])}
    done = subprocess.run(["aplay", "-L"], capture_output=True, text=True, timeout=30, env=env, check=False)
    return done.stdout


@pytest.mark.parametrize("mode", ["direct_eq", "multiroom_eq"])
def test_reading_the_file_twice_defines_the_same_pcms(mode: str) -> None:
    if shutil.which("aplay") is None or not Path(ALSA_BASE).exists():
        pytest.skip("no alsa-utils here")
    conf = GOLDEN / f"{mode}.conf"
    once = pcms(conf)
    assert "milo_radio" in once
    assert pcms(conf, conf) == once
