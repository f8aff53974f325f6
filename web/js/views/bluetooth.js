// Bluetooth: how phones see the node, the pairing window, the connected phones, the paired devices
// (forget), and, whatever view is shown, the dialog that answers a pending pairing request.
import * as node from '../node.js';
import { h, clear, notAvailable } from '../dom.js';
import { t } from '../i18n.js';

const TOPIC = 'source/bluetooth';
const SET = `${TOPIC}/set`;
const el = {};
let signature = '';
let ticker = null;

export default { id: 'bluetooth', icon: 'bluetooth', label: 'source.bluetooth', mount, update };

function mount(root) {
  // The dock's shared icon set has no Bluetooth rune: this view draws its own.
  document.querySelector('[data-view=bluetooth] path')?.setAttribute('d', 'M11 2h1.2l5.6 5.3-4.5 4.7 4.5 4.7L12.2 22H11v-7.6l-4 4.1-1.4-1.4 5.1-5.1-5.1-5.1L7 5.5l4 4.1zm2 4.3v3.6l1.9-1.8zm0 7.8v3.6l1.9-1.8z');
  el.missing = notAvailable();
  el.status = h('p.dim', { id: 'bt-status' });
  el.window = h('div.row', { id: 'bt-window' });
  el.phones = h('ul.list', { id: 'bt-phones' });
  el.paired = h('ul.list', { id: 'bt-paired' });
  el.body = h('div', {}, el.status, el.window, h('h2', { i18n: 'state.connected' }), el.phones, h('h2', { i18n: 'bt.paired' }), el.paired);
  root.append(el.missing, el.body);
  el.answer = (accept) => node.send(SET, { accept });
  el.question = h('p', { id: 'bt-question' });
  el.code = h('p.dim');
  el.dialog = h('div.sheet', { id: 'bt-dialog', role: 'alertdialog', hidden: true },
    h('div.box', {}, el.question, el.code, h('div.row', {},
      h('button.primary.grow', { id: 'bt-accept', i18n: 'bt.accept', onClick: () => el.answer(true) }),
      h('button.grow', { id: 'bt-refuse', i18n: 'bt.refuse', onClick: () => el.answer(false) }))));
  document.body.append(el.dialog);
  node.onChange((paths) => { if (!paths.size || paths.has(TOPIC)) dialog(); });
}

function state() {
  const s = node.get(TOPIC);
  return s && typeof s === 'object' ? s : null;
}

function dialog() {
  const pending = state()?.pending_pairing;
  el.dialog.hidden = !pending;
  if (!pending) return;
  el.question.textContent = t('bt.pair_question', { name: pending.name || pending.address });
  el.code.textContent = pending.passkey ? t('bt.passkey', { code: pending.passkey }) : '';
}

function remaining(until) {
  const s = Math.max(0, Math.round((until - Date.now()) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function update() {
  const s = state();
  el.missing.hidden = Boolean(s);
  el.body.hidden = !s;
  dialog();
  if (!s) return;
  el.status.textContent = s.state === 'unavailable'
    ? `${t('state.unavailable')}: ${s.error || ''}`
    : t('bt.visible_as', { name: s.alias || '' }) + (s.discoverable ? '' : ` · ${t('bt.hidden')}`);
  renderWindow(s);
  const shape = JSON.stringify([s.devices, s.paired, document.documentElement.lang]);
  if (shape === signature) return;
  signature = shape;
  clear(el.phones, (s.devices || []).length ? s.devices.map((d) => h('li', { dataset: { address: d.address } },
    h('div.grow', {}, h('div.ellipsis', { text: d.name }),
      h('div.dim', { text: [t(`state.${d.state}`), d.codec, d.volume != null && `${d.volume} %`].filter(Boolean).join(' · ') })),
    h('button', { i18n: 'bt.disconnect', onClick: () => node.send(SET, { disconnect: d.address }) })))
    : h('li.dim', { i18n: 'bt.no_phone' }));
  clear(el.paired, (s.paired || []).map((d) => h('li', { dataset: { address: d.address } },
    h('div.grow', {}, h('div.ellipsis', { text: d.name }), h('div.dim', { text: d.address })),
    h('button.danger', {
      i18n: 'bt.forget',
      onClick: () => { if (confirm(t('bt.forget_confirm', { name: d.name }))) node.send(SET, { forget: d.address }); },
    }))));
}

// The window's button (none when the node is always pairable), and its countdown while it is open;
// rebuilt only when it changes, so it is never replaced under a finger.
function renderWindow(s) {
  const open = Boolean(s.pairable_until);
  const shown = s.state !== 'unavailable' && (open || !s.discoverable);
  const shape = JSON.stringify([shown, open, document.documentElement.lang]);
  if (shape !== el.windowShape) {
    el.windowShape = shape;
    el.until = h('span.grow.dim', { id: 'bt-until' });
    clear(el.window, shown && [el.until, h(`button${open ? '' : '.primary'}`, {
      id: 'bt-pairable',
      i18n: open ? 'bt.close' : 'bt.open',
      onClick: () => node.send(SET, open ? { pairable: 0 } : 'pairable'),
    })]);
  }
  clearInterval(ticker);
  ticker = null;
  el.until.textContent = '';
  if (!open) return;
  const tick = () => { el.until.textContent = t('bt.pairable_for', { time: remaining(s.pairable_until) }); };
  tick();
  ticker = setInterval(tick, 1000);
}
