// Audit events rendered as text: a one-line summary per type, the KMS
// request ids of kms.call events, and the raw payload on demand.
import { h, link, timeEl } from './dom.js';

// Every event type the server records (docs/API.md, Audit logs).
export const eventTypes = [
  'kms.call',
  'external_key.registered', 'external_key.validated', 'external_key.unavailable', 'external_key.degraded',
  'external_key.restored', 'external_key.rotated', 'external_key.rewrapped', 'external_key.removed',
  'project.created', 'project.updated', 'project.archived', 'project.key_rotated', 'project.reencrypted',
  'service_account.created', 'service_account.updated', 'service_account.deleted',
  'api_key.created', 'api_key.deleted', 'organization.updated',
];

export const lifecycleTypes = eventTypes.filter((t) => t.startsWith('external_key.') || t.startsWith('project.'));

function payload(ev) {
  const p = ev[ev.type];
  return p && typeof p === 'object' ? p : {};
}

// names: {keys: Map(id → name), projects: Map(id → name)}.
function keyRef(id, names) {
  if (!id) return null;
  const name = names && names.keys && names.keys.get(id);
  return name !== undefined ? link(name, 'keys', id) : h('code', null, id);
}

function projectRef(id, names, fallback) {
  if (!id) return null;
  const name = (names && names.projects && names.projects.get(id)) || fallback;
  return name ? link(name, 'projects', id) : h('code', null, id);
}

function kv(pairs) {
  return h('ul', { class: 'kv' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) =>
    h('li', null, h('span', { class: 'k' }, k + ' '), v instanceof Node ? v : h('span', null, String(v)))));
}

// requestIds are the ids ekm sent to the KMS, which the customer finds in
// its own cloud's logs (Azure: x-ms-client-request-id).
export function requestIds(p) {
  const ids = p.request_ids && p.request_ids.length ? p.request_ids : (p.request_id ? [p.request_id] : []);
  return ids;
}

// summary renders what an event says, as text and links.
export function summary(ev, names) {
  const p = payload(ev);
  const d = p.data || {};
  switch (ev.type) {
    case 'kms.call': {
      const ids = requestIds(p);
      return h('div', { class: 'kms-call' },
        kv([['key', keyRef(p.external_key_id, names)], ['operation', p.operation], ['outcome', p.outcome],
          ['latency', p.latency_ms !== undefined ? `${Math.round(p.latency_ms * 10) / 10} ms` : ''], ['error', p.error_code ? h('code', null, p.error_code) : '']]),
        ids.length ? h('div', { class: 'small' }, 'KMS request id' + (ids.length > 1 ? 's' : '') + ': ',
          ids.map((id, i) => [i ? ', ' : '', h('code', { class: 'request-id' }, id)])) : null,
        p.ekm_request_id ? h('div', { class: 'small' }, 'ekm request id: ', h('code', null, p.ekm_request_id)) : null);
    }
    case 'external_key.registered':
      return kv([['key', keyRef(p.id, names) || ''], ['name', d.name], ['type', d.type]]);
    case 'external_key.validated':
      return kv([['key', keyRef(p.id, names)], ['result', d.status], ['code', d.code ? h('code', null, d.code) : ''], ['step', d.step]]);
    case 'external_key.removed':
      return kv([['key', h('code', null, p.id || '')]]);
    case 'external_key.unavailable':
    case 'external_key.degraded':
    case 'external_key.restored':
      return kv([['key', keyRef(p.external_key_id, names)], ['status', p.status], ['code', p.code ? h('code', null, p.code) : ''], ['', p.message]]);
    case 'external_key.rotated':
      return kv([['key', keyRef(p.external_key_id, names)], ['new version', p.current_version]]);
    case 'external_key.rewrapped':
      return kv([['key', keyRef(p.external_key_id, names)], ['project', projectRef(p.project_id, names)], ['version', p.version]]);
    case 'project.created':
      return kv([['project', projectRef(p.id, names, d.name)], ['key', keyRef(d.external_key_id, names) || 'operator default']]);
    case 'project.updated': {
      const c = p.changes_requested || {};
      return kv([['project', projectRef(p.id, names)], ['new name', c.name], ['moved to key', keyRef(c.external_key_id, names)]]);
    }
    case 'project.archived':
      return kv([['project', projectRef(p.id, names)]]);
    case 'project.key_rotated':
      return kv([['project', projectRef(p.project_id, names)], ['version', p.version], ['', p.scheduled ? 'scheduled' : '']]);
    case 'service_account.created':
      return kv([['service account', d.name], ['id', p.id]]);
    case 'api_key.created':
      return kv([['kind', d.kind], ['name', d.name], ['key', d.redacted_value]]);
    default:
      return kv(Object.entries(p).filter(([, v]) => typeof v !== 'object').map(([k, v]) => [k, v]));
  }
}

export function actor(ev) {
  const a = ev.actor;
  if (!a) return h('span', { class: 'muted' }, 'ekm');
  const k = a.api_key || {};
  if (k.type === 'service_account') return h('span', null, 'service account ', h('code', null, (k.service_account || {}).id || k.id));
  if (k.type === 'admin_api_key') return h('span', null, 'admin key ', h('code', null, k.id));
  return h('code', null, k.id || '');
}

// eventsTable renders events newest first.
export function eventsTable(events, names, caption, withPayload) {
  return h('table', { class: 'events' },
    caption ? h('caption', null, caption) : null,
    h('thead', null, h('tr', null, ['Time', 'Event', 'Details', 'Actor'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', null, events.map((ev) => h('tr', { 'data-id': ev.id, 'data-type': ev.type },
      h('td', null, timeEl(ev.effective_at)),
      h('td', { class: 'nowrap' }, h('code', null, ev.type), ev.project ? h('div', { class: 'small' }, 'project ', projectRef(ev.project.id, names, ev.project.name)) : null),
      h('td', null, summary(ev, names), withPayload ? h('details', null, h('summary', null, 'Payload'), h('pre', null, JSON.stringify(ev, null, 2))) : null),
      h('td', null, actor(ev))))));
}
