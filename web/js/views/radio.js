// Radio: favorites, search of the station directory (name, country, genre), custom stations with
// logo upload, and the stations marked broken.
import * as node from '../node.js';
import { h, icon, clear, logo, notAvailable, toast, errorTitle, errorDetail } from '../dom.js';
import { t } from '../i18n.js';
import { authHeaders } from '../login.js';

const TABS = ['favorites', 'search', 'custom', 'broken'];
const PAGE = 30;
const el = {};
let tab = 'favorites';
let results = [];
let searchState = { busy: false, total: null, offset: 0, source: '', error: null, done: false, query: null };
let searchSequence = 0;
let editing = null; // the custom station being edited, or null when adding
let saving = false; // the form is kept until the node's list echoes the save (or refuses it)

export default { id: 'radio', icon: 'radio', label: 'nav.radio', mount, update };

function mount(root) {
  el.root = root;
  el.missing = notAvailable();
  el.tabs = h('div.tabs', { role: 'tablist' }, TABS.map((name) => h('button', {
    role: 'tab',
    dataset: { tab: name },
    i18n: `radio.tab.${name}`,
    onClick: () => { tab = name; update(null); },
  })));
  el.panels = {};
  el.panels.favorites = h('div', {}, el.favorites = h('ul.list', { id: 'favorites' }));
  el.panels.search = searchPanel();
  el.panels.custom = customPanel();
  el.panels.broken = h('div', {},
    h('div.row', {}, h('span.grow.dim', { i18n: 'radio.broken_help' }),
      el.resetAll = h('button', { i18n: 'radio.reset_all', onClick: () => node.send('radio/broken/set', 'all') })),
    el.broken = h('ul.list', { id: 'broken' }));
  // The directory as the radio last heard from it (`radio/index`): said before anyone searches.
  el.directory = h('div.directory-down', { id: 'directory-down', role: 'status', hidden: true });
  root.append(el.missing, el.directory, el.tabs, ...Object.values(el.panels));
}

function searchPanel() {
  el.query = h('input', { type: 'search', name: 'query', ph: 'radio.search_name', enterKeyHint: 'search' });
  el.country = h('input', { type: 'text', name: 'country', ph: 'radio.search_country', maxLength: 2, autocapitalize: 'characters' });
  el.tag = h('input.genre', { type: 'text', name: 'tag', ph: 'radio.search_genre' });
  const form = h('form.search-form', { id: 'search', onSubmit: (e) => { e.preventDefault(); search(0); } },
    el.query, el.country, el.tag, h('button.icon.primary', { type: 'submit', label: 'radio.search' }, icon('search')));
  el.searchStatus = h('div.status-line', { id: 'search-status' });
  el.results = h('ul.list', { id: 'results' });
  el.more = h('button', { i18n: 'radio.more', hidden: true, onClick: () => search(searchState.offset + results.length) });
  return h('div', {}, form, el.searchStatus, el.results, h('div.row', {}, el.more));
}

function field(name, key, { full, ...props } = {}) {
  const input = h('input', { type: 'text', name, ...props });
  el.form[name] = input;
  return h(`label.f${full ? '.full' : ''}`, {}, h('span', { i18n: key }), input);
}

function customPanel() {
  el.form = {};
  el.logoPreview = h('span.logo', { text: '?' });
  el.logoFile = h('input', { type: 'file', accept: 'image/png,image/jpeg,image/gif,image/webp', onChange: upload });
  const pick = h('button', { type: 'button', onClick: () => el.logoFile.click() }, icon('upload'), ' ', h('span', { i18n: 'radio.logo_upload' }));
  const clearLogo = h('button.icon', { type: 'button', label: 'radio.logo_clear', onClick: () => setLogo('') }, icon('close'));
  el.formTitle = h('b.full', { i18n: 'radio.custom_add' });
  el.submit = h('button.primary', { type: 'submit', i18n: 'radio.custom_save' });
  el.cancel = h('button', { type: 'button', i18n: 'common.cancel', hidden: true, onClick: () => edit(null) });
  el.form.logo = h('input', { type: 'hidden', name: 'logo' });
  const form = h('form.form', { id: 'custom-form', onSubmit: saveCustom },
    el.formTitle,
    field('name', 'radio.field_name', { required: true, maxLength: 200, full: true }),
    field('url', 'radio.field_url', { type: 'url', required: true, full: true, placeholder: 'https://' }),
    field('country', 'radio.field_country', { maxLength: 2 }),
    field('genre', 'radio.field_genre'),
    h('div.logo-pick.full', {}, el.logoPreview, pick, clearLogo, el.logoFile, el.form.logo),
    h('div.row.full', {}, el.submit, el.cancel));
  // `type=url` would refuse ftp:// in the browser; the node is the one judge of what plays.
  el.form.url.type = 'text';
  el.form.url.inputMode = 'url';
  el.custom = h('ul.list', { id: 'custom' });
  return h('div', {}, form, el.custom);
}

function stationRow(station, { favorites, current, custom, index }) {
  const meta = [station.country, station.genre, station.bitrate ? `${station.bitrate} kbps` : ''].filter(Boolean).join(' · ');
  const isFavorite = favorites.has(station.id);
  const row = h('li', { dataset: { id: station.id }, class: current === station.id ? 'current' : '' },
    h('button.station-main', { onClick: () => node.send('source/radio/set', { play: station.id }), label: 'radio.play' },
      logo(station.logo, station.name),
      h('span.txt', {}, h('span.ellipsis', { text: station.name }), h('span.dim.ellipsis', { text: meta }))),
    h('button.icon.fav', {
      'aria-pressed': String(isFavorite),
      label: isFavorite ? 'radio.unfavorite' : 'radio.favorite',
      onClick: () => node.send('radio/favorites/set', isFavorite ? { remove: station.id } : { add: station.id }),
    }, icon('star')));
  if (index > 0) {
    row.append(h('button.icon', { label: 'radio.move_up', onClick: () => node.send('radio/favorites/set', { move: station.id, to: index - 1 }) }, icon('up')));
  }
  if (custom) {
    row.append(
      h('button.icon', { label: 'radio.edit', onClick: () => edit(station) }, icon('edit')),
      h('button.icon.danger', { label: 'radio.delete', onClick: () => node.send('radio/custom/set', { remove: station.id }) }, icon('trash')));
  }
  return row;
}

function list(path) {
  const value = node.get(path);
  return value && typeof value === 'object' ? value.stations : undefined;
}

function update(paths) {
  const radio = node.get('source/radio');
  const present = radio && typeof radio === 'object';
  el.missing.hidden = present;
  el.missing.explain(node.absent('source/radio'));
  el.tabs.hidden = !present;
  for (const [name, panel] of Object.entries(el.panels)) panel.hidden = !present || name !== tab;
  if (!present) return;
  for (const button of el.tabs.children) button.setAttribute('aria-selected', String(button.dataset.tab === tab));
  for (const button of el.tabs.children) button.setAttribute('aria-pressed', String(button.dataset.tab === tab));
  const favorites = list('radio/favorites') || [];
  const context = { favorites: new Set(favorites.map((s) => s.id)), current: radio.station ? radio.station.id : null };
  const touched = (...names) => !paths || names.some((n) => paths.has(n));
  if (touched('radio/favorites', 'source/radio')) {
    clear(el.favorites, favorites.length
      ? favorites.map((s, index) => stationRow(s, { ...context, custom: s.custom, index }))
      : h('li.empty', {}, h('span.grow', { i18n: 'radio.no_favorites' }),
        h('button', { i18n: 'radio.go_search', dataset: { go: 'search' }, onClick: () => { tab = 'search'; update(null); } })));
  }
  if (touched('radio/favorites', 'source/radio')) renderResults(context);
  if (saving && paths && paths.has('radio/custom')) {
    saving = false;
    edit(null);
  }
  if (touched('radio/custom', 'radio/favorites', 'source/radio')) {
    const custom = list('radio/custom') || [];
    clear(el.custom, custom.length
      ? custom.map((s) => stationRow(s, { ...context, custom: true }))
      : h('li.empty', {}, h('span', { i18n: 'radio.no_custom' }), h('span.hint', { i18n: 'radio.no_custom_hint' })));
  }
  if (touched('radio/broken')) renderBroken();
  if (touched('radio/index')) renderDirectory();
  if (!paths) renderSearchStatus();
}

function renderDirectory() {
  const index = node.get('radio/index');
  const down = Boolean(index && typeof index === 'object' && index.directory === 'unreachable');
  el.directory.hidden = !down;
  if (!down) return;
  const meanwhile = index.stations
    ? t('radio.directory_down_index', { n: index.stations })
    : t('radio.directory_down_no_index');
  clear(el.directory, h('b', { i18n: 'radio.directory_down' }), h('span.hint', { text: meanwhile }), errorDetail(index.directory_error));
}

function renderResults(context) {
  clear(el.results, results.map((s) => stationRow(s, { ...context, custom: s.custom })));
  el.more.hidden = !results.length || searchState.done || searchState.busy;
}

function renderSearchStatus() {
  const s = searchState;
  let text = '';
  if (s.busy) text = t('radio.searching');
  else if (s.error) {
    clear(el.searchStatus, h('span.why', { text: errorTitle(s.error.code) }), errorDetail(s.error.detail));
    return;
  }
  else if (s.query && !results.length) {
    clear(el.searchStatus, h('span', { text: t('radio.no_results') }), h('span.hint', { text: t('radio.no_results_hint') }));
    return;
  } else if (!s.query) text = t('radio.search_hint');
  else if (results.length) {
    const partial = s.total !== null && s.total !== undefined && s.total > results.length;
    text = partial ? t('radio.results_total', { n: results.length, total: s.total }) : t('radio.results', { n: results.length });
    if (s.source === 'index') text += ` · ${t('radio.from_index')}`;
  }
  el.searchStatus.textContent = text;
}

async function search(offset) {
  const query = { query: el.query.value.trim(), country: el.country.value.trim().toUpperCase(), tag: el.tag.value.trim() };
  const sequence = ++searchSequence;
  searchState = { ...searchState, busy: true, error: null, query };
  if (offset === 0) results = [];
  renderSearchStatus();
  el.more.hidden = true;
  const reply = await node.request('radio/search', { ...query, limit: PAGE, offset });
  if (sequence !== searchSequence) return; // a newer search was started meanwhile
  searchState = { ...searchState, busy: false, offset };
  if (reply.ok) {
    const found = reply.result.stations || [];
    results = offset === 0 ? found : [...results, ...found];
    searchState.total = reply.result.total;
    searchState.source = reply.result.source;
    searchState.done = found.length < PAGE;
  } else {
    searchState.error = { code: reply.code, detail: reply.error || '' };
    searchState.done = true;
  }
  update(new Set(['radio/favorites']));
  renderSearchStatus();
}

function renderBroken() {
  const broken = node.get('radio/broken');
  const entries = broken && typeof broken === 'object' ? Object.entries(broken.stations || {}) : [];
  el.resetAll.disabled = !entries.length;
  clear(el.broken, entries.length ? entries.map(([id, b]) => h('li', { dataset: { id } },
    logo('', b.name),
    h('span.grow', {}, h('div.ellipsis', { text: b.name }), h('div.dim', { text: `${b.reason} · ${new Date(b.at * 1000).toLocaleString()}` })),
    h('button', { i18n: 'radio.reset', onClick: () => node.send('radio/broken/set', { reset: id }) }),
  )) : h('li.dim', { i18n: 'radio.no_broken' }));
}

function setLogo(url) {
  el.form.logo.value = url;
  const preview = logo(url, el.form.name.value || '?');
  el.logoPreview.replaceWith(preview);
  el.logoPreview = preview;
}

// The node shrinks, strips and stores the image; the station keeps the /logos/<hash>.png it answers.
async function upload() {
  const file = el.logoFile.files[0];
  el.logoFile.value = '';
  if (!file) return;
  try {
    const response = await fetch('/api/logos', { method: 'POST', body: file, headers: { 'Content-Type': file.type || 'application/octet-stream', ...authHeaders() } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw Object.assign(new Error(body.error || `HTTP ${response.status}`), { code: body.code });
    setLogo(body.url);
  } catch (error) {
    toast(errorTitle(error.code, 'error.upload'), error.message);
  }
}

function edit(station) {
  editing = station;
  const s = station || {};
  for (const name of ['name', 'url', 'country', 'genre']) el.form[name].value = s[name] || '';
  setLogo(s.logo || '');
  el.formTitle.dataset.i18n = station ? 'radio.custom_edit' : 'radio.custom_add';
  el.formTitle.textContent = t(el.formTitle.dataset.i18n);
  el.cancel.hidden = !station;
  if (station) el.form.name.focus();
}

function saveCustom(event) {
  event.preventDefault();
  const fields = {};
  for (const name of ['name', 'url', 'country', 'genre', 'logo']) fields[name] = el.form[name].value.trim();
  const command = editing ? { update: { id: editing.id, ...fields } } : { add: fields };
  saving = node.send('radio/custom/set', command, { onError: () => { saving = false; } });
}
