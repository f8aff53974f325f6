// Start-up: language, the MQTT link, the dock of views, and the one render loop they share.
import * as node from './node.js';
import { install as installLogin } from './login.js';
import { h, icon, toast, clear, errorTitle } from './dom.js';
import { t, setLanguage, remembered, onLanguage } from './i18n.js';
import playing from './views/playing.js';
import radio from './views/radio.js';
import equalizer from './views/equalizer.js';
import multiroom from './views/multiroom.js';
import bluetooth from './views/bluetooth.js';
import info from './views/info.js';

// Settings (the largest view, with its forms drawn from web/schemas.json) is fetched when first shown:
// a first load stays within its 60 KB (tests/ui/test_size.py) and is not slowed by it.
const settings = lazy({ id: 'settings', icon: 'settings', label: 'nav.settings' }, () => import('./views/settings.js'));
const VIEWS = [playing, radio, bluetooth, equalizer, multiroom, settings, info];

// A view whose module is imported the first time it is shown; until then it holds its place.
function lazy(meta, load) {
  let real = null;
  let root = null;
  let loading = null;
  const ready = () => {
    loading ??= load().then((module) => {
      real = module.default;
      real.mount(root);
      real.update(null);
      root.dataset.loaded = '1';
      return real;
    });
    return loading;
  };
  return {
    ...meta,
    lazy: true,
    mount(into) { root = into; },
    update(paths) { if (real) real.update(paths); else ready(); },
    show() { ready().then((view) => view.show?.()); },
    hide() { real?.hide?.(); },
  };
}
const params = new URLSearchParams(location.search);
const views = new Map(); // id -> { view, section, live, button, stale }
let currentId = null;
let firstState = false;

function build() {
  const main = document.getElementById('views');
  const dock = document.getElementById('dock');
  // Shown while no command can reach the node; the views' controls are disabled meanwhile.
  main.append(h('div.banner', { id: 'banner', role: 'alert', hidden: true }, h('span', { id: 'banner-text' })));
  for (const view of VIEWS) {
    // Each view's controls sit in a fieldset: disabling it disables them all, whatever the view
    // itself disabled stays so, and nothing clicked while the link is down is lost in silence.
    const live = h('fieldset.controls');
    const section = h('section.view', { id: `view-${view.id}`, hidden: true }, live);
    const button = h('button', {
      dataset: { view: view.id },
      onClick: () => { location.hash = view.id; },
    }, icon(view.icon), h('span', { i18n: view.label }));
    main.append(section);
    dock.append(button);
    view.mount(live);
    if (!view.lazy) live.dataset.loaded = '1'; // what a test waits for before it looks at a view
    views.set(view.id, { view, section, live, button, stale: true });
  }
}

function show(id) {
  const entry = views.get(id) || views.get(VIEWS[0].id);
  if (currentId === entry.view.id) return;
  const previous = views.get(currentId);
  if (previous) {
    previous.section.hidden = true;
    previous.button.removeAttribute('aria-current');
    previous.view.hide?.();
  }
  currentId = entry.view.id;
  entry.section.hidden = false;
  entry.button.setAttribute('aria-current', 'page');
  if (entry.stale) {
    entry.stale = false;
    entry.view.update(null);
  }
  entry.view.show?.();
  markFirstState();
}

// Only the visible view renders on every message; the others catch up (in full) when shown.
function render(paths) {
  for (const [id, entry] of views) {
    if (id === currentId) entry.view.update(paths.size ? paths : null);
    else entry.stale = true;
  }
  header();
  if (paths.size) markFirstState();
}

// For bench/ui.py and the tests: the first frame that shows the node's state, not a placeholder.
function markFirstState() {
  if (firstState || !currentId || !node.link.base || node.state.size === 0) return;
  firstState = true;
  document.body.dataset.ready = '1';
  performance.mark('milo-first-state');
}

function header() {
  const conn = document.getElementById('conn');
  const info = node.get('info');
  const offline = node.get('status') === 'offline';
  const status = node.link.status === 'connected' && (offline || !node.link.base) ? 'connecting' : node.link.status;
  conn.dataset.state = offline ? 'offline' : status;
  const text = document.getElementById('conn-text');
  const key = offline ? 'conn.node_offline' : node.link.base || status !== 'connected' ? `conn.${status}` : 'conn.searching';
  text.dataset.i18n = key;
  text.textContent = t(key);
  const name = info && typeof info === 'object' ? info.host || info.node_id : node.link.nodeId;
  document.getElementById('node-name').textContent = name ? `Milo · ${name}` : 'Milo';
  document.title = name ? `Milo · ${name}` : 'Milo';
  banner(offline);
}

// The link lost (or the node gone): say so, and take the controls away until the state is back.
// The first connection is not a loss: the page shows nothing to click before the state arrives.
function banner(offline) {
  const lost = node.link.status === 'offline' && firstState;
  const down = lost || offline;
  const box = document.getElementById('banner');
  box.hidden = !down;
  document.body.classList.toggle('link-down', down);
  if (down) document.body.style.setProperty('--banner-h', `${box.offsetHeight}px`);
  const text = document.getElementById('banner-text');
  text.dataset.i18n = offline && !lost ? 'conn.banner_node_offline' : 'conn.banner_offline';
  text.textContent = t(text.dataset.i18n);
  for (const entry of views.values()) entry.live.disabled = down;
}

// Every error the node returns for this page's commands is shown: what its code means, in the
// page's language, and under it (smaller) the node's own words.
function showError(error) {
  const title = error.code === 'forbidden' ? t('login.forbidden') : errorTitle(error.code);
  toast(title, error.error || '');
}

function followLanguage(paths) {
  if (paths && !paths.has('ui')) return;
  const ui = node.get('ui');
  if (ui && typeof ui === 'object' && ui.language) setLanguage(ui.language).catch((e) => console.warn(e));
}

async function start() {
  // First: the link's first connect overlaps the rest of start-up.
  node.connect();
  build();
  installLogin();
  // The language this screen used last paints the first frame; the node's `ui` topic then rules.
  const language = setLanguage(remembered()).catch((e) => console.warn(e));
  node.onChange(render);
  node.onChange(followLanguage);
  node.onError(showError);
  onLanguage(() => {
    for (const [id, entry] of views) {
      if (id === currentId) entry.view.update(null);
      else entry.stale = true;
    }
    header();
  });
  await language;
  show(location.hash.slice(1));
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));
  if (params.get('kiosk') === '1') {
    document.body.classList.add('kiosk');
    const [{ installKeyboard }, { installActivity }] = await Promise.all([import('./keyboard.js'), import('./kiosk.js')]);
    installKeyboard();
    installActivity();
  }
}

start().catch((error) => {
  clear(document.getElementById('views'), h('p.notice', { text: String(error) }));
});
