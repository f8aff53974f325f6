"""The `bluetooth` source: an A2DP receiver driven over D-Bus (BlueZ, bluez-alsa) and bluealsa-aplay."""

# models: its config, state and commands; pairing: the agent's policy (accept, or ask and wait);
# source: the Bluetooth subsystem that keeps BlueZ and bluez-alsa in line with its topics.

from node.sources.bluetooth.models import BluetoothConfig, BluetoothState
from node.sources.bluetooth.source import Bluetooth, to_percent, to_raw

__all__ = ["Bluetooth", "BluetoothConfig", "BluetoothState", "to_percent", "to_raw"]
