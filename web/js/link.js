// The MQTT link: a classic script index.html runs before the page's modules, so it connects while
// they are still loading; it finds the node, keeps to its topics and hands the page decoded messages
// through a MessageChannel (js/node.js talks to it as to a worker); the page sends commands the same
// way. The client is Eclipse Paho's (MQTT 3.1.1 over WebSocket, 32 KB, loaded just before): the page
// needs nothing more, and mqtt.js's 340 KB cost ~150 ms of parsing before the first connect.
// It runs on the page's thread, not in a Worker: Chromium fetched and started the worker's script
// only around the page's load event (250-400 ms in on bench/ui.py), most of the wait for the state.
// One function around it all (left unindented): its names stay out of the page's globals.
(() => {
const page = self.miloLinkPort; // self is the page's window

// With several nodes on one broker and none serving this page's port, wait this long for all
// retained `info` messages before taking the first node that showed up.
const DISCOVERY_GRACE_MS = 1200;

const params = new URLSearchParams(self.location.search); // ?node=<id>
// The node that served this page, named in index.html by its HTTP server ('' from elsewhere).
const served = document.querySelector('meta[name="milo-node"]')?.content || '';
const id = `milo-ui-${Math.random().toString(36).slice(2, 10)}`;
const replyTo = `milo-ui/${id}/reply`;
const syncTopic = `milo-ui/${id}/sync`;
const nodes = new Map(); // node id -> { info, status } as discovered
let client = null;
let base = null;
let anyNode = false;
// What the page says to log in with (index.html sends it first thing; the page after a login).
let credentials = null;

const post = (message) => page.postMessage(message);
// Paho sends a string as UTF-8 and bytes as they are; the page hands over either.
const encode = (payload) => (typeof payload === 'string' ? payload : new Uint8Array(payload));

function decode(payload) {
  const text = new TextDecoder().decode(payload);
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// The broker's CONNACK refusals (4: bad user name or password, 5: not authorized), which paho
// reports as its error 6 with the code in the text: no retry, the page asks for a login.
const REFUSED = 6;
function refusal(response) {
  if (!response || response.errorCode !== REFUSED) return null;
  const found = /code:\s*(\d+)/.exec(response.errorMessage || '');
  return found ? Number(found[1]) : 5;
}

function connect() {
  post({ type: 'hello', replyTo });
  const scheme = self.location.protocol === 'https:' ? 'wss' : 'ws';
  const mine = new self.Paho.Client(`${scheme}://${self.location.host}/mqtt`, id);
  client = mine;
  // A client replaced by a new login must say nothing more.
  const current = (fn) => (...args) => { if (client === mine) fn(...args); };
  client.onMessageArrived = current((m) => onMessage(m.destinationName, m.payloadBytes));
  client.onConnectionLost = current((response) => {
    const code = refusal(response);
    post(code ? { type: 'refused', code } : { type: 'link', status: 'offline' });
  });
  // Paho reconnects by itself (reconnect: true) and calls onConnected after every (re)connection.
  client.onConnected = current(() => onConnect());
  open(mine);
}

function open(mine) {
  if (client !== mine) return;
  const login = credentials ? { userName: credentials.user, password: credentials.password } : {};
  mine.connect({
    mqttVersion: 4,
    cleanSession: true,
    keepAliveInterval: 30,
    timeout: 5,
    reconnect: true,
    ...login,
    // The first connection is not retried by paho itself: try again, a second apart.
    onFailure: (response) => {
      if (client !== mine) return;
      const code = refusal(response);
      if (code) return post({ type: 'refused', code });
      post({ type: 'link', status: 'offline' });
      setTimeout(() => open(mine), 1000);
    },
  });
}

// A new login: a new connection with it (the old one, if any, is dropped).
function login(user, password) {
  credentials = user ? { user, password: password || '' } : null;
  const old = client;
  client = null;
  if (old) {
    try { old.disconnect(); } catch { /* it was not connected */ }
  }
  connect();
}

// Paho refuses an option whose value is undefined: onSuccess only where something waits on it.
function subscribe(filter, done) {
  client.subscribe(filter, done ? { qos: 0, onSuccess: done } : { qos: 0 });
}

function onConnect() {
  post({ type: 'link', status: 'connected' });
  // One SUBSCRIBE for the three (paho takes a list): one packet for the broker to handle, not three.
  subscribe(['milo/+/status', 'milo/+/info', replyTo]);
  if (base) {
    // Topics deleted while the link was down must go: the state is rebuilt from the retained messages.
    post({ type: 'clear' });
    subscribeState();
  } else if (served && !params.get('node')) {
    // Its state is asked for in the same flight as discovery, not after its `info` came back.
    choose(served);
  } else {
    setTimeout(() => { anyNode = true; pickFallback(); }, DISCOVERY_GRACE_MS);
  }
}

// Brokers (amqtt, mosquitto at QoS 0) send a subscription's retained messages before they answer
// the next SUBSCRIBE: that answer says the node's whole state is here, so the page's first render
// is complete and no view shows "not available" for a subsystem whose state was still on its way.
function subscribeState() {
  subscribe(`${base}/#`);
  subscribe(syncTopic, () => post({ type: 'settled' }));
}

function onMessage(topic, payload) {
  if (topic === replyTo) return post({ type: 'reply', reply: decode(payload) });
  const parts = topic.split('/');
  if (parts[0] !== 'milo' || parts.length < 3) return;
  const nodeId = parts[1];
  const path = parts.slice(2).join('/');
  const value = decode(payload);
  if (path === 'info' || path === 'status') discover(nodeId, path, value);
  if (!base || topic.slice(0, base.length + 1) !== `${base}/`) return;
  if (path === 'error') return post({ type: 'error', error: value });
  // Other clients' commands and requests travel under the base too; they are not state.
  const last = parts[parts.length - 1];
  if (last === 'set' || last === 'get') return;
  if (value && typeof value === 'object' && 'reply_to' in value) return;
  post({ type: 'state', path, value });
}

// Which node this page shows: ?node=<id>, else the one that served it (index.html names it), else
// the one whose info says it serves this HTTP port.
function discover(nodeId, path, value) {
  const entry = nodes.get(nodeId) || {};
  entry[path] = value;
  nodes.set(nodeId, entry);
  if (base) return;
  const wanted = params.get('node');
  if (wanted) {
    if (nodeId === wanted) choose(nodeId);
    return;
  }
  const port = Number(self.location.port || (self.location.protocol === 'https:' ? 443 : 80));
  if (entry.info && typeof entry.info === 'object' && entry.info.http_port === port) choose(nodeId);
  else if (anyNode) pickFallback();
}

function pickFallback() {
  if (base || params.get('node')) return;
  const known = [...nodes.entries()].filter(([, n]) => n.info || n.status);
  const online = known.filter(([, n]) => n.status === 'online');
  const pick = (online[0] || known[0] || [])[0];
  if (pick) choose(pick);
}

function choose(nodeId) {
  base = `milo/${nodeId}`;
  post({ type: 'node', nodeId });
  const seen = nodes.get(nodeId) || {};
  for (const path of ['status', 'info']) {
    if (seen[path] !== undefined) post({ type: 'state', path, value: seen[path] });
  }
  subscribeState();
}

page.onmessage = (event) => {
  const message = event.data;
  if (message.type === 'publish' && client && client.isConnected() && base) {
    client.publish(`${base}/${message.path}`, encode(message.payload), 1, false);
  } else if (message.type === 'auth') {
    login(message.user, message.password);
  }
};

// The login this browser remembers (js/login.js), if any: the first connection uses it. The page
// sends another ({type: 'auth'}) after a login form.
try {
  const saved = JSON.parse(localStorage.getItem('milo.login') || 'null');
  if (saved && typeof saved.user === 'string' && typeof saved.password === 'string') {
    credentials = { user: saved.user, password: saved.password };
  }
} catch { /* none remembered */ }
connect();
})();
