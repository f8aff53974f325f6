// Small DOM helpers shared by the views: element building, icons, logos, toasts and touch controls.
import { t, tOr } from './i18n.js';

// h('button.icon.primary', { onClick, label: 'np.play' }, child, ...): props starting with `on` are
// listeners; `i18n`, `label` and `ph` are translation keys (kept as data-* for language changes).
export function h(spec, props, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = tag === 'svg' ? document.createElementNS(SVG, 'svg') : document.createElement(tag || 'div');
  if (classes.length) el.classList.add(...classes);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'i18n') {
      el.dataset.i18n = value;
      el.textContent = t(value);
    } else if (key === 'label') {
      el.dataset.i18nLabel = value;
      el.setAttribute('aria-label', t(value));
      el.title = t(value);
    } else if (key === 'ph') {
      el.dataset.i18nPh = value;
      el.placeholder = t(value);
    } else if (key === 'text') {
      el.textContent = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key in el && !key.includes('-')) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
// Drawn for this UI on a 24x24 grid; one path each, holes by the even-odd rule.
const ICONS = {
  play: 'M8 5v14l11-7z',
  pause: 'M6 5h4v14H6zM14 5h4v14h-4z',
  stop: 'M6 6h12v12H6z',
  next: 'M5 6l8.5 6L5 18zM15 6h2.5v12H15z',
  previous: 'M19 6l-8.5 6L19 18zM6.5 6H9v12H6.5z',
  minus: 'M5 11h14v2H5z',
  plus: 'M11 5h2v6h6v2h-6v6h-2v-6H5v-2h6z',
  volume: 'M4 9h4l5-4v14l-5-4H4zM15.5 8.5a5 5 0 0 1 0 7l-1.4-1.4a3 3 0 0 0 0-4.2z',
  muted: 'M4 9h4l5-4v14l-5-4H4zM15 9.4l1.4-1.4 2.1 2.1 2.1-2.1 1.4 1.4-2.1 2.1 2.1 2.1-1.4 1.4-2.1-2.1-2.1 2.1-1.4-1.4 2.1-2.1z',
  star: 'M12 3l2.7 5.6 6.1.9-4.4 4.3 1 6.1L12 17l-5.4 2.9 1-6.1-4.4-4.3 6.1-.9z',
  trash: 'M9 3h6l1 2h4v2H4V5h4zM6 9h12l-1 12H7z',
  up: 'M12 5l7 7-1.4 1.4-4.6-4.6V20h-2V8.8l-4.6 4.6L5 12z',
  edit: 'M4 17.2V20h2.8l8.3-8.3-2.8-2.8zM17.7 9l1.8-1.8a1 1 0 0 0 0-1.4l-1.3-1.3a1 1 0 0 0-1.4 0L15 6.3z',
  playing: 'M10 4h9v4h-7v9a3 3 0 1 1-2-2.8z',
  radio: 'M4 8h16a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V9a1 1 0 0 1 1-1zM5.6 4.3l11.4 3.3-.6 1.4L5 5.7zM8 11a3 3 0 1 0 0 6 3 3 0 0 0 0-6zM14 12h4v1.6h-4zM14 15h4v1.6h-4z',
  equalizer: 'M5 3h2v18H5zM11 3h2v18h-2zM17 3h2v18h-2zM3 13h6v3H3zM9 7h6v3H9zM15 15h6v3h-6z',
  multiroom: 'M3 4h8v16H3zM7 13a2.5 2.5 0 1 0 0 5 2.5 2.5 0 0 0 0-5zM7 6a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zM13 4h8v16h-8zM17 13a2.5 2.5 0 1 0 0 5 2.5 2.5 0 0 0 0-5zM17 6a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z',
  settings: 'M10.5 2h3l.5 2.6 2 .9 2.2-1.5 2.1 2.1-1.5 2.2.9 2 2.6.5v3l-2.6.5-.9 2 1.5 2.2-2.1 2.1-2.2-1.5-2 .9-.5 2.6h-3l-.5-2.6-2-.9-2.2 1.5-2.1-2.1 1.5-2.2-.9-2L2 13.5v-3l2.6-.5.9-2L4 5.8l2.1-2.1 2.2 1.5 2-.9zM12 8.5a3.5 3.5 0 1 0 0 7 3.5 3.5 0 0 0 0-7z',
  info: 'M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zM11 10h2v8h-2zM11 6h2v2h-2z',
  search: 'M10 3a7 7 0 0 1 5.6 11.2l5.1 5.1-1.4 1.4-5.1-5.1A7 7 0 1 1 10 3zM10 5a5 5 0 1 0 0 10 5 5 0 0 0 0-10z',
  refresh: 'M12 4a8 8 0 0 1 7.4 5H22l-3.5 4L15 9h2.2A6 6 0 1 0 18 14h2.1A8 8 0 1 1 12 4z',
  upload: 'M11 16V7.8L7.4 11.4 6 10l6-6 6 6-1.4 1.4L13 7.8V16zM5 18h14v2H5z',
  close: 'M6.4 5L12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6l5.6-5.6L5 6.4z',
};

export function icon(name) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'i');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', ICONS[name] || ICONS.info);
  path.setAttribute('fill-rule', 'evenodd');
  svg.append(path);
  return svg;
}

// Images only from http(s) or the node itself: a station's data is not trusted to pick a scheme.
export function safeImage(url) {
  return typeof url === 'string' && /^(https?:\/\/|\/(?!\/))/i.test(url) ? url : '';
}

function initial(name) {
  const first = Array.from((name || '?').trim())[0] || '?';
  return first.toLocaleUpperCase();
}

// A logo with the name's initial underneath: the image replaces it only once it has loaded, so a
// node without internet (or a dead logo URL) shows a tidy initial rather than a broken image.
export function logo(url, name, spec = 'span.logo') {
  const box = h(spec, { text: initial(name) });
  const src = safeImage(url);
  if (src) {
    const img = new Image();
    img.alt = '';
    img.decoding = 'async';
    img.referrerPolicy = 'no-referrer';
    img.onload = () => box.replaceChildren(img);
    img.src = src;
  }
  return box;
}

// What the page says about an error is decided by its code; the node's English words are detail.
export function errorTitle(code, fallback = 'error.other') {
  return tOr(`error.${code}`, t(fallback, { code }), { code });
}

// The node's own text, smaller and apart, for whoever wants to know more (or reports a bug).
export function errorDetail(detail) {
  return detail ? h('small.detail', { text: detail, title: t('error.detail') }) : null;
}

// A translated title and, under it, the node's detail: where a form shows why it was refused.
export function errorBox(spec, code, detail, fallback) {
  return h(spec, { dataset: { code } }, h('span.why', { text: errorTitle(code, fallback) }), errorDetail(detail));
}

const MAX_TOASTS = 3;
export function toast(title, detail = '', kind = 'error', ms = 7000) {
  const box = document.getElementById('toasts');
  const el = h(`div.toast.${kind}`, { role: kind === 'error' ? 'alert' : 'status' }, h('b', { text: title }), errorDetail(detail));
  box.append(el);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  el.addEventListener('click', () => el.remove());
  setTimeout(() => el.remove(), ms);
  return el;
}

// What a view shows without its subsystem: its sentence and, when the node says why (the
// {status, reason} its state topic holds meanwhile), what that means and what to do, in the page's
// language, with the node's reason as detail. `explain(record)` follows that record.
export function notAvailable(key = 'common.not_available', spec = 'div') {
  const why = h('p.why');
  const todo = h('p.todo');
  const detail = h('small.detail');
  const box = h(`${spec}.missing`, {}, h('p.notice', { i18n: key }), h('div.why-box', {}, why, todo, detail));
  box.explain = (record) => {
    const status = record ? record.status : '';
    box.dataset.status = status;
    why.textContent = status ? tOr(`absent.${status}`, '') : '';
    todo.textContent = status ? tOr(`absent.${status}_todo`, '') : '';
    // "disabled" is all the node says of a switched-off part: the translation has said it already.
    detail.textContent = record && record.reason !== status ? record.reason : '';
  };
  return box;
}

// A slider that state updates cannot yank from under a finger. While it is held (and until the
// node echoes the final value, or `settle` ms pass) incoming values are kept aside; commands go
// out at most every `interval` ms, and the value let go at always goes out last.
export function guardSlider(input, { send, show = () => {}, interval = 100, settle = 1500 }) {
  let held = false; // incoming values are kept aside
  let pressed = false; // a pointer is down on it
  let moved = false; // its value changed since the last final send
  let latest = null;
  let sent = null;
  let sentAt = 0;
  let timer = null;
  let releaseTimer = null;
  let awaiting = null;

  const apply = (value) => {
    input.value = value;
    show(Number(input.value));
  };
  const flush = () => {
    clearTimeout(timer);
    timer = null;
    const value = Number(input.value);
    if (value === sent) return;
    sent = value;
    sentAt = Date.now();
    send(value);
  };
  const finish = () => {
    clearTimeout(releaseTimer);
    held = false;
    awaiting = null;
    if (latest !== null) apply(latest);
  };
  // After a drag the final value goes out again even if it went out already: another screen may
  // have changed the value while the finger was down, and the person who let go expects theirs.
  const letGo = (again) => {
    if (!moved) return finish();
    moved = false;
    if (again) sent = null;
    flush();
    awaiting = sent;
    clearTimeout(releaseTimer);
    releaseTimer = setTimeout(finish, settle);
  };

  input.addEventListener('pointerdown', () => {
    pressed = true;
    held = true;
    clearTimeout(releaseTimer);
  });
  input.addEventListener('input', () => {
    held = true;
    moved = true;
    clearTimeout(releaseTimer);
    show(Number(input.value));
    const wait = interval - (Date.now() - sentAt);
    if (wait <= 0) flush();
    else if (!timer) timer = setTimeout(flush, wait);
  });
  const up = () => {
    if (!pressed) return;
    pressed = false;
    letGo(true);
  };
  input.addEventListener('pointerup', up);
  input.addEventListener('pointercancel', up);
  input.addEventListener('lostpointercapture', up);
  // A keyboard (or a test driver's fill) changes it without a pointer; after a drag, `change`
  // comes once pointerup has already let go, and finds nothing moved.
  input.addEventListener('change', () => {
    if (!pressed && moved) letGo(false);
  });

  return {
    set(value) {
      latest = value;
      if (!held) {
        sent = value;
        apply(value);
      } else if (!pressed && awaiting !== null && value === awaiting) {
        finish();
      }
    },
    get busy() {
      return held;
    },
  };
}

// Press and hold repeats (a volume button held down); a tap is one step. Keyboard activation
// arrives as a click with detail 0 and is one step too.
export function holdRepeat(button, action, { delay = 450, every = 160 } = {}) {
  let first = null;
  let repeat = null;
  const stop = () => {
    clearTimeout(first);
    clearInterval(repeat);
    first = repeat = null;
  };
  button.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    stop();
    action();
    first = setTimeout(() => { repeat = setInterval(action, every); }, delay);
  });
  for (const name of ['pointerup', 'pointercancel', 'pointerleave']) button.addEventListener(name, stop);
  button.addEventListener('click', (event) => {
    if (event.detail === 0) action();
  });
  button.addEventListener('contextmenu', (event) => event.preventDefault());
  return button;
}

export function formatTime(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '';
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}
