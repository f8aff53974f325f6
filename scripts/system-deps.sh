#!/usr/bin/env bash
# Installs the Debian / Raspberry Pi OS packages the node and its tests need, only when one is missing.
# Called by `make run`, `make test` and .ci/run; never install these by hand.
set -euo pipefail

packages=(
    python3-venv
    mosquitto          # the external broker the contract tests and the benchmark compare against
    mosquitto-clients  # mosquitto_pub / mosquitto_sub, used in the README examples and tests
    alsa-utils         # aplay / amixer: how a person checks what the node set up
    libasound2-dev     # pyalsaaudio builds against it
    libasound2-plugins # the `pulse` PCM/ctl: volume on a machine without a sound card
    libasound2-plugin-equal  # alsaequal, the 10-band equalizer
    caps               # the Eq10 LADSPA plugin alsaequal loads
    pulseaudio         # tests: a paced null sink with a real `Master` mixer (no card here)
    pulseaudio-utils   # pactl / parec, to check what reached that sink
    libmpv2            # the radio player (python-mpv loads libmpv.so.2)
    lame               # tests: encode the MP3 that the local ICY stream server plays
    chromium           # tests/ui: the real page in headless Chromium; also the kiosk browser of the touch screen
    dbus-daemon        # tests: the private bus the fake systemd1 answers on (never the machine's system bus)
    nodejs             # tests: runs the polkit rule (JavaScript) that `milo install` writes
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "system-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package enables a system-wide mosquitto on 1883; the node's embedded broker wants that port.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled mosquitto >/dev/null 2>&1; then
    $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
