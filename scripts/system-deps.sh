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
    shairport-sync     # the AirPlay receiver (pulls avahi-daemon, which announces it, and dbus)
    avahi-utils        # tests: avahi-publish announces a fake sender's remote control on a private Avahi
    snapserver         # multiroom: the Snapcast server the node drives over JSON-RPC (0.26 on bookworm)
    snapclient         # multiroom: the local client on this node's DAC, and the satellites' player
    dbus               # the system bus the Bluetooth source talks to BlueZ and bluez-alsa over; tests run a private one
    bluez              # bluetoothd: the adapter, pairing, AVRCP (on the Pi; tests fake it on their private bus)
    bluez-alsa-utils   # bluealsa (A2DP sink daemon) and bluealsa-aplay, which the Bluetooth source runs per phone
    dbus-daemon        # tests: the private bus the fake systemd1 answers on (never the machine's system bus)
    nodejs             # tests: runs the polkit rule (JavaScript) that `milo install` writes
    fonts-noto-core    # tests/ui: real Devanagari glyphs, so the layout test measures Hindi as the kiosk shows it
    fonts-noto-cjk     # tests/ui: real Chinese glyphs, likewise (the kiosk installs both: systemd/milo-kiosk.packages)
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# tests/examples: npm installs the Node-RED the flows run in. NodeSource's nodejs carries npm; Debian's
# nodejs (18, which Node-RED 4.1 also runs on) has it as a package of its own.
command -v npm >/dev/null 2>&1 || missing+=(npm)
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
# The package's own shairport-sync would announce a second AirPlay receiver and hold port 5000 and its bus
# names: the node runs its own, configured by it (systemd/shairport-sync.service.j2 or a child process).
if [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now shairport-sync >/dev/null 2>&1 || true
elif [ -x /etc/init.d/shairport-sync ]; then  # no systemd (a container): its init script, unless policy-rc.d kept it
    $sudo /etc/init.d/shairport-sync stop >/dev/null 2>&1 || true
    $sudo update-rc.d shairport-sync disable >/dev/null 2>&1 || true
fi
