// Multiroom: on/off (routing) and every Snapcast client with its volume, mute, name and latency.
import * as node from '../node.js';
import { h, icon, clear, guardSlider, notAvailable } from '../dom.js';
import { t } from '../i18n.js';

const el = {};
const rows = new Map(); // client id -> { guard, mute, latency }
let signature = '';
let renaming = null;

export default { id: 'multiroom', icon: 'multiroom', label: 'nav.multiroom', mount, update };

function mount(root) {
  el.missing = notAvailable('multiroom.not_available');
  el.enabled = h('input', { type: 'checkbox', id: 'mr-enabled', onChange: () => node.send('routing/set', { multiroom: el.enabled.checked }) });
  el.switch = h('label.switch', {}, el.enabled, h('span', { i18n: 'multiroom.enabled' }));
  el.clients = h('ul.list', { id: 'clients' });
  el.body = h('div', {}, el.switch, h('h2', { i18n: 'multiroom.clients' }), el.clients);
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
  const latency = h('input', { type: 'number', step: 10, min: -10000, max: 10000, inputMode: 'numeric', 'aria-label': t('multiroom.latency') });
  latency.addEventListener('change', () => clientSet(id, { latency: Number(latency.value) || 0 }));
  const nudge = (delta) => clientSet(id, { latency: (Number(current(id).latency) || 0) + delta });
  rows.set(id, { guard, mute, latency, pct });
  const title = renaming === id
    ? renameForm(client)
    : h('div.row', {},
      h('span.name.grow.ellipsis', { text: client.name || id }),
      client.connected === false ? h('span.off', { i18n: 'multiroom.disconnected' }) : null,
      h('button.icon', { label: 'multiroom.rename', onClick: () => { renaming = id; update(null, true); } }, icon('edit')));
  return h('li.client', { dataset: { id } },
    title,
    h('div.row', {}, mute, volume, pct),
    h('div.row', {}, h('span.dim.grow', { i18n: 'multiroom.latency' }),
      h('span.latency', {},
        h('button.icon', { label: 'multiroom.latency_down', onClick: () => nudge(-10) }, icon('minus')),
        latency,
        h('button.icon', { label: 'multiroom.latency_up', onClick: () => nudge(10) }, icon('plus')))));
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
  el.body.hidden = !present;
  if (!present) return;
  const routing = node.get('routing');
  el.enabled.checked = Boolean(routing && typeof routing === 'object' ? routing.multiroom : state.enabled);
  const list = clients(state);
  // Rows are rebuilt only when the clients themselves change, never for a volume: a slider being
  // dragged stays the same element.
  const shape = JSON.stringify([list.map((c) => [c.id, c.name, c.connected]), renaming, document.documentElement.lang]);
  if (force || !paths || shape !== signature) {
    signature = shape;
    rows.clear();
    clear(el.clients, list.length ? list.map(row) : h('li.dim', { i18n: 'multiroom.no_clients' }));
  }
  for (const client of list) {
    const r = rows.get(String(client.id));
    if (!r) continue;
    r.guard.set(client.volume ?? 0);
    r.mute.replaceChildren(icon(client.muted ? 'muted' : 'volume'));
    r.mute.setAttribute('aria-pressed', String(Boolean(client.muted)));
    if (document.activeElement !== r.latency) r.latency.value = client.latency ?? 0;
  }
}
