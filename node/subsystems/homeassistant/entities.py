"""Home Assistant entities built from what the node publishes: one builder per subsystem, keyed by name."""

# Each FEATURES entry names the state topic of one subsystem (plus any further topics it reads) and a
# builder that turns the retained views of those topics into discovery components. A subsystem added
# later is one entry here; the subsystem module that drives discovery never changes for it.

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ValidationError

from node.framework.subsystem import Status
from node.framework.topics import Topics
from node.framework.views import (
    AbsentView,
    EnabledView,
    EqualizerView,
    InfoView,
    MultiroomView,
    SourceStatus,
    SourcesView,
    SourceView,
    StationListView,
    UiView,
    UpdateView,
    VolumeView,
    absent_of,
)

Component = dict[str, Any]
ViewT = TypeVar("ViewT", bound=BaseModel)
# How an entity learns that its subsystem does not run: a `{"status", "reason"}` record on the state
# topic (most subsystems), `"state": "unavailable"` (sources), or `"available": false` (the knob and
# the screen, whose state keeps its shape while they do not run).
Presence = Literal["absent", "source", "flag", "none"]
PLAYER_STATES = ("idle", "buffering", "playing", "paused", "error")
SOURCE_STATES: tuple[SourceStatus, ...] = (
    "unavailable",
    "idle",
    "connected",
    "buffering",
    "playing",
    "paused",
    "error",
)
MULTIROOM_SERVER = ("starting", "running", "restarting", "unreachable")
MULTIROOM_PRESETS = ("low_latency", "balanced", "quality")
SPOTIFY_REPEAT = ("off", "context", "track")
KNOB_STEP_MAX = 20
# What the knob publishes on `knob/event` (its EventType: the knob's module is not imported here).
KNOB_EVENTS = ("press", "double_press", "long_press", "rotate_cw", "rotate_ccw")
SCREEN_TIMEOUT_MAX = 86_400
OFF = "Off"  # the source select's label for `none` (Home Assistant reads an option "none" as no state)
NAME_MAX = 60
# States Home Assistant keeps for itself: a sensor whose value is one of these reads as an unavailable
# entity, or as one with no value yet, never as that value.
RESERVED = ("unavailable", "unknown")
# What a status or source-state sensor shows for `unavailable`: a value, with the entity available,
# so the reason stays readable next to it (Home Assistant drops an unavailable entity's attributes).
NOT_AVAILABLE = "not_available"


@dataclass
class Seen:
    """The last payload of every watched topic (path relative to the base), and the last readable state.

    `good` keeps a state from before its subsystem stopped, so options and ranges survive an outage.
    """

    payloads: dict[str, bytes] = field(default_factory=dict)
    good: dict[str, bytes] = field(default_factory=dict)

    def update(self, path: str, payload: bytes) -> bool:
        """Keep `payload` as the last of `path`; False when it is the one already kept."""
        if not payload:
            self.good.pop(path, None)
            return self.payloads.pop(path, None) is not None
        if self.payloads.get(path) == payload:
            return False
        self.payloads[path] = payload
        if absent_of(payload) is None:
            self.good[path] = payload
        return True

    def view(self, model: type[ViewT], path: str) -> ViewT | None:
        """The last readable state on `path`, None when there was none."""
        payload = self.good.get(path)
        if payload is None:
            return None
        try:
            return model.model_validate_json(payload)
        except ValidationError:
            return None

    def absent(self, path: str) -> AbsentView | None:
        payload = self.payloads.get(path)
        return absent_of(payload) if payload else None

    def enabled(self, path: str) -> bool | None:
        """`<path>/config` says enabled (True/False); None when the subsystem has no config here."""
        config = self.view(EnabledView, f"{path}/config")
        return None if config is None else config.enabled


@dataclass(frozen=True)
class Make:
    """What every builder needs: the node's topics and where its web UI is."""

    topics: Topics
    node_id: str
    web: str | None  # http://host:port of the web UI, None when unknown

    def uid(self, key: str) -> str:
        # Node ids are unique on a broker (they name its topics), so these are too; and they derive
        # from nothing that changes across restarts.
        return f"milo_{self.node_id}_{key}"

    def availability(self, path: str, presence: Presence) -> list[dict[str, str]]:
        checks = [{"topic": self.topics.status}]
        if presence == "absent":
            # By its values: a state may have a `status` of its own (update: idle, checking...).
            absent = _literal(list(get_args(AbsentView.model_fields["status"].annotation)))
            template = f"{{{{ 'offline' if value_json.status in {absent} else 'online' }}}}"
            checks.append({"topic": self.topics.of(path), "value_template": template})
        elif presence == "source":
            template = "{{ 'offline' if value_json.state == 'unavailable' else 'online' }}"
            checks.append({"topic": self.topics.of(path), "value_template": template})
        elif presence == "flag":
            template = "{{ 'online' if value_json.available else 'offline' }}"
            checks.append({"topic": self.topics.of(path), "value_template": template})
        return checks

    def entity(
        self,
        key: str,
        platform: str,
        name: str,
        path: str,
        presence: Presence = "absent",
        *,
        also: tuple[dict[str, str], ...] = (),
        **options: Any,
    ) -> tuple[str, Component]:
        """One component: ids, name, availability (the node, the subsystem, `also`), then its options."""
        component: Component = {
            "platform": platform,
            "name": name,
            "unique_id": self.uid(key),
            "default_entity_id": f"{platform}.{self.uid(key)}",
            "availability": [*self.availability(path, presence), *also],
            "availability_mode": "all",
        }
        component.update({k: v for k, v in options.items() if v is not None})
        return key, component


Builder = Callable[[Seen, Make], list[tuple[str, Component]]]


@dataclass(frozen=True)
class Feature:
    """One subsystem as Home Assistant sees it: its state topic, what else it reads, its builder.

    `switchable`: it gets an "enabled" switch (config) on its `<topic>/config`, there while it is
    switched off too, so it can be switched on again from Home Assistant.
    """

    topic: str
    build: Builder
    reads: tuple[str, ...] = ()
    switchable: bool = False

    def topics(self) -> tuple[str, ...]:
        return (self.topic, f"{self.topic}/config", *self.reads)


def _on_off(field_name: str) -> str:
    return f"{{{{ 'ON' if value_json.{field_name} else 'OFF' }}}}"


def _literal(value: Any) -> str:
    """A value as a Jinja literal: JSON strings, numbers and objects read the same in both."""
    return json.dumps(value, ensure_ascii=True)


def _slug(text: str) -> str:
    """A name made fit for a component id and an entity id: lower case letters, digits and `_`."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "_"


def _text_or_none(expression: str) -> str:
    """A sensor state that is `expression` when it has a value, else Home Assistant's "no state".

    A name that is one of Home Assistant's reserved words (a phone called "unknown") is capitalised,
    so it reads as that name.
    """
    return (
        f"{{% set v = ({expression}) %}}"
        f"{{{{ (v | capitalize if v in {_literal(list(RESERVED))} else v[:255]) if v else 'None' }}}}"
    )


def _word(expression: str) -> str:
    """An enum sensor's state from a word of the node's: `unavailable` becomes NOT_AVAILABLE."""
    return f"{{% set w = ({expression}) %}}{{{{ {_literal(NOT_AVAILABLE)} if w == 'unavailable' else w }}}}"


def _words(values: tuple[str, ...] | list[str]) -> list[str]:
    """An enum sensor's options, as `_word` maps them."""
    return [NOT_AVAILABLE if value == "unavailable" else value for value in values]


# Builders -----------------------------------------------------------------------------------------
def info_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    info = seen.view(InfoView, "info")
    if info is None:
        return []
    found = [
        make.entity(
            "uptime",
            "sensor",
            "Uptime",
            "info",
            state_topic=make.topics.of("info"),
            value_template="{{ value_json.uptime_s }}",
            device_class="duration",
            unit_of_measurement="s",
            entity_category="diagnostic",
        )
    ]
    if info.cpu_temp_c is not None:
        found.append(
            make.entity(
                "cpu_temperature",
                "sensor",
                "CPU temperature",
                "info",
                state_topic=make.topics.of("info"),
                value_template="{{ value_json.cpu_temp_c if value_json.cpu_temp_c is not none else 'None' }}",
                device_class="temperature",
                unit_of_measurement="°C",
                state_class="measurement",
                entity_category="diagnostic",
            )
        )
    for name in sorted(info.subsystems):
        if name == "homeassistant":
            continue  # it is what speaks to Home Assistant: while it does not run, nothing here updates
        entry = f"value_json.subsystems[{_literal(name)}]"
        present = f"{_literal(name)} in value_json.subsystems"
        found.append(
            make.entity(
                f"status_{name}",
                "sensor",
                f"{name.capitalize()} status",
                "info",
                state_topic=make.topics.of("info"),
                value_template=_word(f"{entry}.status if {present} else 'None'"),
                json_attributes_topic=make.topics.of("info"),
                json_attributes_template=(
                    f"{{{{ {{'detail': {entry}.detail if {present} else ''}} | tojson }}}}"
                ),
                device_class="enum",
                options=_words([status.value for status in Status]),
                entity_category="diagnostic",
            )
        )
    return found


def routing_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    return [
        make.entity(
            key,
            "switch",
            label,
            "routing",
            state_topic=t.of("routing"),
            command_topic=t.of("routing/set"),
            value_template=_on_off(key),
            payload_on=json.dumps({key: True}),
            payload_off=json.dumps({key: False}),
            state_on="ON",
            state_off="OFF",
            icon=icon,
        )
        for key, label, icon in (
            ("multiroom", "Multiroom", "mdi:speaker-multiple"),
            ("equalizer", "Equalizer", "mdi:equalizer"),
        )
    ]


def volume_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    volume = seen.view(VolumeView, "volume") or VolumeView()
    return [
        make.entity(
            "volume",
            "number",
            "Volume",
            "volume",
            state_topic=t.of("volume"),
            command_topic=t.of("volume/set"),
            value_template="{{ value_json.percent }}",
            command_template="{{ value | int }}",
            min=0,
            max=volume.limit_max,
            step=1,
            mode="slider",
            unit_of_measurement="%",
            icon="mdi:volume-high",
        ),
        make.entity(
            "mute",
            "switch",
            "Mute",
            "volume",
            state_topic=t.of("volume"),
            command_topic=t.of("volume/set"),
            value_template=_on_off("muted"),
            payload_on="mute",
            payload_off="unmute",
            state_on="ON",
            state_off="OFF",
            icon="mdi:volume-off",
        ),
    ]


def _band_label(band: str) -> str:
    return f"EQ {band[:-1]} kHz" if band.endswith("k") else f"EQ {band} Hz"


def equalizer_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    eq = seen.view(EqualizerView, "equalizer")
    if eq is None:
        return []
    found = []
    if eq.presets:
        # A user preset may be called what Home Assistant reads as no option or no state: shown
        # under another label (`none (2)`), sent under its own name.
        labels = _unique_names([(preset, preset) for preset in eq.presets])
        renamed = {preset: label for preset, label in labels.items() if label != preset}
        names = {label: preset for preset, label in renamed.items()}
        found.append(
            make.entity(
                "eq_preset",
                "select",
                "EQ preset",
                "equalizer",
                state_topic=t.of("equalizer"),
                command_topic=t.of("equalizer/set"),
                # A custom curve has no preset: "None" is Home Assistant's "no option".
                value_template=(
                    f"{{% set labels = {_literal(renamed)} %}}{{% set p = value_json.preset %}}"
                    "{{ labels[p] if p in labels else (p if p else 'None') }}"
                ),
                command_template=(
                    f"{{% set names = {_literal(names)} %}}"
                    '{{ {"preset": names[value] if value in names else value} | tojson }}'
                ),
                options=list(labels.values()),
                icon="mdi:tune-vertical",
            )
        )
    for band in eq.bands:
        found.append(
            make.entity(
                f"eq_band_{band}",
                "number",
                _band_label(band),
                "equalizer",
                state_topic=t.of("equalizer"),
                command_topic=t.of("equalizer/set"),
                value_template=f"{{{{ value_json.bands[{_literal(band)}] }}}}",
                command_template=f'{{"band": {_literal(band)}, "gain_db": {{{{ value }}}}}}',
                min=eq.min_db,
                max=eq.max_db,
                step=0.5,
                mode="slider",
                unit_of_measurement="dB",
                entity_category="config",
                icon="mdi:sine-wave",
            )
        )
    return found


def _unique_names(stations: list[tuple[str, str]]) -> dict[str, str]:
    """Station id -> an option label, unique among the list (a select's options must be)."""
    labels: dict[str, str] = {}
    used: set[str] = set()
    for station_id, name in stations:
        label = (name.strip() or station_id)[:NAME_MAX]
        # "None" is Home Assistant's "no option"; "unknown" and "unavailable" are states it keeps.
        if label.lower() in ("none", *RESERVED) or label in used:
            n = 2
            while f"{label} ({n})" in used:
                n += 1
            label = f"{label} ({n})"
        used.add(label)
        labels[station_id] = label
    return labels


def radio_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    favorites = seen.view(StationListView, "radio/favorites")
    if favorites is None or not favorites.stations:
        return []
    labels = _unique_names([(s.id, s.name) for s in favorites.stations])
    ids = {label: station_id for station_id, label in labels.items()}
    return [
        make.entity(
            "radio_favorite",
            "select",
            "Radio favorite",
            "source/radio",
            "source",
            state_topic=t.of("source/radio"),
            command_topic=t.of("source/radio/set"),
            value_template=(
                f"{{% set names = {_literal(labels)} %}}"
                "{{ names[value_json.station.id] if value_json.station and "
                "value_json.station.id in names else 'None' }}"
            ),
            command_template=f"{{% set ids = {_literal(ids)} %}}{{{{ {{'play': ids[value]}} | tojson }}}}",
            options=list(labels.values()),
            icon="mdi:radio",
        )
    ]


def player_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    found = []
    sources = seen.view(SourcesView, "source") or SourcesView()
    names = list(dict.fromkeys([*sources.enabled, *([sources.active] if sources.active != "none" else [])]))
    found.append(
        make.entity(
            "source",
            "select",
            "Source",
            "player",
            state_topic=t.of("source"),
            command_topic=t.of("source/set"),
            value_template=f"{{{{ {_literal(OFF)} if value_json.active == 'none' else value_json.active }}}}",
            command_template=f"{{{{ 'none' if value == {_literal(OFF)} else value }}}}",
            options=[OFF, *names],
            icon="mdi:import",
        )
    )
    for command, icon in (
        ("play", "mdi:play"),
        ("pause", "mdi:pause"),
        ("next", "mdi:skip-next"),
        ("previous", "mdi:skip-previous"),
    ):
        found.append(
            make.entity(
                command,
                "button",
                command.capitalize(),
                "player",
                command_topic=t.of("player/set"),
                payload_press=command,
                icon=icon,
            )
        )
    found.append(
        make.entity(
            "now_playing",
            "sensor",
            "Now playing",
            "player",
            state_topic=t.of("player"),
            # A state is at most 255 characters; everything the player says is in the attributes.
            value_template=_text_or_none("[value_json.artist, value_json.title] | select | join(' - ')"),
            json_attributes_topic=t.of("player"),
            icon="mdi:music",
        )
    )
    found.append(
        make.entity(
            "playback",
            "sensor",
            "Playback",
            "player",
            state_topic=t.of("player"),
            value_template="{{ value_json.state }}",
            device_class="enum",
            options=list(PLAYER_STATES),
            icon="mdi:play-pause",
        )
    )
    if make.web is not None:
        # A cover may be a path on the node (a station logo): made absolute with the web UI's address.
        # With none, the node's own icon, so Home Assistant never fetches an empty URL.
        found.append(
            make.entity(
                "cover",
                "image",
                "Cover",
                "player",
                url_topic=t.of("player"),
                url_template=(
                    "{% set u = value_json.cover_url or '' %}"
                    f"{{{{ u if '://' in u else {_literal(make.web)} ~ "
                    "(u if u.startswith('/') else '/favicon.svg') }}"
                ),
            )
        )
    return found


def ui_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    ui = seen.view(UiView, "ui")
    if ui is None or not ui.languages:
        return []
    return [
        make.entity(
            "language",
            "select",
            "Language",
            "ui",
            state_topic=make.topics.of("ui"),
            command_topic=make.topics.of("ui/set"),
            value_template="{{ value_json.language }}",
            options=list(ui.languages),
            entity_category="config",
            icon="mdi:translate",
        )
    ]


def source_entities(name: str, seen: Seen, make: Make) -> list[tuple[str, Component]]:
    """Every source, whatever it is: its state as a diagnostic sensor."""
    path = f"source/{name}"
    if seen.view(SourceView, path) is None:
        return []
    return [
        make.entity(
            f"source_{name}_state",
            "sensor",
            f"{name.capitalize()} state",
            path,
            "none",  # the state itself says `unavailable`, and this shows it (as NOT_AVAILABLE)
            state_topic=make.topics.of(path),
            value_template=_word("value_json.state"),
            json_attributes_topic=make.topics.of(path),
            json_attributes_template="{{ {'error': value_json.error} | tojson }}",
            device_class="enum",
            options=_words(SOURCE_STATES),
            entity_category="diagnostic",
        )
    ]


def enabled_entity(feature: Feature, make: Make) -> tuple[str, Component]:
    """The switch of a `switchable` subsystem: its config's `enabled`, there while it is off too."""
    name = feature.topic.split("/")[-1]
    return make.entity(
        f"{name}_enabled",
        "switch",
        f"{name.capitalize()} enabled",
        feature.topic,
        "none",  # its state topic says `disabled` while it is off: only the node's status counts
        state_topic=make.topics.of(f"{feature.topic}/config"),
        command_topic=make.topics.of(f"{feature.topic}/config/set"),
        value_template=_on_off("enabled"),
        payload_on=json.dumps({"enabled": True}),
        payload_off=json.dumps({"enabled": False}),
        state_on="ON",
        state_off="OFF",
        entity_category="config",
        icon="mdi:power",
    )


def knob_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    return [
        make.entity(
            "knob_button",
            "binary_sensor",
            "Knob button",
            "knob",
            "flag",
            state_topic=t.of("knob"),
            value_template=_on_off("pressed"),
            json_attributes_topic=t.of("knob"),
            json_attributes_template="{{ {'error': value_json.error, 'pins': [value_json.clk, "
            "value_json.dt, value_json.sw], 'pin_factory': value_json.pin_factory} | tojson }}",
            entity_category="diagnostic",
            icon="mdi:knob",
        ),
        # Each gesture and turn, whatever the knob's action for it: for automations.
        make.entity(
            "knob_event",
            "event",
            "Knob",
            "knob",
            "flag",
            state_topic=t.of("knob/event"),
            event_types=list(KNOB_EVENTS),
            device_class="button",
            icon="mdi:gesture-tap-button",
        ),
        make.entity(
            "knob_step",
            "number",
            "Knob step",
            "knob",
            "flag",
            state_topic=t.of("knob/config"),
            command_topic=t.of("knob/config/set"),
            value_template="{{ value_json.step }}",
            command_template='{"step": {{ value | int }}}',
            min=1,
            max=KNOB_STEP_MAX,
            step=1,
            mode="box",
            unit_of_measurement="%",
            entity_category="config",
            icon="mdi:rotate-right",
        ),
    ]


def screen_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    return [
        # The backlight: on/off as words, brightness 1..100 % (Home Assistant scales its 0..255).
        make.entity(
            "screen",
            "light",
            "Screen",
            "screen",
            "flag",
            state_topic=t.of("screen"),
            command_topic=t.of("screen/set"),
            state_value_template="{{ 'on' if value_json.on else 'off' }}",
            payload_on="on",
            payload_off="off",
            brightness_state_topic=t.of("screen"),
            brightness_value_template="{{ value_json.brightness }}",
            brightness_command_topic=t.of("screen/set"),
            brightness_command_template='{"brightness": {{ value }}}',
            brightness_scale=100,
            icon="mdi:monitor",
        ),
        make.entity(
            "screen_timeout",
            "number",
            "Screen timeout",
            "screen",
            "flag",
            state_topic=t.of("screen"),
            command_topic=t.of("screen/set"),
            value_template="{{ value_json.timeout_s }}",
            command_template='{"timeout_s": {{ value | int }}}',
            min=0,
            max=SCREEN_TIMEOUT_MAX,
            step=1,
            mode="box",
            device_class="duration",
            unit_of_measurement="s",
            entity_category="config",
            icon="mdi:timer-outline",
        ),
    ]


def multiroom_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    found = [
        make.entity(
            "multiroom_server",
            "sensor",
            "Multiroom server",
            "multiroom",
            state_topic=t.of("multiroom"),
            value_template="{{ value_json.server if value_json.server is defined else 'None' }}",
            json_attributes_topic=t.of("multiroom"),
            # While it does not run its topic holds `{"status", "reason"}`: null for each, not an error.
            json_attributes_template="{{ {'version': value_json.version | default(none), "
            "'error': value_json.error | default(none), 'restarts': value_json.restarts | default(none), "
            "'managed': value_json.managed | default(none)} | tojson }}",
            device_class="enum",
            options=list(MULTIROOM_SERVER),
            entity_category="diagnostic",
            icon="mdi:server-network",
        ),
        make.entity(
            "multiroom_preset",
            "select",
            "Multiroom preset",
            "multiroom",
            state_topic=t.of("multiroom"),
            command_topic=t.of("multiroom/set"),
            # Settings of no preset (`custom`): "None" is Home Assistant's "no option".
            value_template=(
                f"{{% set p = value_json.settings.preset if value_json.settings is defined else '' %}}"
                f"{{{{ p if p in {_literal(list(MULTIROOM_PRESETS))} else 'None' }}}}"
            ),
            command_template='{{ {"preset": value} | tojson }}',
            options=list(MULTIROOM_PRESETS),
            entity_category="config",
            icon="mdi:timer-sand",
        ),
    ]
    view = seen.view(MultiroomView, "multiroom") or MultiroomView()
    for client in view.clients:
        key = f"client_{_slug(client.id)}"
        label = (client.name or client.id)[:NAME_MAX]
        pick = (
            f"{{% set c = value_json.clients | default([]) | selectattr('id', 'eq', {_literal(client.id)})"
            " | list %}"
        )
        # A client that is not connected (or was forgotten) is unavailable, not at 0 %.
        connected = {
            "topic": t.of("multiroom"),
            "value_template": f"{pick}{{{{ 'online' if c and c[0].connected else 'offline' }}}}",
        }
        command = t.of(f"multiroom/client/{client.id}/set")
        found.append(
            make.entity(
                f"{key}_volume",
                "number",
                f"{label} volume",
                "multiroom",
                also=(connected,),
                state_topic=t.of("multiroom"),
                command_topic=command,
                value_template=f"{pick}{{{{ c[0].volume if c else 'None' }}}}",
                command_template="{{ value | int }}",
                min=0,
                max=100,
                step=1,
                mode="slider",
                unit_of_measurement="%",
                icon="mdi:speaker",
            )
        )
        found.append(
            make.entity(
                f"{key}_mute",
                "switch",
                f"{label} mute",
                "multiroom",
                also=(connected,),
                state_topic=t.of("multiroom"),
                command_topic=command,
                value_template=f"{pick}{{{{ ('ON' if c[0].muted else 'OFF') if c else 'None' }}}}",
                payload_on="mute",
                payload_off="unmute",
                state_on="ON",
                state_off="OFF",
                icon="mdi:speaker-off",
            )
        )
    return found


def spotify_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    path = "source/spotify"
    return [
        make.entity(
            "spotify_user",
            "sensor",
            "Spotify user",
            path,
            "source",
            state_topic=t.of(path),
            value_template=_text_or_none("value_json.user"),
            json_attributes_topic=t.of(path),
            json_attributes_template="{{ {'device_name': value_json.device_name, "
            "'restarts': value_json.restarts} | tojson }}",
            entity_category="diagnostic",
            icon="mdi:spotify",
        ),
        make.entity(
            "spotify_shuffle",
            "switch",
            "Spotify shuffle",
            path,
            "source",
            state_topic=t.of(path),
            command_topic=t.of(f"{path}/set"),
            value_template=_on_off("shuffle"),
            payload_on=json.dumps({"shuffle": True}),
            payload_off=json.dumps({"shuffle": False}),
            state_on="ON",
            state_off="OFF",
            icon="mdi:shuffle-variant",
        ),
        make.entity(
            "spotify_repeat",
            "select",
            "Spotify repeat",
            path,
            "source",
            state_topic=t.of(path),
            command_topic=t.of(f"{path}/set"),
            value_template="{{ value_json.repeat }}",
            command_template='{{ {"repeat": value} | tojson }}',
            options=list(SPOTIFY_REPEAT),
            icon="mdi:repeat",
        ),
    ]


def bluetooth_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    path = "source/bluetooth"
    return [
        make.entity(
            "bluetooth_device",
            "sensor",
            "Bluetooth device",
            path,
            "source",
            state_topic=t.of(path),
            value_template=_text_or_none("value_json.device.name if value_json.device else ''"),
            json_attributes_topic=t.of(path),
            json_attributes_template="{{ (value_json.device or {}) | tojson }}",
            icon="mdi:cellphone-sound",
        ),
        # `pairable` opens the window the config says (with visibility = always it stays open).
        make.entity(
            "bluetooth_pairable",
            "switch",
            "Bluetooth pairable",
            path,
            "source",
            state_topic=t.of(path),
            command_topic=t.of(f"{path}/set"),
            value_template=_on_off("pairable"),
            payload_on="pairable",
            payload_off=json.dumps({"pairable": 0}),
            state_on="ON",
            state_off="OFF",
            icon="mdi:bluetooth-connect",
        ),
        make.entity(
            "bluetooth_disconnect",
            "button",
            "Bluetooth disconnect",
            path,
            "source",
            command_topic=t.of(f"{path}/set"),
            payload_press="disconnect",
            icon="mdi:bluetooth-off",
        ),
    ]


def airplay_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    path = "source/airplay"
    return [
        make.entity(
            "airplay_sender",
            "sensor",
            "AirPlay sender",
            path,
            "source",
            state_topic=t.of(path),
            value_template=_text_or_none("value_json.sender"),
            json_attributes_topic=t.of(path),
            json_attributes_template="{{ {'address': value_json.sender_address, 'user_agent': "
            "value_json.user_agent, 'remote': value_json.remote} | tojson }}",
            icon="mdi:cast-audio",
        )
    ]


def roc_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    path = "source/roc"
    return [
        make.entity(
            "roc_sender",
            "sensor",
            "ROC sender",
            path,
            "source",
            state_topic=t.of(path),
            value_template=_text_or_none("value_json.sender_name or value_json.sender"),
            json_attributes_topic=t.of(path),
            json_attributes_template="{{ {'senders': value_json.senders} | tojson }}",
            icon="mdi:laptop",
        )
    ]


def _update_template(program: str) -> str:
    """The update entity's JSON state for one program, from the whole `update` state.

    A key is left out rather than null (Home Assistant refuses a null version); an unknown latest
    version (offline) stays unknown, never "up to date".
    """
    name = _literal(program)
    return (
        f"{{% set p = value_json.programs[{name}] if value_json.programs is defined "
        f"and {name} in value_json.programs else none %}}"
        "{% set job = value_json.job if value_json.job is defined else none %}"
        f"{{% set mine = job is not none and job.program == {name} %}}"
        f"{{% set d = {{'title': {name}, 'in_progress': mine and job.result == 'running'}} %}}"
        "{% if p and p.installed %}{% set d = dict(d, installed_version=p.installed) %}{% endif %}"
        # p['update'], not p.update: that is the dict's method, which the sandbox hides.
        "{% set latest = (p.available if p['update'] else (p.installed if p.available else none))"
        " if p else none %}"
        "{% if latest %}{% set d = dict(d, latest_version=latest) %}{% endif %}"
        # Not installable from here (a checkout): no install command, and the summary says why.
        "{% if p and p.detail and not p.installable %}"
        "{% set d = dict(d, release_summary=p.detail[:255]) %}{% endif %}"
        "{% if mine and job.result in ('rolled_back', 'failed') %}"
        "{% set d = dict(d, release_summary=(job.result ~ ': ' ~ job.detail)[:255]) %}{% endif %}"
        "{{ d | tojson }}"
    )


def update_entities(seen: Seen, make: Make) -> list[tuple[str, Component]]:
    t = make.topics
    view = seen.view(UpdateView, "update") or UpdateView()
    found = [
        make.entity(
            "update_check",
            "button",
            "Check for updates",
            "update",
            command_topic=t.of("update/set"),
            payload_press="check",
            entity_category="config",
            icon="mdi:update",
        )
    ]
    for program, state in sorted(view.programs.items()):
        installable: dict[str, Any] = {
            "command_topic": t.of("update/set"),
            "payload_install": json.dumps({"install": program}),
        }
        found.append(
            make.entity(
                f"update_{_slug(program)}",
                "update",
                program,
                "update",
                state_topic=t.of("update"),
                value_template=_update_template(program),
                entity_category="config",
                **(installable if state.installable else {}),
            )
        )
    return found


# The table ----------------------------------------------------------------------------------------
# Keyed by subsystem name. Sources also get `source_entities` from their `source/<name>` topic, so a
# new source shows up with no entry; an entry adds what is particular to it.
FEATURES: dict[str, Feature] = {
    "info": Feature("info", info_entities),
    "routing": Feature("routing", routing_entities),
    "volume": Feature("volume", volume_entities),
    "equalizer": Feature("equalizer", equalizer_entities),
    "radio": Feature("source/radio", radio_entities, reads=("radio/favorites",)),
    "player": Feature("player", player_entities, reads=("source",)),
    "ui": Feature("ui", ui_entities),
    "knob": Feature("knob", knob_entities, switchable=True),
    "screen": Feature("screen", screen_entities, switchable=True),
    "multiroom": Feature("multiroom", multiroom_entities),
    "spotify": Feature("source/spotify", spotify_entities),
    "bluetooth": Feature("source/bluetooth", bluetooth_entities),
    "airplay": Feature("source/airplay", airplay_entities),
    "roc": Feature("source/roc", roc_entities),
    "update": Feature("update", update_entities),
}
# Every source's state and config, for `source_entities`.
SOURCE_TOPICS = ("source/+", "source/+/config")


def watched() -> tuple[str, ...]:
    """Every topic the builders read, relative to the base."""
    topics = [t for feature in FEATURES.values() for t in feature.topics()]
    return tuple(dict.fromkeys([*topics, *SOURCE_TOPICS]))


def source_names(seen: Seen) -> list[str]:
    names = set()
    for path in seen.payloads:
        parts = path.split("/")
        if parts[0] == "source" and len(parts) == 3 and parts[2] == "config":
            names.add(parts[1])
    return sorted(names)


def known(seen: Seen) -> set[str]:
    """The state topics of the subsystems this node has (their config topic is retained), on or off."""
    topics = {f.topic for f in FEATURES.values() if seen.enabled(f.topic) is not None}
    return topics | {f"source/{name}" for name in source_names(seen)}


def build(seen: Seen, make: Make) -> dict[str, tuple[str, Component]]:
    """Every component the node's topics call for now, by component id, with its subsystem's state topic.

    A subsystem without a config topic is not on this node: no entities. One whose config says
    `enabled: false` is switched off: its entities are removed. One that is unavailable or crashed
    keeps them, and their availability says so.
    """
    components: dict[str, tuple[str, Component]] = {}
    for feature in FEATURES.values():
        on = seen.enabled(feature.topic)
        if feature.switchable and on is not None:
            key, component = enabled_entity(feature, make)
            components[key] = (feature.topic, component)
        if on:
            components.update((k, (feature.topic, c)) for k, c in feature.build(seen, make))
    for name in source_names(seen):
        if seen.enabled(f"source/{name}"):
            components.update((k, (f"source/{name}", c)) for k, c in source_entities(name, seen, make))
    return components
