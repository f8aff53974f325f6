// Now playing: the source switcher, what plays (cover, title, progress), the transport buttons the
// active source supports now, and the volume.
import * as node from '../node.js';
import { h, icon, clear, logo, guardSlider, holdRepeat, formatTime, notAvailable } from '../dom.js';
import { t, tOr } from '../i18n.js';

const el = {};
let volume = null;
let ticker = null;
let visible = false;
let signatures = {};
// The node's clock as this screen's: Date.now() minus position_at on live player messages is the
// clocks' difference plus the message's delay, so the lowest of the recent ones is the difference.
const SKEW_SAMPLES = 8;
const skews = [];
let lastAt = null;
let primed = false;
// A seek shows at once, before the source answers (until it does, or for SEEK_HOLD_MS).
const SEEK_HOLD_MS = 3000;
const SEEK_STEP_MS = 10000;
let seeking = null; // { ms, at, from }

export default { id: 'playing', icon: 'playing', label: 'nav.playing', mount, update, show, hide };

function mount(root) {
  el.sources = h('div.chips', { role: 'group', label: 'np.sources', id: 'sources' });
  el.cover = h('div.cover');
  el.title = h('div.title.ellipsis', { id: 'np-title' });
  el.artist = h('div.artist.ellipsis', { id: 'np-artist' });
  el.album = h('div.dim.ellipsis');
  el.state = h('div.dim', { id: 'np-state' });
  el.error = h('div.err');
  el.pos = h('span', { id: 'np-pos' });
  el.fill = h('i');
  el.bar = h('div.bar', { id: 'np-bar', role: 'slider', label: 'np.seek', onClick: seek, onKeydown: seekKey }, h('div', {}, el.fill));
  el.dur = h('span', { id: 'np-dur' });
  el.progress = h('div.progress', {}, el.pos, el.bar, el.dur);
  el.transport = h('div.transport', { id: 'transport' });
  root.append(
    el.sources,
    h('div.np', {}, el.cover, h('div.meta', {}, el.title, el.artist, el.album, el.state, el.progress, el.error, el.transport)),
    ...volumeRow(),
  );
}

function volumeRow() {
  const range = h('input', { type: 'range', min: 0, max: 100, step: 1, id: 'volume', label: 'vol.volume', class: 'grow' });
  el.pct = h('span.pct', { id: 'volume-pct' });
  el.mute = h('button.icon', { id: 'mute', label: 'vol.mute', onClick: () => node.send('volume/set', 'toggle_mute') }, icon('volume'));
  volume = guardSlider(range, {
    send: (percent) => node.send('volume/set', { percent }),
    show: (percent) => { el.pct.textContent = String(percent); },
  });
  const down = holdRepeat(h('button.icon', { id: 'vol-down', label: 'vol.down' }, icon('minus')), () => node.send('volume/set', 'down'));
  const up = holdRepeat(h('button.icon', { id: 'vol-up', label: 'vol.up' }, icon('plus')), () => node.send('volume/set', 'up'));
  el.volumeBox = h('div.vol', { id: 'volume-row' }, el.mute, down, range, up, el.pct);
  el.noVolume = notAvailable('vol.not_available');
  el.noVolume.id = 'no-volume';
  el.noVolume.hidden = true;
  return [el.volumeBox, el.noVolume];
}

// The player aggregates the sources; a node without it still shows (and drives) its radio.
function current() {
  const player = node.get('player');
  if (player && typeof player === 'object') return { ...player, target: 'player/set' };
  const radio = node.get('source/radio');
  if (radio && typeof radio === 'object') return { ...radio, active: 'radio', target: 'source/radio/set' };
  return null;
}

function update(paths) {
  const touched = (...names) => !paths || names.some((n) => paths.has(n));
  if (!paths) signatures = {};
  if (touched('player', 'source/radio')) learnClock(current(), Boolean(paths));
  if (touched('source', 'player')) renderSources();
  if (touched('player', 'source/radio')) renderPlayer();
  if (touched('volume')) renderVolume();
}

// Only a position the node has just read says what its clock is now; a retained one may be old.
function learnClock(p, live) {
  const at = p && p.position_at;
  if (!at) return;
  if (live && primed && at !== lastAt) {
    const sample = Date.now() - at;
    if (Math.abs(sample) < 86400000) {
      skews.push(sample);
      if (skews.length > SKEW_SAMPLES) skews.shift();
    }
  }
  if (at !== lastAt && seeking && at > seeking.from) seeking = null; // the source answered
  lastAt = at;
  primed = true;
}

function nodeNow() {
  return Date.now() - (skews.length ? Math.min(...skews) : 0);
}

// Rebuilt only when what they show changes, so a button is never replaced under a finger.
function changed(name, value) {
  const signature = JSON.stringify(value);
  if (signatures[name] === signature) return false;
  signatures[name] = signature;
  return true;
}

function renderSources() {
  const sources = node.get('source');
  if (!sources || typeof sources !== 'object') {
    if (changed('sources', null)) clear(el.sources, h('span.dim', { i18n: 'np.no_switcher' }));
    return;
  }
  const names = [...(sources.enabled || [])];
  if (sources.active && sources.active !== 'none' && !names.includes(sources.active)) names.push(sources.active);
  const available = new Set(sources.available || []);
  const states = sources.states || {};
  if (!changed('sources', [names, sources.active, [...available], states])) return;
  const chip = (name) => {
    const status = states[name];
    const extra = status === 'playing' || status === 'paused' ? h('span.st', { text: t(`state.${status}`) }) : null;
    return h('button', {
      dataset: { source: name },
      'aria-pressed': String(sources.active === name),
      disabled: name !== 'none' && !available.has(name) && sources.active !== name,
      onClick: () => node.send('source/set', name),
    }, tOr(`source.${name}`, name), extra);
  };
  clear(el.sources, names.map(chip), chip('none'));
}

function renderPlayer() {
  const p = current();
  const title = p ? p.title || (p.active !== 'none' ? tOr(`source.${p.active}`, p.active) : '') : '';
  // The album (a radio's station) names the cover better than a track title that changes.
  const coverName = (p && p.album) || title || '♪';
  if (changed('cover', [p && p.cover_url, coverName])) {
    const cover = logo(p && p.cover_url, coverName, 'div.cover');
    el.cover.replaceWith(cover);
    el.cover = cover;
  }
  if (!p || p.active === 'none') {
    el.title.textContent = t('np.nothing');
    el.artist.textContent = p ? t('np.pick_source') : t('np.no_player');
    el.album.textContent = '';
    el.state.textContent = '';
    el.error.textContent = '';
    el.progress.hidden = true;
    if (changed('transport', [])) clear(el.transport);
    return;
  }
  el.title.textContent = title;
  el.artist.textContent = p.artist || '';
  el.album.textContent = p.album && p.album !== title ? p.album : '';
  el.state.textContent = `${tOr(`source.${p.active}`, p.active)} · ${t(`state.${p.state || 'idle'}`)}`;
  el.error.textContent = p.state === 'error' && p.error ? p.error : '';
  renderProgress();
  renderTransport(p);
  tick();
}

// Where the track is now, from where it was and when that was read: no message needed to move.
function position(p) {
  const playing = p.state === 'playing';
  if (seeking && Date.now() - seeking.at > SEEK_HOLD_MS) seeking = null;
  let pos;
  if (seeking) {
    pos = seeking.ms + (playing ? Date.now() - seeking.at : 0);
  } else {
    if (p.position_ms === null || p.position_ms === undefined) return null;
    const elapsed = playing && p.position_at ? nodeNow() - p.position_at : 0;
    pos = p.position_ms + Math.max(0, elapsed);
  }
  return p.duration_ms ? Math.min(pos, p.duration_ms) : pos;
}

function renderProgress() {
  const p = current();
  if (!p || p.active === 'none') return;
  const live = !p.duration_ms && ['playing', 'buffering', 'paused'].includes(p.state);
  el.progress.hidden = !p.duration_ms && !live;
  if (live) {
    clear(el.pos, h('span.live', { i18n: 'np.live' }));
    el.dur.textContent = '';
    el.bar.hidden = true;
    return;
  }
  el.bar.hidden = false;
  const pos = position(p) ?? 0;
  el.pos.textContent = formatTime(pos);
  el.dur.textContent = formatTime(p.duration_ms);
  el.fill.style.width = `${p.duration_ms ? (100 * pos) / p.duration_ms : 0}%`;
  const seekable = (p.commands || []).includes('seek');
  el.bar.style.cursor = seekable ? 'pointer' : 'default';
  el.bar.tabIndex = seekable ? 0 : -1;
  el.bar.setAttribute('aria-disabled', String(!seekable));
  el.bar.setAttribute('aria-valuemin', '0');
  el.bar.setAttribute('aria-valuemax', String(p.duration_ms || 0));
  el.bar.setAttribute('aria-valuenow', String(Math.round(pos)));
  el.bar.setAttribute('aria-valuetext', `${formatTime(pos)} / ${formatTime(p.duration_ms)}`);
}

function seekTo(p, ms) {
  const target = Math.round(Math.min(p.duration_ms, Math.max(0, ms)));
  if (!node.send(p.target, { seek_ms: target })) return;
  seeking = { ms: target, at: Date.now(), from: lastAt || 0 };
  renderProgress();
}

function seekable() {
  const p = current();
  return p && p.duration_ms && (p.commands || []).includes('seek') ? p : null;
}

function seek(event) {
  const p = seekable();
  if (!p) return;
  const box = el.bar.getBoundingClientRect();
  const ratio = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
  seekTo(p, ratio * p.duration_ms);
}

function seekKey(event) {
  const p = seekable();
  if (!p) return;
  const now = position(p) ?? 0;
  const moves = { ArrowRight: now + SEEK_STEP_MS, ArrowUp: now + SEEK_STEP_MS, ArrowLeft: now - SEEK_STEP_MS,
    ArrowDown: now - SEEK_STEP_MS, Home: 0, End: p.duration_ms - 1000 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  seekTo(p, moves[event.key]);
}

function renderTransport(p) {
  const can = new Set(p.commands || []);
  const busy = p.state === 'playing' || p.state === 'buffering';
  const buttons = [];
  if (can.has('previous')) buttons.push(['previous', 'previous']);
  if (busy && (can.has('pause') || can.has('toggle'))) buttons.push([can.has('pause') ? 'pause' : 'toggle', 'pause', 'main']);
  else if (!busy && (can.has('play') || can.has('toggle'))) buttons.push([can.has('play') ? 'play' : 'toggle', 'play', 'main']);
  if (can.has('stop')) buttons.push(['stop', 'stop']);
  if (can.has('next')) buttons.push(['next', 'next']);
  if (!changed('transport', [p.target, buttons])) return;
  clear(el.transport, buttons.map(([command, glyph, cls]) => h(`button.icon${cls ? `.${cls}` : ''}`, {
    dataset: { command },
    label: `np.${glyph}`,
    onClick: () => node.send(p.target, command),
  }, icon(glyph))));
}

function renderVolume() {
  const v = node.get('volume');
  const present = v && typeof v === 'object';
  el.volumeBox.hidden = !present;
  el.noVolume.hidden = present;
  if (!present) {
    // The node says why (no mixer, disabled...): what that means and what to do, then its words.
    el.noVolume.explain(node.absent('volume'));
    return;
  }
  volume.set(v.percent);
  if (changed('mute', v.muted)) {
    el.mute.replaceChildren(icon(v.muted ? 'muted' : 'volume'));
    el.mute.setAttribute('aria-pressed', String(Boolean(v.muted)));
  }
}

// Between state messages the position moves by itself: extrapolated from position_at.
function tick() {
  const p = current();
  const moving = visible && p && p.state === 'playing' && p.duration_ms;
  if (moving && !ticker) ticker = setInterval(renderProgress, 250);
  if (!moving && ticker) {
    clearInterval(ticker);
    ticker = null;
  }
}

function show() {
  visible = true;
  tick();
}

function hide() {
  visible = false;
  tick();
}
