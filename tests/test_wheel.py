"""The wheel as a Pi installs it: built, installed in a fresh venv, run away from the checkout, UI and all."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "node" / "_data"
# Written into the installed copies only: seeing it proves the node read the package, not the checkout.
MARK = "installed-copy-7f3a"

pytestmark = [
    pytest.mark.integration,
    # Warm, the build and both installs take ~20 s; a cold pip cache downloads every dependency first.
    pytest.mark.timeout(300),
]


def _run(*args: str | Path, cwd: Path, timeout: float = 180) -> str:
    command = [str(a) for a in args]
    # No check=True: pip's own output is what explains a failed build or install.
    done = subprocess.run(
        command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    """This process's environment without what would lead Python or the node back to the checkout."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MILO_")}


def _copy_sources(dest: Path) -> None:
    """What the build reads: pyproject, the readme, the packages it finds and the folders node/_data links to.

    Building from a copy keeps build/ and egg-info out of the checkout and proves the links resolve in
    any tree, not only in this one.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name in ("pyproject.toml", project["project"]["readme"]):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__")
    tops = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    for top in sorted(tops):
        shutil.copytree(ROOT / top, dest / top, symlinks=True, ignore=ignore)
    for link in DATA.iterdir():
        assert link.is_symlink(), f"{link} must link to a top-level folder"
        target = link.resolve().relative_to(ROOT)
        shutil.copytree(ROOT / target, dest / target, ignore=ignore)


@dataclass
class Installed:
    venv: Path
    package: Path  # the venv's node/ package directory
    elsewhere: Path  # a working directory with no checkout in it


@pytest.fixture
def installed(tmp_path: Path) -> Installed:
    src, wheels, venv, elsewhere = (tmp_path / n for n in ("src", "wheels", "venv", "elsewhere"))
    for d in (src, wheels, elsewhere):
        d.mkdir()
    _copy_sources(src)
    # The running venv's versions, so the dependency wheels come from pip's cache (pyalsaaudio's
    # compiled one included) instead of being resolved and built anew.
    pins = tmp_path / "pins.txt"
    frozen = _run(sys.executable, "-m", "pip", "freeze", "--exclude-editable", cwd=elsewhere).splitlines()
    pins.write_text("".join(f"{line}\n" for line in frozen if not line.lower().startswith("milo")))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "-w", wheels, "-c", pins, src, cwd=elsewhere)
    assert len(list(wheels.glob("milo-*.whl"))) == 1
    _run(sys.executable, "-m", "venv", venv, cwd=elsewhere)
    cfg = (venv / "pyvenv.cfg").read_text()
    assert re.search(r"^include-system-site-packages = false$", cfg, re.M), cfg
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels, "milo", cwd=elsewhere)
    where = _run(python, "-c", "import node; print(node.__file__)", cwd=elsewhere)
    return Installed(venv, Path(where.strip()).parent, elsewhere)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Node:
    """`milo run` from the venv, its log lines read by a thread so waiting on one has a timeout."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=_clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line)
        self._queue.put(None)

    def line(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        for line in self.lines:
            if m := re.search(pattern, line):
                return m
        while True:
            try:
                got = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} within {timeout} s: {''.join(self.lines)}") from None
            if got is None:
                raise AssertionError(f"node ended without {pattern!r}: {''.join(self.lines)}")
            self.lines.append(got)
            if m := re.search(pattern, got):
                return m


def _get(url: str) -> tuple[str, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy
    with opener.open(url, timeout=10) as reply:
        return reply.headers.get("Content-Type", ""), reply.read()


def test_installed_wheel_serves_its_ui_and_renders_asound_conf(installed: Installed, tmp_path: Path) -> None:
    package = installed.package
    assert package.is_relative_to(installed.venv), package
    assert not package.resolve().is_relative_to(ROOT)
    # Every data folder arrived whole (binary files included) and as real files, not links to the repo.
    names = sorted(link.name for link in DATA.iterdir())
    assert {"alsa", "web"} <= set(names)
    for name in names:
        copy = package / "_data" / name
        assert copy.is_dir() and not copy.is_symlink()
        assert _files(copy) == _files(DATA / name), name
    index = package / "_data" / "web" / "index.html"
    index.write_bytes(index.read_bytes() + f"<!-- {MARK} -->\n".encode())
    template = package / "_data" / "alsa" / "asound.conf.j2"
    template.write_text(template.read_text() + f"# {MARK}\n")

    data = tmp_path / "data"
    milo = str(installed.venv / "bin" / "milo")
    args = [milo, "run", "--node-id", "wheel", "--data-dir", str(data), "--bind", "127.0.0.1"]
    args += ["--mqtt-port", "0", "--http-port", "0", "--only", "info", "routing"]
    node = Node(args, installed.elsewhere)
    try:
        http_port = int(node.line(r"node wheel online \(mqtt port \d+, http port (\d+)").group(1))
        node.line(r"INFO +node.app:   routing +running")
        assert Path(f"/proc/{node.proc.pid}/cwd").resolve() == installed.elsewhere.resolve()

        kind, body = _get(f"http://127.0.0.1:{http_port}/")
        assert kind.startswith("text/html")
        # As shipped, but for the node id its server fills in (node/http/server.py NODE_META).
        shipped = index.read_bytes().replace(
            b'<meta name="milo-node" content="">', b'<meta name="milo-node" content="wheel">'
        )
        assert body == shipped
        assert b'src="js/main.js"' in body
        kind, body = _get(f"http://127.0.0.1:{http_port}/js/main.js")
        assert "javascript" in kind
        assert body == (ROOT / "web" / "js" / "main.js").read_bytes()

        conf = (data / "asound.conf").read_text()
        assert "pcm.milo_radio_direct" in conf
        assert MARK in conf

        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=15) == 0
    finally:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
