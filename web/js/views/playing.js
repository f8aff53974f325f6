// Now playing: the source switcher, what plays (cover, title, progress), the transport buttons the
// active source supports now, and the volume.
import * as node from '../node.js';
import { h, icon, clear, logo, guardSlider, holdRepeat, formatTime } from '../dom.js';
import { t, tOr } from '../i18n.js';

const el = {};
let volume = null;
let ticker = null;
let visible = false;
let signatures = {};

export default { id: 'playing', icon: 'playing', label: 'nav.playing', mount, update, show, hide };

function mount(root) {
  el.sources = h('div.chips', { role: 'group', label: 'np.sources', id: 'sources' });
  el.cover = h('div.cover');
  el.title = h('div.title.ellipsis', { id: 'np-title' });
  el.artist = h('div.artist.ellipsis', { id: 'np-artist' });
  el.album = h('div.dim.ellipsis');
  el.state = h('div.dim', { id: 'np-state' });
  el.error = h('div.err');
  el.pos = h('span');
  el.fill = h('i');
  el.bar = h('div.bar', { onClick: seek }, h('div', {}, el.fill));
  el.dur = h('span');
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
  el.noVolumeWhy = h('small.dim', { id: 'volume-why' });
  el.noVolume = h('p.dim', { id: 'no-volume', hidden: true }, h('span', { i18n: 'vol.not_available' }), ' ', el.noVolumeWhy);
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
  if (touched('source', 'player')) renderSources();
  if (touched('player', 'source/radio')) renderPlayer();
  if (touched('volume')) renderVolume();
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

function position(p) {
  if (p.position_ms === null || p.position_ms === undefined) return null;
  const elapsed = p.state === 'playing' && p.position_at ? Date.now() - p.position_at : 0;
  const pos = p.position_ms + Math.max(0, elapsed);
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
  el.bar.style.cursor = (p.commands || []).includes('seek') ? 'pointer' : 'default';
}

function seek(event) {
  const p = current();
  if (!p || !p.duration_ms || !(p.commands || []).includes('seek')) return;
  const box = el.bar.getBoundingClientRect();
  const ratio = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
  node.send(p.target, { seek_ms: Math.round(ratio * p.duration_ms) });
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
    // The node says why (no mixer, disabled...): shown as it is, under the translated sentence.
    el.noVolumeWhy.textContent = node.absent('volume')?.reason || '';
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
  if (moving && !ticker) ticker = setInterval(renderProgress, 500);
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
