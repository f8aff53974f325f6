#!/usr/bin/env bash
# The Home Assistant venv the discovery tests validate against: built once, kept while the version holds.
#
# Home Assistant 2025.4.x is the newest that runs on Python 3.13.0 (later releases need 3.13.2+). It is
# installed with its own package_constraints.txt (read from its wheel first), as its developers do, so
# its pins, not pip's newest picks, decide every dependency. Prints the venv's python on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

HA_VERSION="${HA_VERSION:-2025.4.4}"
# paho-mqtt is what its MQTT integration's manifest requires (installed by Home Assistant at run time
# otherwise); home-assistant-frontend (its version from the constraints) is what the real core the tests
# start needs: without it that core starts in recovery mode, with no MQTT.
HA_EXTRA="paho-mqtt==2.1.0 home-assistant-frontend"
PY313="${HA_PYTHON:-}"
if [[ -z "$PY313" ]]; then
    for candidate in /root/.pyenv/versions/3.13.0/bin/python3 "$(command -v python3.13 || true)"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then PY313="$candidate"; break; fi
    done
fi
if [[ -z "$PY313" ]]; then
    echo "ha-venv: no Python 3.13 found (set HA_PYTHON)" >&2
    exit 3
fi

VENV="${HA_VENV:-.venv-ha}"
KEY="homeassistant==$HA_VERSION $HA_EXTRA $("$PY313" -c 'import sys; print(sys.version.split()[0])')"
STAMP="$VENV/.milo-ha-installed"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi

start=$(date +%s)
rm -rf "$VENV"
"$PY313" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" -m pip download -q --no-deps -d "$work" "homeassistant==$HA_VERSION" >&2
"$VENV/bin/python" - "$work" <<'PY' >&2
import pathlib, sys, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("homeassistant-*.whl"))
with zipfile.ZipFile(wheel) as z:
    (work / "constraints.txt").write_bytes(z.read("homeassistant/package_constraints.txt"))
PY
"$VENV/bin/python" -m pip install -q -c "$work/constraints.txt" "$work"/homeassistant-*.whl $HA_EXTRA >&2
echo "$KEY" > "$STAMP"
echo "ha-venv: built $VENV ($KEY) in $(( $(date +%s) - start )) s" >&2
echo "$VENV/bin/python"
