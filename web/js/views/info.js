// Info: what the node is (versions, addresses, ports), how it is (uptime, temperature, memory),
// and the status of every subsystem.
import * as node from '../node.js';
import { h, icon, clear, notAvailable } from '../dom.js';
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
  el.body = h('div', {},
    h('div.row', {}, h('h2.grow', { i18n: 'info.node' }), refresh), el.facts,
    h('h2', { i18n: 'info.subsystems' }), el.subsystems,
    el.noticesTitle, el.notices);
  root.append(el.missing, el.body);
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
  const notices = info.notices || [];
  el.noticesTitle.hidden = !notices.length;
  clear(el.notices, notices.map((n) => h('li', { text: n })));
}
