// Settings: the shared UI language, the screen and the knob, and a form for every subsystem's
// retained `<sub>/config`. Only the keys a person changed are sent, as a partial object; the node
// validates and answers.
import * as node from '../node.js';
import { h, clear, guardSlider } from '../dom.js';
import { t, LANGUAGES, language, setLanguage } from '../i18n.js';

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
      el.spotifyMsg.textContent = '';
      el.spotifySave.disabled = true;
      delete el.spotifyName.dataset.dirty;
      node.send('source/spotify/config/set', { device_name: el.spotifyName.value.trim() }, {
        onError: (error) => { el.spotifyMsg.textContent = error.error; },
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

function kind(value) {
  if (typeof value === 'boolean') return 'bool';
  if (typeof value === 'number') return 'number';
  if (typeof value === 'string') return 'text';
  return 'json';
}

function makeField(key, value, onDirty) {
  const type = kind(value);
  let input;
  if (type === 'bool') input = h('input', { type: 'checkbox' });
  else if (type === 'number') input = h('input', { type: 'number', step: 'any', inputMode: 'decimal' });
  else if (type === 'text') input = h('input', { type: 'text', autocomplete: 'off', spellcheck: false });
  else input = h('textarea', { spellcheck: false, rows: 3 });
  const label = h('span', { text: key });
  const box = type === 'bool' ? h('label.switch.field', {}, input, label) : h('label.field', {}, label, input);
  box.dataset.key = key;
  const field = { key, type, input, box, original: value, dirty: false };
  field.set = (v) => {
    field.original = v;
    if (type === 'bool') input.checked = Boolean(v);
    else if (type === 'json') input.value = JSON.stringify(v, null, 1);
    else input.value = v === null || v === undefined ? '' : String(v);
  };
  field.read = () => {
    if (type === 'bool') return input.checked;
    if (type === 'number') return input.value.trim() === '' ? null : Number(input.value);
    if (type === 'text') return input.value;
    return JSON.parse(input.value);
  };
  const mark = () => {
    field.dirty = true;
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
  const save = h('button.primary', { i18n: 'common.save', type: 'submit', disabled: true });
  const revert = h('button', { i18n: 'settings.revert', type: 'button', disabled: true });
  const form = h('form', { onSubmit: (e) => { e.preventDefault(); submit(path); } }, body, message, h('div.row', {}, save, revert));
  const summary = h('summary', {}, h('span.grow', { text: path.slice(0, -'/config'.length) }), h('span.badge'));
  const details = h('details.cfg', { dataset: { config: path } }, summary, form);
  const entry = { details, fields, body, message, save, revert, summary };
  const dirty = () => { save.disabled = false; revert.disabled = false; };
  revert.addEventListener('click', () => { for (const f of fields.values()) clean(f); refresh(path, entry); });
  entry.dirty = dirty;
  return entry;
}

function clean(field) {
  field.dirty = false;
  field.box.classList.remove('dirty');
}

// A field the person is editing keeps their text; the others follow the node.
function refresh(path, entry) {
  const config = node.get(path);
  for (const [key, value] of Object.entries(config)) {
    let field = entry.fields.get(key);
    if (!field || field.type !== kind(value) && kind(value) !== 'json') {
      field = makeField(key, value, entry.dirty);
      const old = entry.fields.get(key);
      if (old) old.box.replaceWith(field.box);
      else entry.body.append(field.box);
      entry.fields.set(key, field);
    } else if (!field.dirty) {
      field.set(value);
    } else {
      field.original = value;
    }
  }
  const anyDirty = [...entry.fields.values()].some((f) => f.dirty);
  entry.save.disabled = !anyDirty;
  entry.revert.disabled = !anyDirty;
  const badge = entry.summary.querySelector('.badge');
  badge.hidden = config.enabled !== false;
  badge.textContent = t('settings.disabled');
}

function submit(path) {
  const entry = forms.get(path);
  const update = {};
  entry.message.textContent = '';
  for (const field of entry.fields.values()) {
    if (!field.dirty) continue;
    let value;
    try {
      value = field.read();
    } catch {
      entry.message.textContent = t('settings.bad_json', { key: field.key });
      field.input.focus();
      return;
    }
    if (JSON.stringify(value) !== JSON.stringify(field.original)) update[field.key] = value;
  }
  for (const field of entry.fields.values()) clean(field);
  entry.save.disabled = true;
  entry.revert.disabled = true;
  if (!Object.keys(update).length) return;
  node.send(`${path}/set`, update, {
    onError: (error) => {
      entry.message.textContent = error.error;
      refresh(path, entry);
    },
  });
}

function update(paths) {
  if (!paths || paths.has('ui')) renderLanguages();
  if (!paths || paths.has('screen')) renderScreen();
  if (!paths || paths.has('knob') || paths.has('knob/config')) renderKnob();
  if (!paths || paths.has('source/spotify/config') || paths.has('source/spotify')) renderSpotify();
  const all = configPaths();
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
