// Settings: the shared UI language, the screen and the knob, and a form for every subsystem's
// retained `<sub>/config`. Only the keys a person changed are sent, as a partial object; the node
// validates and answers.
import * as node from '../node.js';
import { h, clear, guardSlider, errorBox } from '../dom.js';
import { t, tOr, LANGUAGES, language, setLanguage, loadPart } from '../i18n.js';

const el = {};
const forms = new Map(); // config path -> { details, fields: Map(key -> field), message }
let brightness = null;

// The screen goes dark after one of these (seconds; 0 is never); another value set elsewhere is added.
const TIMEOUTS = [0, 30, 60, 120, 300, 600, 1800, 3600];
// What the knob's button can do, in the order offered, each with its label.
const ACTIONS = {
  play_pause: 'knob.action.play_pause',
  mute: 'knob.action.mute',
  next_source: 'knob.action.next_source',
  multiroom: 'knob.action.multiroom',
  none: 'knob.action.none',
};
const GESTURES = {
  press: 'settings.knob_press',
  double_press: 'settings.knob_double_press',
  long_press: 'settings.knob_long_press',
};
const STEPS = [1, 2, 3, 4, 5, 10];

export default { id: 'settings', icon: 'settings', label: 'nav.settings', mount, update };

function mount(root) {
  el.languages = h('div.langs', { id: 'languages', role: 'group' });
  el.configs = h('div', { id: 'configs' });
  root.append(
    h('h2', { i18n: 'settings.language' }), el.languages,
    spotifyBox(), ...mountScreen(), ...mountKnob(),
    h('h2', { i18n: 'settings.subsystems' }), el.configs,
  );
}

function choice(id, label, onChange) {
  const select = h('select', { id, onChange: () => onChange(select.value) });
  return { select, box: h('label.field', {}, h('span', { i18n: label }), select) };
}

// Options as [value, text] pairs; the current value is kept selected, and offered if it is not listed.
function fill(select, pairs, current) {
  const listed = pairs.some(([value]) => String(value) === String(current));
  const all = listed || current === undefined ? pairs : [...pairs, [current, String(current)]];
  clear(select, all.map(([value, text]) => h('option', { value: String(value), text })));
  select.value = String(current);
}

function mountScreen() {
  el.screenTitle = h('h2', { i18n: 'settings.screen', hidden: true });
  const range = h('input', { type: 'range', min: 1, max: 100, step: 1, id: 'screen-brightness', label: 'settings.brightness', class: 'grow' });
  el.brightnessPct = h('span.pct', { id: 'screen-brightness-pct' });
  brightness = guardSlider(range, {
    send: (value) => node.send('screen/set', { brightness: value }),
    show: (value) => { el.brightnessPct.textContent = String(value); },
  });
  el.timeout = choice('screen-timeout', 'settings.timeout', (value) => node.send('screen/set', { timeout_s: Number(value) }));
  el.screen = h('div.fields', { id: 'screen-settings', hidden: true },
    h('label.field', {}, h('span', { i18n: 'settings.brightness' }), h('div.row', {}, range, el.brightnessPct)),
    el.timeout.box);
  return [el.screenTitle, el.screen];
}

function timeoutText(seconds) {
  if (seconds === 0) return t('settings.timeout_never');
  if (seconds % 3600 === 0) return t('settings.timeout_h', { n: seconds / 3600 });
  if (seconds % 60 === 0) return t('settings.timeout_min', { n: seconds / 60 });
  return t('settings.timeout_s', { n: seconds });
}

function renderScreen() {
  const screen = node.get('screen');
  const shown = Boolean(screen && typeof screen === 'object' && screen.available);
  el.screenTitle.hidden = !shown;
  el.screen.hidden = !shown;
  if (!shown) return;
  brightness.set(screen.brightness);
  if (document.activeElement === el.timeout.select) return; // a list open under a finger stays as it is
  const pairs = [...new Set([...TIMEOUTS, screen.timeout_s])].sort((a, b) => a - b).map((s) => [s, timeoutText(s)]);
  fill(el.timeout.select, pairs, screen.timeout_s);
}

function mountKnob() {
  el.knobTitle = h('h2', { i18n: 'settings.knob', hidden: true });
  el.gestures = {};
  const boxes = [];
  for (const [gesture, label] of Object.entries(GESTURES)) {
    el.gestures[gesture] = choice(`knob-${gesture}`, label, (value) => node.send('knob/config/set', { [gesture]: value }));
    boxes.push(el.gestures[gesture].box);
  }
  el.step = choice('knob-step', 'settings.knob_step', (value) => node.send('knob/config/set', { step: Number(value) }));
  el.knob = h('div.fields', { id: 'knob-settings', hidden: true }, ...boxes, el.step.box);
  return [el.knobTitle, el.knob];
}

function renderKnob() {
  const knob = node.get('knob');
  const config = node.get('knob/config');
  // A node whose knob is not there (no GPIO) offers nothing to set for it here.
  const shown = Boolean(knob && typeof knob === 'object' && knob.available && config && typeof config === 'object');
  el.knobTitle.hidden = !shown;
  el.knob.hidden = !shown;
  if (!shown) return;
  const actions = Object.entries(ACTIONS).map(([action, key]) => [action, t(key)]);
  for (const [gesture, { select }] of Object.entries(el.gestures)) {
    if (document.activeElement !== select) fill(select, actions, config[gesture]);
  }
  if (document.activeElement !== el.step.select) fill(el.step.select, STEPS.map((n) => [n, `${n} %`]), config.step);
}

// The name this speaker has in the Spotify apps: `source/spotify/config` device_name (empty: the node's).
function spotifyBox() {
  el.spotifyName = h('input', { type: 'text', id: 'spotify-name', autocomplete: 'off', spellcheck: false, maxLength: 100 });
  el.spotifyMsg = h('div.msg');
  el.spotifySave = h('button.primary', { i18n: 'common.save', type: 'submit', disabled: true });
  el.spotifyName.addEventListener('input', () => { el.spotifySave.disabled = false; el.spotifyName.dataset.dirty = '1'; });
  const form = h('form', {
    onSubmit: (e) => {
      e.preventDefault();
      el.spotifyMsg.replaceChildren();
      el.spotifySave.disabled = true;
      delete el.spotifyName.dataset.dirty;
      node.send('source/spotify/config/set', { device_name: el.spotifyName.value.trim() }, {
        onError: (error) => { clear(el.spotifyMsg, errorBox('div.why-box', error.code, error.error)); },
      });
    },
  }, h('label.field', {}, h('span', { i18n: 'settings.spotify_name' }), el.spotifyName),
  h('p.dim', { i18n: 'settings.spotify_name_hint' }), el.spotifyMsg, h('div.row', {}, el.spotifySave));
  el.spotify = h('div', { id: 'spotify-settings', hidden: true }, h('h2', { i18n: 'settings.spotify' }), form);
  return el.spotify;
}

function renderSpotify() {
  const config = node.get('source/spotify/config');
  const present = config && typeof config === 'object';
  el.spotify.hidden = !present;
  if (!present || el.spotifyName.dataset.dirty) return;
  const spotify = node.get('source/spotify');
  // What the Spotify apps show now; the config's own value when it names one.
  const shown = config.device_name || (spotify && typeof spotify === 'object' ? spotify.device_name : '') || '';
  el.spotifyName.value = shown;
}

function renderLanguages() {
  const ui = node.get('ui');
  const shared = ui && typeof ui === 'object';
  const offered = shared && Array.isArray(ui.languages) ? ui.languages.filter((l) => l in LANGUAGES) : Object.keys(LANGUAGES);
  const active = shared ? ui.language : language();
  clear(el.languages, offered.map((code) => h('button', {
    lang: code,
    dataset: { lang: code },
    'aria-pressed': String(code === active),
    text: LANGUAGES[code],
    // With the `ui` subsystem the choice is the node's, for every screen; without it, this one's.
    onClick: () => (shared ? node.send('ui/set', code) : setLanguage(code)),
  })), shared ? null : h('p.dim', { i18n: 'settings.language_local' }));
}

function configPaths() {
  return [...node.state.keys()].filter((p) => p.endsWith('/config') && typeof node.get(p) === 'object').sort();
}

// The forms are drawn from web/schemas.json (made by `milo schemas` from the config models): each
// key's kind, bounds, choices, unit and whether only the node's file may set it. Fetched once, when
// the first config shows up; until then (or for a config it does not know) the values' own types.
let schemas = null;
let schemasLoading = null;
function loadSchemas() {
  if (!schemasLoading) {
    // The keys' labels and help come with it (i18n/settings/<lang>.json): only this view needs them.
    const texts = loadPart('settings').catch((e) => console.warn(e));
    schemasLoading = fetch('schemas.json')
      .then((r) => (r.ok ? r.json() : { configs: {} }))
      .catch(() => ({ configs: {} }))
      .then(async (body) => { await texts; schemas = body.configs || {}; update(null); });
  }
}

// What a person changes every day is in view; the rest (ports, programs, timings) folded away.
const BASIC = {
  info: ['refresh_s'],
  volume: ['limit_max', 'step', 'startup', 'startup_percent'],
  spotify: ['device_name', 'bitrate', 'volume'],
  bluetooth: ['alias', 'visibility', 'pairing', 'pairable_window_s', 'connections', 'volume_sync'],
  airplay: ['name', 'allow_interruption', 'sender_volume'],
  roc: ['target_latency_ms'],
  radio: ['click_counting', 'search'],
  multiroom: ['local_client', 'initial_volume'],
  player: ['auto_switch', 'pause_previous', 'play_on_select', 'restore_active'],
  knob: ['press', 'double_press', 'long_press', 'step', 'reverse', 'wake_screen'],
  screen: ['brightness', 'timeout_s'],
  update: ['check_every_h'],
  homeassistant: ['discovery', 'name'],
};

export function isAdvanced(name, key, spec) {
  if (key === 'enabled') return false;
  if (spec && spec.local_only) return true;
  return !(BASIC[name] || []).includes(key);
}

function nameOf(path) {
  const schema = schemas && schemas[path];
  return schema ? schema.name : path.slice(0, -'/config'.length).split('/').pop();
}

// A key's text: its subsystem's own, else the one every subsystem shares (`enabled`).
function keyText(name, key, part) {
  return tOr(`settings.${name}.${key}.${part}`, tOr(`settings.common.${key}.${part}`, part === 'label' ? key : ''));
}

// What a choice means, where a person picks it; technical values (a program's name) are shown as they are.
function choiceText(name, key, value) {
  const own = tOr(`settings.${name}.${key}.choice.${value}`, '');
  if (own) return own;
  if (name === 'knob') return tOr(`knob.action.${value}`, String(value));
  return key === 'bitrate' ? `${value} kbit/s` : String(value);
}

function kindOf(value, spec) {
  if (spec) return spec.kind;
  if (typeof value === 'boolean') return 'boolean';
  if (typeof value === 'number') return 'number';
  if (typeof value === 'string') return 'string';
  return 'json';
}

function makeField(name, key, value, spec, onDirty) {
  const type = kindOf(value, spec);
  const local = Boolean(spec && spec.local_only);
  let input;
  if (type === 'boolean') input = h('input', { type: 'checkbox', role: 'switch' });
  else if (type === 'integer' || type === 'number') {
    input = h('input', { type: 'number', step: type === 'integer' ? 1 : 'any', inputMode: type === 'integer' ? 'numeric' : 'decimal' });
    if (spec && spec.minimum !== undefined) input.min = spec.minimum;
    if (spec && spec.maximum !== undefined) input.max = spec.maximum;
  } else if (type === 'string') input = h('input', { type: 'text', autocomplete: 'off', spellcheck: false, maxLength: spec?.maxLength });
  else if (type === 'choice') input = h('select', {}, spec.choices.map((c) => h('option', { value: String(c), text: choiceText(name, key, c) })));
  else input = h('textarea', { spellcheck: false, rows: 3 });
  input.disabled = local;
  // A switch is named for what it turns on (`enabled`: the subsystem itself), its state said beside it.
  const text = key === 'enabled' ? tOr(`subsystem.${name}`, keyText(name, key, 'label')) : keyText(name, key, 'label');
  const label = h('span.label', { text, title: key });
  const state = type === 'boolean' ? h('span.state') : null;
  const showState = () => { if (state) state.textContent = t(input.checked ? 'common.on' : 'common.off'); };
  const unit = spec && spec.unit ? h('span.unit', { text: t(`settings.unit.${spec.unit}`) }) : null;
  const help = keyText(name, key, 'help');
  const message = h('div.msg.field-msg');
  const notes = [help ? h('small.help', { text: help }) : null,
    local ? h('small.help.local', { text: t('settings.local_only') }) : null, message];
  const box = type === 'boolean'
    ? h('div.field.bool', {}, h('label.switch', {}, input, label, state), ...notes)
    : h('div.field', {}, h('label', {}, label, h('span.input-unit', {}, input, unit)), ...notes);
  box.dataset.key = key;
  const field = { key, type, input, box, message, original: value, dirty: false, pending: undefined, spec };
  field.set = (v) => {
    field.original = v;
    if (type === 'boolean') {
      input.checked = Boolean(v);
      showState();
    } else if (type === 'json') input.value = JSON.stringify(v, null, 1);
    else input.value = v === null || v === undefined ? '' : String(v);
  };
  field.read = () => {
    if (type === 'boolean') return input.checked;
    if (type === 'integer' || type === 'number') return input.value.trim() === '' ? null : Number(input.value);
    if (type === 'string') return input.value;
    if (type === 'choice') return spec.choices.find((c) => String(c) === input.value) ?? input.value; // 160, not "160"
    return JSON.parse(input.value);
  };
  const mark = () => {
    showState();
    field.dirty = true;
    field.pending = undefined;
    box.classList.add('dirty');
    onDirty();
  };
  input.addEventListener('input', mark);
  input.addEventListener('change', mark);
  field.set(value);
  return field;
}

function makeForm(path) {
  const message = h('div.msg');
  const fields = new Map();
  const body = h('div.fields');
  const more = h('div.fields');
  const advanced = h('details.advanced', {}, h('summary', { i18n: 'settings.advanced' }), more);
  const save = h('button.primary', { i18n: 'common.save', type: 'submit', disabled: true });
  const revert = h('button', { i18n: 'settings.revert', type: 'button', disabled: true });
  // The node is the one judge of a value (and says why it refuses it): no browser bubble first.
  const form = h('form', { noValidate: true, onSubmit: (e) => { e.preventDefault(); submit(path); } }, body, advanced, message, h('div.row', {}, save, revert));
  const title = h('span.grow');
  const summary = h('summary', {}, title, h('span.badge'));
  const details = h('details.cfg', { dataset: { config: path } }, summary, form);
  const entry = { details, fields, body, more, advanced, message, save, revert, summary, title, schema: null };
  const dirty = () => { save.disabled = false; revert.disabled = false; };
  revert.addEventListener('click', () => {
    for (const f of fields.values()) clean(f);
    entry.message.replaceChildren();
    refresh(path, entry);
  });
  entry.dirty = dirty;
  return entry;
}

function clean(field) {
  field.dirty = false;
  field.pending = undefined;
  field.box.classList.remove('dirty', 'invalid');
  field.message.replaceChildren();
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// A field the person is editing keeps their text; the others follow the node. A value sent is
// kept until the node's config echoes it (then the field is clean) or refuses it (then it says why).
function refresh(path, entry) {
  const config = node.get(path);
  const schema = schemas && schemas[path];
  const name = nameOf(path);
  if (schema !== entry.schema || entry.lang !== language()) {
    // The schema arrived, or the language changed: every field is drawn again.
    entry.schema = schema;
    entry.lang = language();
    entry.fields.clear();
    entry.body.replaceChildren();
    entry.more.replaceChildren();
  }
  entry.title.textContent = tOr(`subsystem.${name}`, name);
  const keys = schema ? Object.keys(schema.keys) : Object.keys(config);
  for (const key of keys) {
    const value = config[key];
    const spec = schema ? schema.keys[key] : null;
    let field = entry.fields.get(key);
    if (!field) {
      field = makeField(name, key, value, spec, entry.dirty);
      (isAdvanced(name, key, spec) ? entry.more : entry.body).append(field.box);
      entry.fields.set(key, field);
    } else if (field.dirty && field.pending !== undefined && same(value, field.pending)) {
      clean(field);
      field.set(value);
    } else if (!field.dirty) {
      field.set(value);
    } else {
      field.original = value;
    }
  }
  entry.advanced.hidden = !entry.more.children.length;
  const anyDirty = [...entry.fields.values()].some((f) => f.dirty);
  entry.save.disabled = !anyDirty;
  entry.revert.disabled = !anyDirty;
  const badge = entry.summary.querySelector('.badge');
  badge.hidden = config.enabled !== false;
  badge.textContent = t('settings.disabled');
}

// The node names the keys it refuses ("refresh_s: Input should be ...; step: ..."): each reason is
// shown at its field, what names no field under the form.
function refused(entry, error, sent) {
  const parts = String(error.error || '').split('; ');
  const rest = [];
  let placed = false;
  for (const part of parts) {
    const head = part.split(':')[0];
    const keys = head.split(',').map((k) => k.trim().split('.')[0]).filter((k) => k in sent && entry.fields.has(k));
    if (!keys.length) {
      rest.push(part);
      continue;
    }
    for (const key of keys) {
      const field = entry.fields.get(key);
      field.pending = undefined;
      field.box.classList.add('invalid');
      clear(field.message, errorBox('div.why-box', error.code, part.slice(head.length + 1).trim() || part));
      placed = true;
    }
  }
  for (const key of Object.keys(sent)) {
    const field = entry.fields.get(key);
    if (field) field.pending = undefined;
  }
  entry.save.disabled = false;
  entry.revert.disabled = false;
  if (!placed || rest.length) clear(entry.message, errorBox('div.why-box', error.code, rest.join('; ') || error.error));
}

function submit(path) {
  const entry = forms.get(path);
  const update = {};
  entry.message.replaceChildren();
  for (const field of entry.fields.values()) {
    if (!field.dirty) continue;
    field.message.replaceChildren();
    field.box.classList.remove('invalid');
    let value;
    try {
      value = field.read();
    } catch {
      field.box.classList.add('invalid');
      clear(field.message, h('span.why', { text: t('settings.bad_json', { key: keyText(nameOf(path), field.key, 'label') }) }));
      field.input.focus();
      return;
    }
    if (same(value, field.original)) clean(field);
    else {
      update[field.key] = value;
      field.pending = value;
    }
  }
  entry.save.disabled = true;
  entry.revert.disabled = true;
  if (!Object.keys(update).length) return;
  node.send(`${path}/set`, update, { onError: (error) => refused(entry, error, update) });
}

function update(paths) {
  if (!paths || paths.has('ui')) renderLanguages();
  if (!paths || paths.has('screen')) renderScreen();
  if (!paths || paths.has('knob') || paths.has('knob/config')) renderKnob();
  if (!paths || paths.has('source/spotify/config') || paths.has('source/spotify')) renderSpotify();
  const all = configPaths();
  if (all.length && !schemasLoading) loadSchemas();
  if (!all.length) {
    clear(el.configs, h('p.dim', { i18n: 'settings.none' }));
    forms.clear();
    return;
  }
  if (!forms.size) clear(el.configs);
  for (const path of all) {
    if (paths && !paths.has(path) && forms.has(path)) continue;
    let entry = forms.get(path);
    if (!entry) {
      entry = makeForm(path);
      forms.set(path, entry);
      const next = [...forms.keys()].sort().find((p) => p > path && forms.get(p).details.isConnected);
      el.configs.insertBefore(entry.details, next ? forms.get(next).details : null);
    }
    refresh(path, entry);
  }
  for (const [path, entry] of forms) {
    if (!all.includes(path)) {
      entry.details.remove();
      forms.delete(path);
    }
  }
}
