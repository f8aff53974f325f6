"""`python -m bench.knob`: 100 detents in a second on gpiozero's mock pins into a node with a real mixer."""

# The node (info, volume on a PulseAudio null sink) runs as its own process on its embedded broker;
# the knob runs here, in-process on mock pins, as `milo run --only knob --broker mqtt://...` would on
# a second Pi, so every step crosses the broker as a real MQTT message.

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from bench.__main__ import start_node
from bench.volume import _connect
from harness.ky040 import Ky040, mock_pins
from harness.pulse import Pulse, running_pulse
from node.app import Node
from node.config import NodeConfig
from node.subsystems.knob import Knob

DETENTS = 100
SPAN_S = 1.0
TARGET_MS = 50.0
FULL = 65536  # the pulse plug-in's raw 100 %


@dataclass(frozen=True)
class Case:
    start: int
    direction: int  # +1 clockwise
    step: int
    bounce: int

    @property
    def expected(self) -> int:
        return max(0, min(100, self.start + self.direction * DETENTS * self.step))

    @property
    def name(self) -> str:
        turn = "clockwise" if self.direction > 0 else "counter-clockwise"
        bounce = f", {self.bounce} bounces per edge" if self.bounce else ""
        return f"{DETENTS} x {turn}, step {self.step}, from {self.start} %{bounce}"


CASES = (
    Case(start=0, direction=1, step=1, bounce=0),
    Case(start=100, direction=-1, step=1, bounce=2),
    Case(start=20, direction=1, step=2, bounce=0),  # 200 % asked: clamped at 100
)


@dataclass
class Run:
    case: Case
    final: int
    raw_ok: bool
    final_ms: float
    commands: int
    publishes: int

    @property
    def correct(self) -> bool:
        return self.final == self.case.expected and self.raw_ok


class Watch:
    """Every `volume` state and `volume/set` command the broker passes, with when it arrived."""

    def __init__(self, client: aiomqtt.Client, base: str) -> None:
        self.client, self.base = client, base
        self.states: list[tuple[float, int]] = []
        self.commands: list[bytes] = []
        self.step = 0  # the knob's, as its state says
        self.changed = asyncio.Event()

    async def pump(self) -> None:
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            if m.topic.value == f"{self.base}/volume":
                self.states.append((time.perf_counter(), int(json.loads(payload)["percent"])))
            elif m.topic.value == f"{self.base}/volume/set":
                self.commands.append(payload)
            elif m.topic.value == f"{self.base}/knob":
                self.step = int(json.loads(payload).get("step", 0))
            self.changed.set()

    async def until(self, percent: int, after: int, timeout: float = 5.0) -> float:
        """When the first state at `percent` (index >= after) arrived."""
        async with asyncio.timeout(timeout):
            while True:
                for at, value in self.states[after:]:
                    if value == percent:
                        return at
                self.changed.clear()
                await self.changed.wait()

    async def step_is(self, step: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.step != step:
                self.changed.clear()
                await self.changed.wait()


async def one_run(watch: Watch, pins: Ky040, pulse: Pulse, case: Case) -> Run:
    base = watch.base
    await watch.client.publish(f"{base}/volume/set", str(case.start).encode())
    # The volume may be there already (then nothing new is published): the latest state counts.
    await watch.until(case.start, max(0, len(watch.states) - 1))
    await watch.client.publish(f"{base}/knob/config/set", json.dumps({"step": case.step}).encode())
    await watch.step_is(case.step)
    mark, commands = len(watch.states), len(watch.commands)
    t0 = time.perf_counter()
    for i in range(DETENTS):
        delay = t0 + i * SPAN_S / DETENTS - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pins.turn(case.direction, bounce=case.bounce)
    last = time.perf_counter()
    await watch.until(case.expected, mark)
    # A step still on its way would move it on: the run is judged on what holds a while later
    # (a settling pause of the benchmark's, not a measured figure).
    await asyncio.sleep(0.2)
    final_at, final = watch.states[-1]
    raw = pulse.raw()
    raw_ok = raw == [round(FULL * case.expected / 100)] * 2
    return Run(
        case,
        final,
        raw_ok,
        (final_at - last) * 1000,
        len(watch.commands) - commands,
        len(watch.states) - mark,
    )


async def bench_async(rounds: int, pulse: Pulse, tmp: Path) -> list[Run]:
    (tmp / "node").mkdir()
    node = start_node(
        tmp / "node",
        '[volume]\ndevice = "pulse"\ncontrol = "Master"\n',
        only=("info", "volume"),
        env={"PULSE_SERVER": pulse.server},
    )
    runs: list[Run] = []
    try:
        _connect(node.port).close()  # the node's broker accepts connections
        node_id = node.base.split("/", 1)[1]
        config = NodeConfig(
            node_id=node_id,
            data_dir=tmp / "knob",
            bind="127.0.0.1",
            http_port=0,
            broker=f"mqtt://127.0.0.1:{node.port}",
            only=["knob"],
            subsystems={"knob": {"pin_factory": "mock", "wake_screen": False}},
        )
        with mock_pins() as factory:
            knob = Node(config, (Knob,))
            await knob.start()
            try:
                async with aiomqtt.Client("127.0.0.1", node.port, identifier=f"bench-{node_id}") as client:
                    watch = Watch(client, node.base)
                    await client.subscribe(f"{node.base}/volume")
                    await client.subscribe(f"{node.base}/volume/set")
                    await client.subscribe(f"{node.base}/knob")
                    pump = asyncio.create_task(watch.pump())
                    pins = Ky040(factory)
                    # One pass first, not reported: the first writes open PulseAudio's streams and
                    # load what the code paths import lazily.
                    for case in CASES:
                        await one_run(watch, pins, pulse, case)
                    for _ in range(rounds):
                        for case in CASES:
                            runs.append(await one_run(watch, pins, pulse, case))
                    pump.cancel()
            finally:
                await knob.stop()
    finally:
        node.proc.terminate()
        node.proc.wait(10)
    return runs


def table(runs: list[Run]) -> str:
    out = [
        "| run | final volume (expected) | last detent -> final state (ms) | target (ms) "
        "| volume/set sent | volume states |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        ok = "" if r.correct else " **wrong**"
        # Clamped runs reach the end of the scale before the last detent: later steps change nothing.
        took = f"{r.final_ms:.1f}" if r.final_ms >= 0 else f"0 (at {r.final} % {-r.final_ms:.0f} ms before)"
        out.append(
            f"| {r.case.name} | {r.final} ({r.case.expected}){ok} | {took} | <= {TARGET_MS:.0f} "
            f"| {r.commands} | {r.publishes} |"
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="repetitions of each run (default 2)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with running_pulse() as pulse, tempfile.TemporaryDirectory(prefix="milo-bench-knob-") as tmp:
        os.environ["PULSE_SERVER"] = pulse.server  # for pulse.raw(), the read-back in this process
        runs = asyncio.run(bench_async(args.rounds, pulse, Path(tmp)))
    print(table(runs))
    print(
        f"\n{os.cpu_count()} cores, Python {sys.version.split()[0]}; node (info, volume) in its own "
        "process on its embedded broker, mixer PulseAudio null sink `Master` through the ALSA pulse "
        "plug-in; the knob in this process on gpiozero's MockFactory, as `--only knob --broker mqtt://...`."
    )
    return 0 if all(r.correct and r.final_ms <= TARGET_MS for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
