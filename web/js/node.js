// The page's side of the link to the node (the MQTT client itself is js/link.js, a classic script).
// It keeps the node's retained state topics, sends commands, matches `<base>/error` to this page's
// own commands, and runs request/response calls. Views read `state` and are told what changed.

const COMMAND_MEMORY_MS = 20000;
const REQUEST_TIMEOUT_MS = 15000;

export const state = new Map(); // path under the base ("volume", "source/radio", ...) -> JSON or text
// `settled`: the node's retained state has arrived whole since the last (re)subscription.
export const link = { status: 'connecting', nodeId: null, base: null, settled: false, readOnly: false, refused: 0 };

const listeners = new Set();
const refusedListeners = new Set();
const errorListeners = new Set();
const recent = []; // this page's commands: { topic, payload, at, onError }
const pending = new Map(); // request id -> { resolve, timer }
let worker = null;
let replyTo = '';
let changed = new Set();
let flushScheduled = false;
let sequence = 0;

// fn(changedPaths: Set<string>) after each batch of messages; an empty set means "link changed".
export function onChange(fn) {
  listeners.add(fn);
}

// fn(error, command) for every `<base>/error` answering one of this page's commands.
export function onError(fn) {
  errorListeners.add(fn);
}

// A subsystem that does not run keeps its state topic, holding only why: {"status", "reason"}.
function isAbsent(value) {
  return Boolean(value) && typeof value === 'object' && Object.keys(value).length === 2
    && typeof value.status === 'string' && typeof value.reason === 'string';
}

export function get(path) {
  const value = state.get(path);
  return isAbsent(value) ? undefined : value;
}

// Why `path` has no state: {status, reason} while its subsystem is unavailable, disabled, crashed.
export function absent(path) {
  const value = state.get(path);
  return isAbsent(value) ? value : null;
}

// fn(code) when the broker refuses this page's connection: 4 wrong login, 5 a login is needed.
export function onRefused(fn) {
  refusedListeners.add(fn);
}

// Connect again with this login (null: anonymously).
export function login(user, password) {
  link.refused = 0;
  link.status = 'connecting';
  if (worker) worker.postMessage({ type: 'auth', user, password });
}

// index.html starts the link before any module runs; what it said meanwhile waits in the channel.
export function connect() {
  performance.mark('milo-connect');
  worker = self.miloLink;
  worker.onmessage = (event) => receive(event.data);
}

function receive(message) {
  switch (message.type) {
    case 'hello':
      replyTo = message.replyTo;
      break;
    case 'refused': // the broker wants a (another) login: js/login.js asks for it
      link.refused = message.code;
      link.status = 'offline';
      for (const fn of refusedListeners) fn(message.code);
      schedule();
      break;
    case 'link':
      if (message.status === 'connected') {
        performance.mark('milo-connected');
        link.refused = 0;
      }
      link.status = message.status;
      schedule();
      break;
    case 'node':
      performance.mark('milo-node-chosen');
      link.nodeId = message.nodeId;
      link.base = `milo/${message.nodeId}`;
      link.settled = false;
      break;
    case 'clear':
      state.clear();
      link.settled = false;
      break;
    case 'settled':
      link.settled = true;
      for (const path of state.keys()) changed.add(path);
      schedule();
      break;
    case 'state':
      if (message.value === undefined) state.delete(message.path);
      else state.set(message.path, message.value);
      changed.add(message.path);
      schedule();
      break;
    case 'error':
      onNodeError(message.error);
      break;
    case 'reply':
      onReply(message.reply);
      break;
    default:
  }
}

// Many messages arrive in one burst (a subscription's retained state): views render once for it.
function schedule() {
  if (flushScheduled) return;
  flushScheduled = true;
  setTimeout(() => {
    flushScheduled = false;
    if (link.base && !link.settled) return; // the burst is not over: render it whole, later
    const paths = changed;
    changed = new Set();
    for (const fn of listeners) fn(paths);
  }, 0);
}

function encode(payload) {
  return typeof payload === 'string' ? payload : JSON.stringify(payload);
}

function remember(command) {
  const now = Date.now();
  while (recent.length && (now - recent[0].at > COMMAND_MEMORY_MS || recent.length > 200)) recent.shift();
  recent.push(command);
}

// Send a command to `<base>/<path>`; false when there is no node to send it to.
export function send(path, payload, { onError: callback } = {}) {
  if (!worker || link.status !== 'connected' || !link.base || link.readOnly) return false;
  const text = encode(payload);
  remember({ topic: `${link.base}/${path}`, payload: text, at: Date.now(), onError: callback });
  worker.postMessage({ type: 'publish', path, payload: text });
  return true;
}

// The error echoes the payload cut to 512 characters: compare what both have.
function concerns(error, command) {
  if (error.topic !== command.topic) return false;
  const echoed = typeof error.payload === 'string' ? error.payload : '';
  if (echoed === command.payload) return true;
  return echoed.length >= 500 && command.payload.startsWith(echoed.slice(0, 400));
}

function onNodeError(error) {
  if (!error || typeof error !== 'object') return;
  for (let i = recent.length - 1; i >= 0; i--) {
    const command = recent[i];
    if (Date.now() - command.at > COMMAND_MEMORY_MS) break;
    if (!concerns(error, command)) continue;
    recent.splice(i, 1);
    if (command.onError) command.onError(error);
    for (const fn of errorListeners) fn(error, command);
    return;
  }
}

// Request/response (`radio/search`): resolves with the reply {id, ok, result, error, code}.
export function request(path, body) {
  return new Promise((resolve) => {
    const id = `${++sequence}`;
    const timer = setTimeout(() => {
      pending.delete(id);
      resolve({ id, ok: false, code: 'timeout', error: `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` });
    }, REQUEST_TIMEOUT_MS);
    pending.set(id, { resolve, timer });
    const sent = send(path, { ...body, reply_to: replyTo, id }, {
      onError: (error) => settle(id, { id, ok: false, code: error.code, error: error.error }),
    });
    if (!sent) settle(id, { id, ok: false, code: 'offline', error: '' });
  });
}

function settle(id, reply) {
  const entry = pending.get(id);
  if (!entry) return;
  pending.delete(id);
  clearTimeout(entry.timer);
  entry.resolve(reply);
}

function onReply(reply) {
  if (reply && typeof reply === 'object' && reply.id !== undefined) settle(String(reply.id), reply);
}
