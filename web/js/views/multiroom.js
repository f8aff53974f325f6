// Multiroom: on/off (routing), the Snapcast server and its preset, every client with its volume, mute,
// name and latency. The state is the multiroom subsystem's (see schemas/multiroom.state.json).
import * as node from '../node.js';
import { h, icon, clear, guardSlider, notAvailable } from '../dom.js';
import { t, tOr } from '../i18n.js';

const PRESETS = ['low_latency', 'balanced', 'quality'];

const el = {};
const rows = new Map(); // client id -> { guard, mute, latency }
let signature = '';
let renaming = null;
let presetsSignature = '';

export default { id: 'multiroom', icon: 'multiroom', label: 'nav.multiroom', mount, update };

function mount(root) {
  el.missing = notAvailable('multiroom.not_available');
  el.enabled = h('input', { type: 'checkbox', id: 'mr-enabled', role: 'switch', onChange: () => node.send('routing/set', { multiroom: el.enabled.checked }) });
  el.enabledState = h('span.state', { id: 'mr-enabled-state' });
  el.switch = h('label.switch', {}, el.enabled, h('span', { i18n: 'multiroom.enabled' }), el.enabledState);
  el.clients = h('ul.list', { id: 'clients' });
  el.status = h('span.dim', { id: 'mr-server' });
  el.presets = h('div.chips', { id: 'mr-presets', role: 'group', label: 'multiroom.preset' });
  el.settings = h('p.dim', { id: 'mr-settings' });
  el.playing = h('p', { id: 'mr-playing' });
  el.server = h('section', { id: 'mr-server-box' },
    h('div.row', {}, h('h2.grow', { i18n: 'multiroom.server' }), el.status),
    h('p.dim', { i18n: 'multiroom.preset' }), el.presets, el.settings, el.playing);
  el.body = h('div', {}, el.switch, h('h2', { i18n: 'multiroom.clients' }), el.clients, el.server);
  root.append(el.missing, el.body);
}

// The state may list clients as an array or as an object keyed by id; both read the same.
function clients(state) {
  const raw = state.clients || [];
  const list = Array.isArray(raw) ? raw : Object.entries(raw).map(([id, c]) => ({ id, ...c }));
  return list.filter((c) => c && c.id !== undefined);
}

function clientSet(id, payload) {
  node.send(`multiroom/client/${id}/set`, payload);
}

function row(client) {
  const id = String(client.id);
  const volume = h('input.grow', { type: 'range', min: 0, max: 100, step: 1, 'aria-label': client.name || id });
  const pct = h('span.pct');
  const guard = guardSlider(volume, {
    send: (v) => clientSet(id, { volume: v }),
    show: (v) => { pct.textContent = String(v); },
  });
  const mute = h('button.icon', { label: 'vol.mute', onClick: () => clientSet(id, { muted: !current(id).muted }) }, icon('volume'));
  const buffer = Number(node.get('multiroom')?.settings?.buffer_ms) || 10000;
  const latency = h('input', { type: 'number', step: 10, min: 0, max: buffer, inputMode: 'numeric', 'aria-label': t('multiroom.latency') });
  latency.addEventListener('change', () => clientSet(id, { latency: Number(latency.value) || 0 }));
  const nudge = (delta) => clientSet(id, { latency: (Number(current(id).latency) || 0) + delta });
  rows.set(id, { guard, mute, latency, pct });
  const title = renaming === id
    ? renameForm(client)
    : h('div.row', {},
      h('span.name.grow.ellipsis', { text: client.name || id }),
      client.local ? h('span.badge', { i18n: 'multiroom.this_node' }) : null,
      client.connected === false ? h('span.off', { i18n: 'multiroom.disconnected' }) : null,
      client.connected === false && !client.local
        ? h('button.forget', { i18n: 'multiroom.forget', onClick: () => clientSet(id, { forget: true }) })
        : null,
      h('button.icon', { label: 'multiroom.rename', onClick: () => { renaming = id; update(null, true); } }, icon('edit')));
  const about = client.host || client.version
    ? h('div.row.dim.about', { text: t('multiroom.client_info', { host: client.host || id, version: client.version || '?' }) })
    : null;
  return h('li.client', { dataset: { id } },
    title,
    about,
    h('div.row', {}, mute, volume, pct),
    h('div.row', {}, h('span.dim.grow', { i18n: 'multiroom.latency' }),
      h('span.latency', {},
        h('button.icon', { label: 'multiroom.latency_down', onClick: () => nudge(-10) }, icon('minus')),
        latency,
        h('button.icon', { label: 'multiroom.latency_up', onClick: () => nudge(10) }, icon('plus')))));
}

// An empty list says what would be there and how to get it: multiroom off, or on with nobody yet.
function empty(on) {
  const [title, hint] = on ? ['multiroom.no_clients', 'multiroom.no_clients_hint'] : ['multiroom.off', 'multiroom.off_hint'];
  return h('li.empty', { id: 'mr-empty', dataset: { on: String(on) } }, h('span', { i18n: title }), h('span.hint', { i18n: hint }));
}

function renameForm(client) {
  const input = h('input.grow', { type: 'text', value: client.name || '', maxLength: 100, ph: 'multiroom.name' });
  const done = () => { renaming = null; update(null, true); };
  const form = h('form.row', {
    onSubmit: (e) => {
      e.preventDefault();
      const name = input.value.trim();
      if (name && name !== client.name) clientSet(client.id, { name });
      done();
    },
  }, input, h('button.primary', { type: 'submit', i18n: 'common.save' }), h('button', { type: 'button', i18n: 'common.cancel', onClick: done }));
  setTimeout(() => input.focus(), 0);
  return form;
}

function current(id) {
  const state = node.get('multiroom');
  return (state && typeof state === 'object' ? clients(state) : []).find((c) => String(c.id) === id) || {};
}

function update(paths, force = false) {
  const state = node.get('multiroom');
  const present = state && typeof state === 'object';
  el.missing.hidden = present;
  el.missing.explain(node.absent('multiroom'));
  el.body.hidden = !present;
  if (!present) return;
  const routing = node.get('routing');
  el.enabled.checked = Boolean(routing && typeof routing === 'object' ? routing.multiroom : state.enabled);
  el.enabledState.textContent = t(el.enabled.checked ? 'common.on' : 'common.off');
  const list = clients(state);
  // Rows are rebuilt only when the clients themselves change, never for a volume: a slider being
  // dragged stays the same element.
  const shape = JSON.stringify([list.map((c) => [c.id, c.name, c.connected, c.local, c.host, c.version]),
    state.settings?.buffer_ms, renaming, document.documentElement.lang, el.enabled.checked]);
  if (force || !paths || shape !== signature) {
    signature = shape;
    rows.clear();
    clear(el.clients, list.length ? list.map(row) : empty(el.enabled.checked));
  }
  for (const client of list) {
    const r = rows.get(String(client.id));
    if (!r) continue;
    r.guard.set(client.volume ?? 0);
    r.mute.replaceChildren(icon(client.muted ? 'muted' : 'volume'));
    r.mute.setAttribute('aria-pressed', String(Boolean(client.muted)));
    if (document.activeElement !== r.latency) r.latency.value = client.latency ?? 0;
  }
  server(state);
}

// The server's own part: it is there only when a multiroom subsystem publishes (not a hand-made state).
function server(state) {
  const settings = state.settings;
  el.server.hidden = !settings;
  if (!settings) return;
  const status = state.server || 'starting';
  el.status.textContent = [tOr(`multiroom.server_state.${status}`, status), state.version].filter(Boolean).join(' · ');
  el.status.dataset.status = status;
  const names = Object.keys(state.presets || {}).length ? Object.keys(state.presets) : PRESETS;
  const signature = JSON.stringify([names, settings.preset, document.documentElement.lang]);
  if (signature !== presetsSignature) {
    presetsSignature = signature;
    clear(el.presets, names.map((name) => h('button', {
      dataset: { preset: name },
      'aria-pressed': String(settings.preset === name),
      onClick: () => node.send('multiroom/set', { preset: name }),
    }, tOr(`multiroom.preset.${name}`, name))));
    if (settings.preset === 'custom') el.presets.append(h('button', { 'aria-pressed': 'true', disabled: true, i18n: 'multiroom.preset.custom' }));
  }
  el.settings.textContent = t('multiroom.settings', { buffer: settings.buffer_ms, codec: settings.codec, chunk: settings.chunk_ms });
  el.playing.hidden = !state.stream;
  if (state.stream) el.playing.textContent = t('multiroom.playing', { stream: tOr(`source.${state.stream}`, state.stream) });
}
