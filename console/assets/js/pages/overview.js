// Overview: every external key with its health and since when, the
// projects on each, and recent lifecycle events.
import { call, healthEvents, keyTypes } from '../api.js';
import { h, replace, link, timeEl, ago } from '../dom.js';
import { statusBadge, history, since, keyIdOf } from '../health.js';
import { eventsTable, lifecycleTypes } from '../events.js';
import { loadKeys, loadProjects, names, REFRESH_MS } from './common.js';

export async function overviewPage(ctx) {
  const keysBox = h('section', { 'aria-labelledby': 'ov-keys' });
  const eventsBox = h('section', { 'aria-labelledby': 'ov-events' });
  let last = '';

  async function load() {
    const [keys, projects, health, types, recent] = await Promise.all([
      loadKeys(), loadProjects(), healthEvents(300), keyTypes(),
      call('GET', '/v1/organization/audit_logs', { query: { event_types: lifecycleTypes, limit: 10 } }),
    ]);
    if (!ctx.alive()) return;
    const sig = JSON.stringify([keys.map((k) => [k.id, k.name, k.status, k.status_detail, k.api_project_ids]), projects.map((p) => [p.id, p.name, p.status]), recent.data.map((e) => e.id)]);
    if (sig === last) return;
    last = sig;
    const nm = names(keys, projects);
    const codesOf = new Map(types.map((t) => [t.type, t.codes]));
    replace(keysBox, h('h2', { id: 'ov-keys' }, 'External keys'),
      keys.length ? keysTable(keys, nm, health, codesOf)
        : h('p', { class: 'empty' }, 'No external keys yet. ', link('Register your first key', 'register'), '.'));
    replace(eventsBox, h('h2', { id: 'ov-events' }, 'Recent lifecycle events'),
      recent.data.length ? eventsTable(recent.data, nm, 'The 10 most recent key and project events', false) : h('p', { class: 'empty' }, 'No events yet.'),
      h('p', null, link('Open the audit log', 'audit')));
  }

  await load();
  replace(ctx.main,
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Overview'),
      h('p', { class: 'muted' }, 'Health of your customer keys, refreshed every few seconds.'))),
    keysBox, eventsBox);
  ctx.every(REFRESH_MS, () => load().catch(() => {}));
}

function keysTable(keys, nm, health, codesOf) {
  return h('table', { class: 'keys' },
    h('caption', null, `${keys.length} external key${keys.length === 1 ? '' : 's'}`),
    h('thead', null, h('tr', null, ['Key', 'Type', 'Status', 'Since', 'Projects', 'Last diagnosis'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', null, keys.map((k) => {
      const periods = history(health.filter((e) => keyIdOf(e) === k.id), codesOf.get(k.type));
      const at = since(k, periods);
      const projects = k.api_project_ids || [];
      return h('tr', { 'data-key': k.id, 'data-status': k.status },
        h('td', null, link(k.name, 'keys', k.id)),
        h('td', null, k.type),
        h('td', null, statusBadge(k.status)),
        h('td', null, timeEl(at), h('div', { class: 'small muted' }, ago(at))),
        h('td', null, projects.length ? projects.map((id, i) => [i ? ', ' : '', link(nm.projects.get(id) || id, 'projects', id)]) : h('span', { class: 'muted' }, 'none')),
        h('td', null, k.status_detail ? [h('code', null, k.status_detail.code), h('div', { class: 'small' }, k.status_detail.message)] : h('span', { class: 'muted' }, '—')));
    })));
}
