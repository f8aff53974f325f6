"""The player: sources aggregated into `player` and `source`, switching policy, commands routed, restore."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.subsystems.info import Info
from node.subsystems.player import Player, order
from tests.conftest import NodeFactory
from tests.fakes.fake_source import DURATION_MS, make_source
from tests.helpers import Got, Probe, probe

Alpha = make_source("alpha")
Beta = make_source("beta")
NODE = (Info, Player, Alpha, Beta)


class Impatient(Player):
    """A player that never waits for an answer: always judges a command on the last state."""

    answer_timeout_s = 0.0


@dataclass
class Topics:
    base: str

    def __getattr__(self, name: str) -> str:
        # t.player_set -> <base>/player/set; t.alpha_set -> <base>/source/alpha/set (the fakes)
        path = name.replace("_", "/")
        if path.split("/")[0] in ("alpha", "beta", "gamma"):
            path = f"source/{path}"
        return f"{self.base}/{path}"


def where(**fields: Any) -> Callable[[Got], bool]:
    return lambda g: bool(g.payload) and all(g.json().get(k) == v for k, v in fields.items())


def code(value: str) -> Callable[[Got], bool]:
    return lambda g: g.json()["code"] == value


async def ready(p: Probe, t: Topics, **fields: Any) -> None:
    """Subscribe and wait until the player has seen both sources (on mosquitto it learns them later)."""
    await p.subscribe(t.player, t.source, t.alpha, t.beta, t.error)
    await p.wait_for(t.source, where(available=["alpha", "beta"], **fields))


async def select(p: Probe, t: Topics, name: str) -> None:
    mark = p.mark()
    await p.publish(t.source_set, name)
    await p.wait_for(t.player, where(active=name, state="playing"), after=mark)


def test_sources_are_listed_known_first_then_alphabetically() -> None:
    known = ("spotify", "roc", "radio")  # an explicit list; the node's is node.registry.SOURCES
    assert order(["zeta", "radio", "alpha", "spotify", "roc"], known) == [
        "spotify",
        "roc",
        "radio",
        "alpha",
        "zeta",
    ]


async def test_switching_pauses_the_previous_and_plays_the_new(
    run_node: NodeFactory, broker_kind: str
) -> None:
    async with run_node(broker_kind, subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t, active="none", enabled=["alpha", "beta"])
        mark = p.mark()
        await p.publish(t.source_set, "alpha")
        playing = (await p.wait_for(t.player, where(active="alpha", state="playing"), after=mark)).json()
        assert playing["title"] == "alpha track 1"
        assert playing["artist"] == "alpha artist"
        assert playing["album"] == "alpha album"
        assert playing["cover_url"] == "http://covers.invalid/alpha/1.jpg"
        assert (playing["position_ms"], playing["duration_ms"]) == (0, DURATION_MS)
        assert isinstance(playing["position_at"], int)
        # `toggle` is the player's own: the source lists play and pause.
        assert playing["commands"] == ["play", "pause", "toggle", "stop", "next", "previous", "seek"]
        sources = (await p.wait_for(t.source, where(active="alpha"), after=mark)).json()
        assert sources["states"]["beta"] == "idle"

        mark = p.mark()
        await p.publish(t.source_set, {"active": "beta"})
        await p.wait_for(t.player, where(active="beta", state="playing"), after=mark)
        alpha = await p.wait_for(t.alpha, where(state="paused"), after=mark)
        beta = await p.wait_for(t.beta, where(state="playing"), after=mark)
        assert alpha.json()["received"] == ["play", "pause"]
        assert beta.json()["received"] == ["play"]
        await p.wait_for(t.source, where(active="beta", states={"alpha": "paused", "beta": "playing"}))
        # The switch is published before the new source is told to play.
        switched = next(i for i, g in enumerate(p.seen) if i >= mark and g.topic == t.player)
        assert p.seen[switched].json()["active"] == "beta"
        assert switched < p.seen.index(beta)
        # Each source/set was acted on once: nothing more reaches the sources.
        after = p.mark()
        await p.quiet(t.alpha, after=after, probe_topic=t.test_flush)
        await p.quiet(t.beta, after=after, probe_topic=t.test_flush)


async def test_a_source_that_starts_playing_becomes_active(run_node: NodeFactory, broker_kind: str) -> None:
    async with run_node(broker_kind, subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        await select(p, t, "alpha")
        mark = p.mark()
        await p.publish(t.beta_set, {"start": True})
        player = await p.wait_for(t.player, where(active="beta"), after=mark)
        assert player.json()["state"] == "playing"
        assert player.json()["title"] == "beta track 1"
        alpha = await p.wait_for(t.alpha, where(state="paused"), after=mark)
        assert alpha.json()["received"] == ["play", "pause"]
        # Nobody told beta anything: it started on its own.
        assert p.on(t.beta, mark)[-1].json()["received"] == []


async def test_without_auto_switch_the_active_source_stays(run_node: NodeFactory) -> None:
    sections = {"player": {"auto_switch": False}}
    async with run_node(subsystems=NODE, sections=sections) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t, auto_switch=False)
        await select(p, t, "alpha")
        mark = p.mark()
        await p.publish(t.beta_set, {"start": True})
        sources = await p.wait_for(t.source, lambda g: g.json()["states"]["beta"] == "playing", after=mark)
        assert sources.json()["active"] == "alpha"
        await p.quiet(t.player, after=mark, probe_topic=t.test_flush)
        await p.quiet(t.alpha, after=mark, probe_topic=t.test_flush)
        # Turned on while running: the next start switches.
        mark = p.mark()
        await p.publish(t.player_config_set, {"auto_switch": True})
        await p.wait_for(t.source, where(auto_switch=True), after=mark)
        await p.publish(t.beta_set, "pause")
        await p.wait_for(t.beta, where(state="paused"), after=mark)
        await p.publish(t.beta_set, {"start": True})
        await p.wait_for(t.player, where(active="beta", state="playing"), after=mark)


async def test_player_commands_go_to_the_active_source(run_node: NodeFactory) -> None:
    async with run_node(subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        await select(p, t, "alpha")
        mark = p.mark()
        await p.publish(t.player_set, "next")
        await p.wait_for(t.player, where(title="alpha track 2"), after=mark)
        await p.publish(t.player_set, {"seek_ms": 5000})
        player = await p.wait_for(t.player, where(position_ms=5000), after=mark)
        await p.publish(t.player_set, "Pause")
        await p.wait_for(t.player, where(state="paused"), after=mark)
        alpha = await p.wait_for(t.alpha, where(state="paused"), after=mark)
        assert alpha.json()["received"] == ["play", "next", "seek_ms=5000", "pause"]
        assert p.on(t.beta, mark) == []
        assert player.json()["position_at"] >= p.on(t.player, mark)[0].json()["position_at"]


async def test_toggle_is_mapped_unless_the_source_lists_it(run_node: NodeFactory) -> None:
    async with run_node(subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        await select(p, t, "alpha")
        mark = p.mark()
        await p.publish(t.player_set, "toggle")
        await p.wait_for(t.player, where(state="paused"), after=mark)
        mark = p.mark()
        await p.publish(t.player_set, "toggle")
        await p.wait_for(t.player, where(state="playing"), after=mark)
        await p.publish(t.alpha_set, {"commands": ["play", "pause", "toggle"]})
        await p.wait_for(t.player, where(commands=["play", "pause", "toggle"]), after=mark)
        mark = p.mark()
        await p.publish(t.player_set, "toggle")
        alpha = await p.wait_for(t.alpha, where(state="paused"), after=mark)
        assert alpha.json()["received"] == ["play", "pause", "play", "toggle"]


async def test_refused_commands_change_nothing(run_node: NodeFactory) -> None:
    async with run_node(subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        mark = p.mark()
        await p.publish(t.player_set, "play")
        err = (await p.wait_for(t.error, code("no_active_source"), after=mark)).json()
        assert err["topic"] == t.player_set
        await p.publish(t.source_set, "gamma")
        err = (await p.wait_for(t.error, code("unknown_source"), after=mark)).json()
        assert "alpha, beta" in err["error"]
        await p.quiet(t.player, after=mark, probe_topic=t.test_flush)
        await p.quiet(t.source, after=mark, probe_topic=t.test_flush)

        await select(p, t, "alpha")
        await p.publish(t.alpha_set, {"commands": ["play", "stop"]})
        await p.wait_for(t.player, where(commands=["play", "stop"]))
        await p.publish(t.beta_set, {"unplug": True})
        await p.wait_for(t.source, where(available=["alpha"]))
        mark = p.mark()
        await p.publish(t.player_set, "next")
        err = (await p.wait_for(t.error, code("unsupported"), after=mark)).json()
        assert err["error"] == "alpha cannot next now; it can: play, stop"
        await p.publish(t.player_set, {"seek_ms": 10})
        await p.wait_for(
            t.error, lambda g: code("unsupported")(g) and "seek" in g.json()["error"], after=mark
        )
        await p.publish(t.player_set, "toggle")
        await p.wait_for(
            t.error, lambda g: code("unsupported")(g) and "toggle" in g.json()["error"], after=mark
        )
        await p.publish(t.player_set, "5000")  # a number is not a seek
        await p.wait_for(t.error, code("invalid_payload"), after=mark)
        await p.publish(t.source_set, "beta")
        err = (await p.wait_for(t.error, code("unavailable"), after=mark)).json()
        assert err["error"] == "beta is unavailable"
        # A retained command would replay at every start: the framework refuses it.
        await p.publish(t.player_set, "stop", retain=True)
        await p.wait_for(t.error, code("retained_command"), after=mark)
        await p.publish(t.player_set, b"", retain=True)
        await p.quiet(t.player, after=mark, probe_topic=t.test_flush)
        await p.quiet(t.alpha, after=mark, probe_topic=t.test_flush)
        await p.quiet(t.source, after=mark, probe_topic=t.test_flush)


async def test_a_disabled_source_is_neither_enabled_nor_available(run_node: NodeFactory) -> None:
    async with run_node(subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        mark = p.mark()
        await p.publish(t.source_alpha_config_set, {"enabled": False})
        sources = (await p.wait_for(t.source, where(enabled=["beta"]), after=mark)).json()
        assert sources["available"] == ["beta"]
        assert sources["states"]["alpha"] == "unavailable"
        await p.publish(t.source_set, "alpha")
        err = (await p.wait_for(t.error, code("unavailable"), after=mark)).json()
        assert err["error"] == "alpha is disabled"
        await p.publish(t.source_alpha_config_set, {"enabled": True})
        await p.wait_for(t.source, where(enabled=["alpha", "beta"], available=["alpha", "beta"]), after=mark)


async def test_sources_of_other_processes_and_bad_payloads(run_node: NodeFactory) -> None:
    async with run_node(subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        mark = p.mark()
        # A source running as its own process (`--only`) is read from its topics alone.
        await p.publish(t.source_gamma_config, {"enabled": True}, retain=True)
        await p.publish(t.gamma, {"state": "paused", "title": "g", "extra": 1}, retain=True)
        sources = await p.wait_for(t.source, where(available=["alpha", "beta", "gamma"]), after=mark)
        assert sources.json()["states"]["gamma"] == "paused"
        mark = p.mark()
        await p.publish(t.gamma, "not json", retain=True)
        await p.publish(t.gamma, {"state": "dancing"}, retain=True)
        await p.quiet(t.source, after=mark, probe_topic=t.test_flush)
        await p.publish(t.source_set, "gamma")
        await p.wait_for(t.player, where(active="gamma", title="g", state="paused"), after=mark)
        # Deleted: gone from the lists, and the player no longer shows it.
        await p.publish(t.gamma, b"", retain=True)
        await p.publish(t.source_gamma_config, b"", retain=True)
        await p.wait_for(t.source, where(enabled=["alpha", "beta"], active="gamma"), after=mark)
        await p.wait_for(t.player, where(active="gamma", title=None, state="idle"), after=mark)


async def test_the_active_source_is_restored_after_a_restart(run_node: NodeFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "restored"
    async with run_node(subsystems=NODE, data_dir=data_dir) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        await select(p, t, "beta")
    async with run_node(subsystems=NODE, data_dir=data_dir) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        await p.wait_for(t.source, where(active="beta"))
        await p.wait_for(t.player, where(active="beta"))
    sections = {"player": {"restore_active": False}}
    async with run_node(subsystems=NODE, data_dir=data_dir, sections=sections) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t, active="none")
        await p.wait_for(t.player, where(active="none"))


async def test_source_none_pauses_the_active_one(run_node: NodeFactory) -> None:
    async with run_node(subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        await select(p, t, "alpha")
        mark = p.mark()
        await p.publish(t.source_set, "none")
        player = (await p.wait_for(t.player, where(active="none"), after=mark)).json()
        assert (player["state"], player["title"], player["commands"]) == ("idle", None, [])
        alpha = await p.wait_for(t.alpha, where(state="paused"), after=mark)
        assert alpha.json()["received"] == ["play", "pause"]


async def other_process_source(p: Probe, t: Topics, **state: Any) -> None:
    """gamma: a source of another process, played by the probe, which answers only when the test does."""
    mark = p.mark()
    await p.subscribe(t.gamma_set)
    await p.publish(t.source_gamma_config, {"enabled": True}, retain=True)
    await p.publish(t.gamma, state, retain=True)
    await p.wait_for(t.source, where(available=["alpha", "beta", "gamma"]), after=mark)


async def forwarded(p: Probe, t: Topics, command: str, *, sent: str) -> None:
    """`command` on player/set reaches gamma as `sent`, and the player echoes its state."""
    mark = p.mark()
    await p.publish(t.player_set, command)
    await p.wait_for(t.gamma_set, lambda g: g.text == sent, after=mark)
    await p.wait_for(t.player, after=mark)
    assert [g.text for g in p.on(t.gamma_set, mark)] == [sent]


async def test_until_the_source_answers_commands_go_on_and_toggle_undoes_the_last(
    run_node: NodeFactory,
) -> None:
    async with run_node(subsystems=NODE) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        await other_process_source(p, t, state="idle", commands=["play"])
        mark = p.mark()
        await p.publish(t.source_set, "gamma")
        await p.wait_for(t.gamma_set, lambda g: g.text == "play", after=mark)
        # gamma said nothing since: its `idle, play only` is older than that play, so the source judges.
        await forwarded(p, t, "pause", sent="pause")
        await forwarded(p, t, "toggle", sent="play")
        await forwarded(p, t, "toggle", sent="pause")
        await forwarded(p, t, "next", sent="next")
        await p.quiet(t.error, after=mark, probe_topic=t.test_flush)
        # Each answered, in order (the last refused on the error topic): the player judges again.
        for answer in ({"state": "playing"}, {"state": "paused"}, {"state": "playing"}):
            await p.publish(t.gamma, {**answer, "commands": ["pause"]}, retain=True)
        await p.publish(t.gamma, {"state": "paused", "commands": ["play"]}, retain=True)
        refused = {"topic": t.gamma_set, "payload": "next", "error": "no next", "code": "unsupported"}
        await p.publish(t.error, refused)
        mark = p.mark()
        await p.publish(t.player_set, "next")
        err = (await p.wait_for(t.error, lambda g: g.json()["topic"] == t.player_set, after=mark)).json()
        assert (err["code"], err["error"]) == ("unsupported", "gamma cannot next now; it can: play")
        await p.publish(t.player_set, "toggle")
        await p.wait_for(t.gamma_set, lambda g: g.text == "play", after=mark)


async def test_a_source_that_never_answers_is_judged_on_its_last_state(run_node: NodeFactory) -> None:
    async with run_node(subsystems=(Info, Impatient, Alpha, Beta)) as r, probe(r.port) as p:
        t = Topics(r.base)
        await ready(p, t)
        await other_process_source(p, t, state="idle", commands=["play"])
        mark = p.mark()
        await p.publish(t.source_set, "gamma")
        await p.wait_for(t.gamma_set, lambda g: g.text == "play", after=mark)
        # The wait for its answer is over at once: the player refuses what its last state does not list.
        await p.publish(t.player_set, "pause")
        err = (await p.wait_for(t.error, code("unsupported"), after=mark)).json()
        assert (err["topic"], err["error"]) == (t.player_set, "gamma cannot pause now; it can: play")
        assert [g.text for g in p.on(t.gamma_set, mark)] == ["play"]
