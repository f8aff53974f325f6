"""Crash safety: SIGKILL the node at random moments during 1,000 config writes; nothing acknowledged lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.crash import crash_run

pytestmark = pytest.mark.timeout(240)  # ~60-90 s here; a node restart is most of it


def test_no_acknowledged_write_is_lost_and_no_file_is_unreadable_after_sigkills(tmp_path: Path) -> None:
    report = crash_run(tmp_path, 1000, every=(60, 140))
    print(  # the figures, for whoever runs it with -s; bench/crash.py prints them as a table
        f"seed {report.seed}: {report.writes} acknowledged writes, {report.kills} kills, "
        f"{report.seconds:.0f} s"
    )
    assert report.writes == 1000
    assert report.kills >= 6
    assert report.lost == [], f"seed {report.seed}"
    assert report.unreadable == [], f"seed {report.seed}"
    assert report.notices == [], f"seed {report.seed}"
