// Logging in, when the node asks this browser for it (README, Security). The login is remembered in
// this browser's localStorage, handed to the MQTT link and sent with uploads (HTTP Basic). A `read`
// role, logged in or anonymous, shows the state with every control disabled.
import * as node from './node.js';
import { h, toast } from './dom.js';
import { t } from './i18n.js';

const KEY = 'milo.login'; // index.html reads it too, to connect before this module loads
export const session = { role: null, user: null };
let overlay = null;

export function saved() {
  try {
    const login = JSON.parse(localStorage.getItem(KEY) || 'null');
    return login && typeof login.user === 'string' && typeof login.password === 'string' ? login : null;
  } catch {
    return null;
  }
}

function basic(login) {
  const bytes = new TextEncoder().encode(`${login.user}:${login.password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

// Headers for the node's HTTP API (logo uploads): the remembered login, if any.
export function authHeaders() {
  const login = saved();
  return login ? { Authorization: basic(login) } : {};
}

// {ok, role, code}: what the node lets this browser do with `login` (null: anonymously).
async function whoami(login) {
  const response = await fetch('/api/auth', { headers: login ? { Authorization: basic(login) } : {}, cache: 'no-store' });
  const body = await response.json().catch(() => ({}));
  return { ok: response.ok, role: body.role || null, code: body.code || '' };
}

function apply(role, user) {
  session.role = role;
  session.user = user;
  const readOnly = role === 'read';
  node.link.readOnly = readOnly;
  document.body.classList.toggle('read-only', readOnly);
  const button = document.getElementById('login-btn');
  button.hidden = !user && !readOnly;
  const key = user ? 'login.logout' : 'login.open';
  button.dataset.i18n = key;
  button.textContent = user ? t(key, { user }) : t(key);
  button.title = readOnly ? t('login.read_only') : '';
  let badge = document.getElementById('read-only-badge');
  if (readOnly && !badge) {
    badge = h('span.read-only-badge', { id: 'read-only-badge', i18n: 'login.read_only' });
    button.before(badge);
  } else if (!readOnly && badge) {
    badge.remove();
  }
}

function close() {
  if (overlay) overlay.remove();
  overlay = null;
}

// The form; `message` (a key) says why it is shown; `anonymous` is the role without a login, if any.
function ask(message, anonymous) {
  close();
  const user = h('input', { type: 'text', name: 'user', autocomplete: 'username', ph: 'login.user', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', ph: 'login.password' });
  const said = h('p.login-message', message ? { i18n: message } : {});
  const submit = h('button.primary', { type: 'submit', i18n: 'login.submit' });
  const form = h('form.login-form', {
    onSubmit: async (event) => {
      event.preventDefault();
      submit.disabled = true;
      const login = { user: user.value.trim(), password: password.value };
      try {
        const me = await whoami(login);
        if (!me.ok) {
          said.dataset.i18n = 'login.wrong';
          said.textContent = t('login.wrong');
          password.select();
          return;
        }
        localStorage.setItem(KEY, JSON.stringify(login));
        close();
        apply(me.role, login.user);
        node.login(login.user, login.password);
      } catch (error) {
        toast(t('login.failed'), String(error));
      } finally {
        submit.disabled = false;
      }
    },
  },
  h('h2', { i18n: 'login.title' }),
  said,
  h('label', {}, h('span', { i18n: 'login.user' }), user),
  h('label', {}, h('span', { i18n: 'login.password' }), password),
  h('div.row', {},
    anonymous ? h('button', { type: 'button', i18n: 'login.continue_read', onClick: close }) : null,
    h('span.grow'),
    submit));
  overlay = h('div.login', { id: 'login', role: 'dialog', 'aria-modal': 'true' }, form);
  document.body.append(overlay);
  user.focus();
}

function logout() {
  localStorage.removeItem(KEY);
  node.login(null, null);
  check().catch((e) => console.warn(e));
}

// What the node lets this browser do, and the form when it needs a login.
export async function check() {
  const login = saved();
  let me;
  try {
    me = await whoami(login);
  } catch {
    return; // no answer: the link shows the node offline, and says so when it refuses
  }
  if (me.ok) {
    apply(me.role, login ? login.user : null);
    return;
  }
  if (login) localStorage.removeItem(KEY);
  const anonymous = login ? await whoami(null).catch(() => null) : null;
  apply(anonymous && anonymous.ok ? anonymous.role : null, null);
  ask(login ? 'login.wrong' : 'login.required', anonymous && anonymous.ok ? anonymous.role : null);
}

export function install() {
  document.getElementById('login-btn').addEventListener('click', () => {
    if (session.user) logout();
    else ask(null, session.role);
  });
  node.onRefused((code) => {
    if (!overlay) ask(code === 4 ? 'login.wrong' : 'login.required', null);
  });
  check().catch((e) => console.warn(e));
}
