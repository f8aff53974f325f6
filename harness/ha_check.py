"""Checks discovery payloads with Home Assistant's own code; run by the Home Assistant venv's python."""

# Input (stdin, JSON): {"configs": {topic: payload}, "retained": {topic: payload}, "events": {topic:
# [payload, ...]}}, every payload text (events: messages an event entity would receive, not retained).
# Each device config goes through what Home Assistant's MQTT discovery does with one (abbreviations,
# the device discovery schema, shared options, each platform's DISCOVERY_SCHEMA); a key the schema
# would silently drop is a problem too (a typo), except the ones newer releases added. Then every
# template is rendered against the retained states given, as Home Assistant would render it, and what
# it yields is checked against the entity's own options, range or states, and never is a word Home
# Assistant reserves (a sensor reading "unavailable" shows as an unavailable entity); each event is read
# as the event entity would, its `event_type` one of `event_types`. Output (stdout, JSON): {"problems":
# [...], "entities": {component id: {"platform", "state", "available", "commands", "events"}}}.
# Exit status 1 when there are problems.

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile
from typing import Any

# Newer than the Home Assistant this runs (2025.4): dropped by its schema, understood by later ones.
NEWER_KEYS = {"default_entity_id"}
# Home Assistant's STATE_UNAVAILABLE and STATE_UNKNOWN: an entity's state, never a value of its own.
RESERVED = ("unavailable", "unknown")


def _render(cv: Any, template: str, payload: str | None) -> str:
    compiled = cv.template(template)
    if payload is None:
        raise ValueError("no retained state to render it with")
    return str(compiled.async_render_with_possible_json_value(payload))


def _command(cv: Any, template: str | None, value: Any) -> str:
    if template is None:
        return str(value)
    return str(cv.template(template).async_render({"value": value}, parse_result=False))


def _available(key: str, config: dict[str, Any], retained: dict[str, str], problems: list[str]) -> bool:
    available = True
    for check in config.get("availability", []):
        payload = retained.get(check["topic"])
        if payload is None:
            available = False
            continue
        if "value_template" in check:
            payload = str(check["value_template"].async_render_with_possible_json_value(payload))
        if payload not in (check.get("payload_available", "online"), check.get("payload_not_available")):
            problems.append(f"{key}: availability on {check['topic']} rendered {payload!r}")
        available = available and payload == check.get("payload_available", "online")
    return available


def _check_state(
    cv: Any,
    key: str,
    config: dict[str, Any],
    *,
    platform: str,
    retained: dict[str, str],
    events: dict[str, list[str]],
    problems: list[str],
) -> dict[str, Any]:
    found: dict[str, Any] = {"platform": platform}
    available = found["available"] = _available(key, config, retained, problems)
    state_topic = config.get("state_topic") or config.get("url_topic")
    template = (
        config.get("value_template") or config.get("url_template") or config.get("state_value_template")
    )
    state: str | None = None
    if state_topic and template is not None:
        try:
            state = _render(cv, template.template, retained.get(state_topic))
        except Exception as exc:
            problems.append(f"{key}: {state_topic}: {exc}")
    found["state"] = state
    if state in RESERVED:
        problems.append(f"{key}: state {state!r} is a word Home Assistant reserves, not a value")
    if state is not None and available:
        _check_value(key, platform, config, state, problems)
    if platform == "event":
        found["events"] = _check_events(cv, key, config, events.get(config["state_topic"], []), problems)
    if platform == "light" and config.get("brightness_value_template") is not None:
        found["brightness"] = _check_brightness(cv, key, config, retained, problems, available=available)
    attributes = config.get("json_attributes_template")
    if attributes is not None and config.get("json_attributes_topic") in retained:
        try:
            rendered = _render(cv, attributes.template, retained[config["json_attributes_topic"]])
        except Exception as exc:
            problems.append(f"{key}: attributes: {exc}")
        else:
            if not isinstance(json.loads(rendered), dict):
                problems.append(f"{key}: attributes rendered {rendered!r}, not an object")
    found["commands"] = _commands(cv, platform, config)
    return found


def _check_events(
    cv: Any, key: str, config: dict[str, Any], payloads: list[str], problems: list[str]
) -> list[str]:
    """The `event_type` of each message, read as the event entity reads one (a JSON object)."""
    template = config.get("value_template")
    found = []
    for payload in payloads:
        rendered = _render(cv, template.template, payload) if template is not None else payload
        try:
            event = json.loads(rendered)
        except ValueError:
            problems.append(f"{key}: event {rendered!r} is not JSON")
            continue
        event_type = event.get("event_type") if isinstance(event, dict) else None
        if event_type not in config["event_types"]:
            problems.append(f"{key}: event type {event_type!r} is not one of {config['event_types']}")
        found.append(str(event_type))
    return found


def _check_brightness(
    cv: Any,
    key: str,
    config: dict[str, Any],
    retained: dict[str, str],
    problems: list[str],
    *,
    available: bool,
) -> str | None:
    try:
        value = _render(
            cv, config["brightness_value_template"].template, retained.get(config["brightness_state_topic"])
        )
    except Exception as exc:
        problems.append(f"{key}: brightness: {exc}")
        return None
    if available and not 0 <= float(value) <= config["brightness_scale"]:
        problems.append(f"{key}: brightness {value} is outside 0..{config['brightness_scale']}")
    return value


def _commands(cv: Any, platform: str, config: dict[str, Any]) -> dict[str, str]:
    """What a service call on the entity publishes on its command topic, by what it asks for."""
    command = config.get("command_template")
    raw = command.template if command is not None else None
    if platform == "select":
        return {option: _command(cv, raw, option) for option in config["options"]}
    if platform == "number":
        return {str(v): _command(cv, raw, v) for v in (config["min"], config["max"])}
    if platform in ("switch", "light"):
        found = {"ON": config["payload_on"], "OFF": config["payload_off"]}
        brightness = config.get("brightness_command_template")
        if brightness is not None:
            # What a turn_on with brightness 50 % publishes on brightness_command_topic.
            found["brightness 50%"] = _command(cv, brightness.template, 50)
        return found
    if platform == "button":
        return {"PRESS": config["payload_press"]}
    if platform == "update" and config.get("command_topic"):
        return {"INSTALL": config["payload_install"]}
    return {}


def _check_value(key: str, platform: str, config: dict[str, Any], state: str, problems: list[str]) -> None:
    none = state.strip().lower() == "none"
    if platform == "select" and not none and state not in config["options"]:
        problems.append(f"{key}: state {state!r} is not one of {config['options']}")
    elif platform == "number":
        value = float(state)
        if not config["min"] <= value <= config["max"]:
            problems.append(f"{key}: {value} is outside {config['min']}..{config['max']}")
    elif platform == "switch" and state not in (config.get("state_on"), config.get("state_off")):
        problems.append(f"{key}: state {state!r} is neither state_on nor state_off")
    elif platform == "sensor":
        if len(state) > 255:
            problems.append(f"{key}: a state of {len(state)} characters (at most 255)")
        if config.get("device_class") == "enum" and not none and state not in config["options"]:
            problems.append(f"{key}: state {state!r} is not one of {config['options']}")
        if config.get("unit_of_measurement") and not none:
            float(state)
    elif platform in ("binary_sensor", "light") and state not in (
        config["payload_on"],
        config["payload_off"],
    ):
        problems.append(f"{key}: state {state!r} is neither payload_on nor payload_off")
    elif platform == "update":
        _check_update(key, state, problems)
    elif platform == "image":
        import homeassistant.helpers.config_validation as cv  # noqa: PLC0415

        cv.url(state)


def _check_update(key: str, state: str, problems: list[str]) -> None:
    """An update entity's state: the JSON object its own schema takes (a null version is refused)."""
    from homeassistant.components.mqtt.update import MQTT_JSON_UPDATE_SCHEMA  # noqa: PLC0415

    parsed = json.loads(state)
    if not isinstance(parsed, dict):
        problems.append(f"{key}: state {state!r} is not a JSON object")
        return
    try:
        MQTT_JSON_UPDATE_SCHEMA(parsed)
    except Exception as exc:
        problems.append(f"{key}: state {state!r}: {exc}")


def check(
    configs: dict[str, str | None], retained: dict[str, str], events: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    import homeassistant.helpers.config_validation as cv  # noqa: PLC0415
    import voluptuous as vol  # noqa: PLC0415
    from homeassistant.components.mqtt import discovery, schemas  # noqa: PLC0415

    problems: list[str] = []
    entities: dict[str, Any] = {}
    for topic, text in configs.items():
        if not text:
            continue
        payload = json.loads(text)
        discovery._replace_all_abbreviations(payload)
        try:
            device = schemas.DEVICE_DISCOVERY_SCHEMA(json.loads(json.dumps(payload)))
        except vol.Invalid as exc:
            problems.append(f"{topic}: device discovery schema: {exc}")
            continue
        for key, component in payload["components"].items():
            platform = component.pop("platform")
            if not component:
                entities[key] = {"platform": platform, "removed": True}
                continue
            config = dict(component)
            config["device"] = payload["device"]
            config["origin"] = payload["origin"]
            for option in schemas.SHARED_OPTIONS:
                if option in device and option not in config:
                    config[option] = device[option]
            module = importlib.import_module(f"homeassistant.components.mqtt.{platform}")
            try:
                validated = module.DISCOVERY_SCHEMA(dict(config))
            except vol.Invalid as exc:
                problems.append(f"{topic} {key} ({platform}): {exc}")
                continue
            dropped = set(config) - set(validated) - NEWER_KEYS
            if dropped:
                problems.append(f"{topic} {key} ({platform}): keys Home Assistant ignores: {sorted(dropped)}")
            entities[key] = _check_state(
                cv,
                key,
                validated,
                platform=platform,
                retained=retained,
                events=events or {},
                problems=problems,
            )
    return {"problems": problems, "entities": entities}


async def _main() -> int:
    from homeassistant.core import HomeAssistant  # noqa: PLC0415
    from homeassistant.helpers import frame  # noqa: PLC0415

    request = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as config_dir:
        # Templates are compiled and rendered the way a running Home Assistant does, which needs one.
        hass = HomeAssistant(config_dir)
        frame.async_setup(hass)
        try:
            result = check(request["configs"], request.get("retained", {}), request.get("events", {}))
        finally:
            await hass.async_stop(force=True)
    json.dump(result, sys.stdout)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
