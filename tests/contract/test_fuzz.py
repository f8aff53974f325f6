"""Fuzzing every registered subsystem's command topics: no traceback, a specific code, schemas kept."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from harness.pulse import Pulse
from node import registry, schemagen
from node.framework.subsystem import Subsystem, local_only_keys
from tests.conftest import NodeFactory
from tests.contract.test_every_subsystem import environment
from tests.helpers import probe

# At least this many payloads in all, shared among every /set, /config/set, owned /set and request topic.
TOTAL = 10_000

pytestmark = [pytest.mark.timeout(600), pytest.mark.integration]


def json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    """Any JSON, with object keys often taken from the model's own fields (closer to what passes)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**12), max_value=10**12)
        | st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)
        | st.text(max_size=12)
    )
    key = st.sampled_from(keys) | st.text(max_size=8) if keys else st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key, inner, max_size=3),
        max_leaves=6,
    )


def payloads(keys: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        json_values(keys).map(lambda v: json.dumps(v).encode()),
        st.text(max_size=24).map(str.encode),
        st.binary(max_size=24),
        st.just(b"[" * 5000),  # deeper than any parser should follow
        st.just(b'{"a": ' + b"9" * 4400 + b"}"),
    )


def generate(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    found: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(strategy)
    def collect(payload: bytes) -> None:
        found.append(payload)

    collect()
    return found


def fields(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    schema = model.json_schema() if model is not None else {}
    return sorted({k for d in schema.get("$defs", {}).values() for k in d.get("properties", {})})


def targets(base: str, classes: list[type[Subsystem[Any, Any]]]) -> list[tuple[str, list[str]]]:
    """Every topic a client may send a command or a request to, with the field names it knows."""
    out = []
    for cls in classes:
        state = f"{base}/{cls.state_topic()}"
        config_keys = [k for k in cls.Config.model_fields if k not in local_only_keys(cls.Config)]
        out.append((f"{state}/set", fields(cls.Command)))
        # `enabled` is left out of the keys it knows: switching subsystems off would only test "disabled".
        out.append((f"{state}/config/set", [k for k in config_keys if k != "enabled"]))
        for path, owned in cls.owned.items():
            out.append((f"{base}/{path}/set", fields(owned.command)))
        request_base = f"{base}/{cls.request_topic or cls.state_topic()}"
        for verb, model in cls.requests.items():
            out.append((f"{request_base}/{verb}", [*model.model_fields, "reply_to", "id"]))
    return out


def schema_refuses(validator: jsonschema.Draft202012Validator, payload: bytes) -> bool:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return not isinstance(value, str) and not validator.is_valid(value)


async def test_fuzzed_commands_never_reach_a_traceback(
    run_node: NodeFactory, tmp_path: Path, pulse: Pulse
) -> None:
    classes = list(registry.ALL)
    async with run_node(subsystems=classes, sections=environment(tmp_path)) as r, probe(r.port) as p:
        await p.subscribe(f"{r.base}/error")
        topics = targets(r.base, classes)
        share = -(-TOTAL // len(topics))
        sent: dict[str, list[bytes]] = {}
        for topic, keys in topics:
            sent[topic] = generate(payloads(keys), share)
            for payload in sent[topic]:
                await p.client.publish(topic, payload, qos=0)
        # Every runner handles its queue in order: its own /get answered means it is through.
        for cls in classes:
            reply = await p.request(f"{r.base}/{cls.state_topic()}/get", {"id": cls.name}, timeout=120)
            assert reply["id"] == cls.name
        total = sum(len(v) for v in sent.values())
        errors = [g.json() for g in p.on(f"{r.base}/error")]
        codes = Counter(e["code"] for e in errors)
        # The node refuses at least what the published schema refuses (JSON numbers, booleans, objects
        # and arrays; plain text is turned into a command first, as each subsystem reads it).
        schemas = schemagen.generate()
        for cls in classes:
            name = cls.state_topic().replace("/", ".") + ".command.json"
            if name not in schemas:
                continue
            topic = f"{r.base}/{cls.state_topic()}/set"
            validator = jsonschema.Draft202012Validator(json.loads(schemas[name]))
            refused = sum(1 for payload in sent[topic] if schema_refuses(validator, payload))
            answered = sum(1 for e in errors if e["topic"] == topic)
            assert answered >= refused, (topic, answered, refused)
        print(f"{total} payloads to {len(topics)} topics; answers on error by code: {dict(codes)}")
        assert total >= TOTAL
        assert codes["internal_error"] == 0, [e for e in errors if e["code"] == "internal_error"][:5]
        assert codes["crashed"] == 0, [e for e in errors if e["code"] == "crashed"][:5]
        # Still up, and every retained state still what its published schema says.
        info = await p.request(f"{r.base}/info/get", {"id": "end"})
        assert info["ok"] is True
        async with probe(r.port) as fresh:
            token = uuid.uuid4().hex
            await fresh.subscribe(f"{r.base}/#", f"test/{token}")
            await fresh.publish(f"test/{token}", "end")
            await fresh.wait_for(f"test/{token}")
            for cls in classes:
                topic = f"{r.base}/{cls.state_topic()}"
                held = fresh.on(topic)
                assert held, f"{topic} holds nothing"
                schema = json.loads(schemas[cls.state_topic().replace("/", ".") + ".state.json"])
                jsonschema.validate(held[-1].json(), schema)
