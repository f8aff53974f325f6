// Equalizer: on/off (routing), presets, ten band sliders, user presets saved and deleted.
import * as node from '../node.js';
import { h, icon, clear, guardSlider, notAvailable } from '../dom.js';
import { t, tOr } from '../i18n.js';

const BANDS = ['31', '63', '125', '250', '500', '1k', '2k', '4k', '8k', '16k'];
const el = {};
const sliders = new Map(); // band -> { guard, input, value }
let presetsSignature = '';

export default { id: 'equalizer', icon: 'equalizer', label: 'nav.equalizer', mount, update };

function mount(root) {
  el.missing = notAvailable();
  el.enabled = h('input', { type: 'checkbox', id: 'eq-enabled', role: 'switch', onChange: () => node.send('routing/set', { equalizer: el.enabled.checked }) });
  // The label names what the switch is; its state (on, off) is said apart, as the node has it.
  el.enabledState = h('span.state', { id: 'eq-enabled-state' });
  el.switch = h('label.switch', {}, el.enabled, h('span', { i18n: 'eq.enabled' }), el.enabledState);
  el.presets = h('div.chips', { id: 'eq-presets', role: 'group', label: 'eq.presets' });
  el.bands = h('div.bands', { id: 'eq-bands' }, BANDS.map(band));
  el.name = h('input', { type: 'text', name: 'preset', ph: 'eq.preset_name', maxLength: 40, class: 'grow' });
  el.save = h('button', { i18n: 'eq.save', onClick: savePreset });
  el.delete = h('button.icon.danger', { label: 'eq.delete', onClick: deletePreset }, icon('trash'));
  el.body = h('div', {}, el.switch, el.presets, el.bands, h('div.row', {}, el.name, el.save, el.delete));
  root.append(el.missing, el.body);
}

function band(key) {
  const input = h('input.v', { type: 'range', min: -12, max: 12, step: 0.5, dataset: { band: key }, 'aria-label': `${key} Hz` });
  const value = h('span.db');
  const guard = guardSlider(input, {
    send: (gain_db) => node.send('equalizer/set', { band: key, gain_db }),
    show: (db) => { value.textContent = db > 0 ? `+${db}` : String(db); },
  });
  sliders.set(key, { guard, input, value });
  return h('div.band', {}, value, input, h('span', { text: key }));
}

function update() {
  const eq = node.get('equalizer');
  const present = eq && typeof eq === 'object';
  el.missing.hidden = present;
  el.missing.explain(node.absent('equalizer'));
  el.body.hidden = !present;
  if (!present) return;
  const routing = node.get('routing');
  el.switch.hidden = !(routing && typeof routing === 'object');
  if (routing && typeof routing === 'object') {
    el.enabled.checked = Boolean(routing.equalizer);
    el.enabledState.textContent = t(routing.equalizer ? 'common.on' : 'common.off');
  }
  for (const [key, slider] of sliders) {
    slider.input.min = eq.min_db ?? -12;
    slider.input.max = eq.max_db ?? 12;
    if (eq.bands && key in eq.bands) slider.guard.set(eq.bands[key]);
  }
  const signature = JSON.stringify([eq.presets, eq.preset, eq.user_presets, document.documentElement.lang]);
  if (signature !== presetsSignature) {
    presetsSignature = signature;
    const user = new Set(eq.user_presets || []);
    clear(el.presets, (eq.presets || []).map((name) => h('button', {
      dataset: { preset: name },
      'aria-pressed': String(eq.preset === name),
      onClick: () => node.send('equalizer/set', { preset: name }),
    }, user.has(name) ? name : tOr(`eq.preset.${name}`, name))));
    if (eq.preset === null || eq.preset === undefined) el.presets.append(h('button', { 'aria-pressed': 'true', disabled: true, i18n: 'eq.custom' }));
  }
  el.delete.disabled = !(eq.user_presets || []).includes(eq.preset);
}

function savePreset() {
  const name = el.name.value.trim();
  if (!name) return el.name.focus();
  if (node.send('equalizer/set', { save_preset: name })) el.name.value = '';
}

// Two taps, not a dialog: a kiosk browser may have dialogs turned off.
let armed = null;
function deletePreset() {
  const eq = node.get('equalizer');
  if (!eq || !eq.preset) return;
  if (armed !== eq.preset) {
    armed = eq.preset;
    el.delete.replaceChildren(t('eq.delete_confirm', { name: eq.preset }));
    setTimeout(disarm, 3000);
    return;
  }
  disarm();
  node.send('equalizer/set', { delete_preset: eq.preset });
}

function disarm() {
  armed = null;
  el.delete.replaceChildren(icon('trash'));
}
