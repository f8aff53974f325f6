"""A fake Debian package manager (apt-cache policy, apt-get download/install) over a JSON file."""

# Real enough for an update's flow: apt-cache prints the policy format `node.adapters.updates` parses,
# `apt-get download pkg=ver` leaves a .deb in the working directory, `apt-get install` takes pkg=ver
# or ./pkg_ver_all.deb and records the version. Every call is logged in the state file.

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCRIPT = r"""#!{python}
import json, os, sys
from pathlib import Path
STATE = Path({state!r})
state = json.loads(STATE.read_text())
argv = sys.argv[1:]
state["log"].append([{tool!r}, *argv])
def save():
    STATE.write_text(json.dumps(state))
if {tool!r} == "apt-cache":
    for name in argv[1:]:
        p = state["packages"].get(name)
        if p is None:
            print(f"N: Unable to locate package {{name}}", file=sys.stderr)
            continue
        installed = p["installed"] or "(none)"
        print(f"{{name}}:\n  Installed: {{installed}}\n  Candidate: {{p['candidate']}}\n  Version table:")
    save()
    sys.exit(0)
words = [a for a in argv if not a.startswith("-")]
verb, targets = words[0], words[1:]
for target in targets:
    if verb == "download":
        name, _, version = target.partition("=")
        Path(f"{{name}}_{{version}}_all.deb").write_text(f"{{name}} {{version}}\n")
    elif verb == "install":
        if target.endswith(".deb"):
            name, version = Path(target).read_text().split()
        else:
            name, _, version = target.partition("=")
        if version in state["packages"][name].get("uninstallable", []):
            print(f"E: {{name}} {{version}} cannot be installed", file=sys.stderr)
            save()
            sys.exit(100)
        state["packages"][name]["installed"] = version
save()
"""


class FakeApt:
    """`apt_cache` and `apt_get` are paths to give the update config; `installed()` reads the state."""

    def __init__(self, folder: Path, packages: dict[str, dict[str, Any]]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.state = folder / "apt-state.json"
        self.state.write_text(json.dumps({"packages": packages, "log": []}))
        self.apt_cache = str(self._script(folder, "apt-cache"))
        self.apt_get = str(self._script(folder, "apt-get"))

    def _script(self, folder: Path, tool: str) -> Path:
        path = folder / tool
        path.write_text(SCRIPT.format(python=sys.executable, state=str(self.state), tool=tool))
        path.chmod(0o755)
        return path

    def installed(self, name: str) -> str | None:
        value = json.loads(self.state.read_text())["packages"][name]["installed"]
        return None if value is None else str(value)

    @property
    def log(self) -> list[list[str]]:
        return list(json.loads(self.state.read_text())["log"])
