"""Children spawned through dying_with_node get SIGTERM when the node is killed outright."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from node.framework.children import dying_with_node

# The "node": spawns a child the way the supervisors do, prints its pid, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys
    from node.framework.children import dying_with_node
    argv, preexec = dying_with_node(["sleep", "60"])
    child = subprocess.Popen(argv, preexec_fn=preexec)
    print(child.pid, flush=True)
    sys.stdin.read()
    """
)


def test_child_dies_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    pidfd = os.pidfd_open(child_pid)
    try:
        # setpriv sets the signal, then execs: kill the parent only once the program runs (the node
        # killed in that millisecond would leave it running, see dying_with_node).
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child_pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "setpriv never ran the program"
            time.sleep(0.001)
        parent.kill()
        parent.wait(5)
        # The pidfd turns readable when the process has exited.
        readable, _, _ = select.select([pidfd], [], [], 5)
        assert readable, "the child outlived its killed parent"
    finally:
        os.close(pidfd)
        if parent.stdin is not None:
            parent.stdin.close()


def test_a_missing_program_fails_at_spawn_not_later() -> None:
    with pytest.raises(FileNotFoundError):
        dying_with_node(["milo-no-such-program"])
    with pytest.raises(FileNotFoundError):
        dying_with_node(["/nonexistent/snapserver", "--help"])


def test_the_program_and_its_arguments_are_kept() -> None:
    argv, _ = dying_with_node(["sleep", "1", "--", "x"])
    assert argv[-4:] == ["sleep", "1", "--", "x"]
