"""The `ui` subsystem: the shared UI language, as text or JSON, refused when unknown, kept across restarts."""

from __future__ import annotations

from pathlib import Path

from node.subsystems.info import Info
from node.subsystems.ui import LANGUAGES, Ui
from tests.conftest import NodeFactory
from tests.helpers import probe

NODE = (Info, Ui)


async def test_language_is_english_then_follows_commands(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind, subsystems=NODE) as r, probe(r.port) as p:
        ui = f"{r.base}/ui"
        await p.subscribe(ui, f"{r.base}/error")
        first = await p.wait_for(ui)
        assert first.retain
        assert first.json() == {"language": "en", "languages": list(LANGUAGES)}
        mark = p.mark()
        await p.publish(f"{ui}/set", "fr")
        await p.wait_for(ui, lambda g: g.json()["language"] == "fr", after=mark)
        mark = p.mark()
        await p.publish(f"{ui}/set", {"language": "zh"})
        await p.wait_for(ui, lambda g: g.json()["language"] == "zh", after=mark)


async def test_unknown_language_is_refused_and_changes_nothing(run_node: NodeFactory) -> None:
    async with run_node(subsystems=NODE) as r, probe(r.port) as p:
        ui = f"{r.base}/ui"
        await p.subscribe(ui, f"{r.base}/error")
        await p.wait_for(ui)
        start = p.mark()
        for payload in ("xx", '{"language": "klingon"}', '{"lang": "fr"}'):
            mark = p.mark()
            await p.publish(f"{ui}/set", payload)
            error = (await p.wait_for(f"{r.base}/error", after=mark)).json()
            assert error["topic"] == f"{ui}/set"
            assert error["code"] in ("unknown_language", "invalid_payload")
            if payload == "xx":
                assert error["code"] == "unknown_language"
                assert "fr" in error["error"]
        await p.quiet(ui, after=start, probe_topic=f"{r.base}/test/flush")


async def test_language_is_kept_across_a_restart(run_node: NodeFactory, tmp_path: Path) -> None:
    data = tmp_path / "kept"
    async with run_node(subsystems=NODE, data_dir=data) as r, probe(r.port) as p:
        ui = f"{r.base}/ui"
        await p.subscribe(ui)
        await p.wait_for(ui)
        await p.publish(f"{ui}/set", "de")
        await p.wait_for(ui, lambda g: g.json()["language"] == "de")
    # Without the broker's retained copy, the language can only come from the subsystem's own file.
    (data / "broker" / "retained.json").unlink(missing_ok=True)
    async with run_node(subsystems=NODE, data_dir=data) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/ui")
        assert (await p.wait_for(f"{r.base}/ui")).json()["language"] == "de"
