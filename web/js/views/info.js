// Info: what the node is (versions, addresses, ports), how it is (uptime, temperature, memory),
// the status of every subsystem, and the versions of the node and its programs with their updates.
import * as node from '../node.js';
import { h, icon, clear, notAvailable, errorTitle, errorDetail } from '../dom.js';
import { t, tOr } from '../i18n.js';

const el = {};

export default { id: 'info', icon: 'info', label: 'nav.info', mount, update };

function mount(root) {
  el.missing = notAvailable();
  el.facts = h('dl.kv', { id: 'facts' });
  el.subsystems = h('ul.list.subs', { id: 'subsystems' });
  el.notices = h('ul.list', { id: 'notices' });
  el.noticesTitle = h('h2', { i18n: 'info.notices' });
  const refresh = h('button.icon', { label: 'info.refresh', onClick: () => node.send('info/get', '') }, icon('refresh'));
  el.updates = mountUpdates();
  el.body = h('div', {},
    h('div.row', {}, h('h2.grow', { i18n: 'info.node' }), refresh), el.facts,
    el.updates,
    h('h2', { i18n: 'info.subsystems' }), el.subsystems,
    el.noticesTitle, el.notices);
  root.append(el.missing, el.body);
}

// Versions and updates: the `update` state (installed vs available, the job that runs or ran last)
// and, from `info`, each speaker's snapclient. An install's refusal is shown here by its code.
function mountUpdates() {
  const check = h('button', { id: 'update-check', i18n: 'update.check', onClick: () => node.send('update/set', 'check', { onError: refused }) });
  el.checked = h('div.detail', { id: 'update-checked' });
  el.programs = h('ul.list', { id: 'update-programs' });
  el.job = h('div.upd', { id: 'update-job', role: 'status', 'aria-live': 'polite' });
  el.refusal = h('div.upd.bad', { id: 'update-error', role: 'alert' });
  el.restart = h('div.upd', { id: 'update-restart', i18n: 'update.restart_needed' });
  el.satellitesTitle = h('h2', { i18n: 'update.satellites' });
  el.satellites = h('ul.list', { id: 'update-satellites' });
  el.refusal.hidden = true;
  return h('section', { id: 'updates' },
    h('div.row', {}, h('h2.grow', { i18n: 'update.versions' }), check), el.checked,
    el.programs, el.job, el.refusal, el.restart, el.satellitesTitle, el.satellites);
}

function refused(error) {
  el.refusal.hidden = false;
  // The code picks the message; the node's own words follow apart, as detail.
  clear(el.refusal, h('span.why', { text: errorTitle(error.code) }), errorDetail(error.error || ''));
}

function install(name) {
  el.refusal.hidden = true;
  node.send('update/set', { install: name }, { onError: refused });
}

function versionOf(value) {
  return value === null || value === undefined ? t('update.unknown') : value;
}

function programRow(name, p) {
  const installed = p.installed ? t('update.installed', { v: p.installed }) : t('update.not_installed');
  const available = p.update
    ? t('update.available', { v: p.available })
    : (p.available ? t('update.up_to_date') : t('update.available', { v: versionOf(p.available) }));
  const button = p.update && p.installable
    ? h('button.primary', { dataset: { install: name }, text: t('update.install', { v: p.available }), onClick: () => install(name) })
    : null;
  // Not installable from here (milo run from a checkout): why, by its code, where a button would be
  // offered; the node's own words (the checkout's path) as the title.
  const reason = !p.installable && p.reason
    ? h('div.detail.reason', { dataset: { reason: p.reason }, text: errorTitle(p.reason), title: p.detail || undefined })
    : null;
  return h('li', { dataset: { program: name } },
    h('div.grow', {}, h('div', { text: name }), h('div.detail', { text: `${installed} · ${available}` }), reason),
    button);
}

function updateUpdates(info) {
  const u = node.get('update');
  const present = u && typeof u === 'object' && u.programs;
  el.checked.hidden = !present;
  el.programs.hidden = !present;
  if (!present) {
    clear(el.programs);
    el.job.hidden = true;
    el.restart.hidden = true;
  } else {
    el.checked.textContent = u.checked_at
      ? t('update.checked', { time: new Date(u.checked_at * 1000).toLocaleString() }) + (u.error ? ` · ${u.error}` : '')
      : t('update.not_checked');
    // Buttons stay live while an update runs: the node answers a second one with `busy`, shown here.
    clear(el.programs, Object.entries(u.programs).map(([name, p]) => programRow(name, p)));
    const job = u.job;
    el.job.hidden = !job;
    if (job) {
      el.job.dataset.result = job.result;
      const step = tOr(`update.step.${job.step.replace(/ /g, '_')}`, job.step);
      const moved = job.to_version && (job.result === 'running' || job.result === 'done');
      const versions = moved ? ` ${job.from_version || '?'} → ${job.to_version}` : '';
      clear(el.job,
        h('div', { text: t(`update.result.${job.result}`, { program: job.program, step }) + versions }),
        job.detail ? h('div.detail', { text: job.detail }) : null);
    }
    el.restart.hidden = !u.restart_needed;
  }
  const satellites = Object.entries((info && info.satellites) || {});
  el.satellitesTitle.hidden = !satellites.length;
  clear(el.satellites, satellites.map(([id, s]) => h('li', { dataset: { client: id } },
    h('div.grow', { text: s.name || id }),
    h('span.detail', { text: `snapclient ${versionOf(s.version)}` }))));
}

function uptime(seconds) {
  const d = Math.floor(seconds / 86400);
  const hh = Math.floor((seconds % 86400) / 3600);
  const mm = Math.floor((seconds % 3600) / 60);
  return d ? t('info.uptime_days', { d, h: hh, m: mm }) : t('info.uptime_hours', { h: hh, m: mm });
}

function update() {
  const info = node.get('info');
  const present = info && typeof info === 'object';
  el.missing.hidden = present;
  el.missing.explain(node.absent('info'));
  el.body.hidden = !present;
  if (!present) return;
  const rows = [
    ['info.node_id', info.node_id],
    ['info.host', info.host],
    ['info.version', `${info.version} · ${t('info.schema')} ${info.schema_version}`],
    ['info.addresses', (info.addresses || []).join(', ') || '–'],
    ['info.ports', `HTTP ${info.http_port ?? '–'} · MQTT ${info.mqtt_port ?? '–'}`],
    ['info.broker', info.broker],
    ['info.uptime', uptime(info.uptime_s || 0)],
    ['info.temperature', info.cpu_temp_c === null || info.cpu_temp_c === undefined ? '–' : `${info.cpu_temp_c} °C`],
    ['info.throttled', info.throttled ?? '–'],
    ['info.memory', info.rss_mb ? `${info.rss_mb} MB` : '–'],
    ['info.platform', `${info.platform} · Python ${info.python}`],
  ];
  clear(el.facts, rows.map(([key, value]) => [h('dt', { i18n: key }), h('dd', { text: value ?? '–' })]));
  const subsystems = Object.entries(info.subsystems || {});
  clear(el.subsystems, subsystems.map(([name, s]) => h('li', { dataset: { subsystem: name } },
    h('div.grow', {}, h('div', { text: tOr(`subsystem.${name}`, name), title: name }), s.detail ? h('div.detail', { text: s.detail }) : null),
    h(`span.badge.${s.status}`, { text: tOr(`status.${s.status}`, s.status) }))));
  updateUpdates(info);
  const notices = info.notices || [];
  el.noticesTitle.hidden = !notices.length;
  clear(el.notices, notices.map((n) => h('li', { text: n })));
}
