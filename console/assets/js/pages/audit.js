// Audit log: filter by event type and time, page newer/older, every event's
// payload as text; kms.call events show the request ids to look up in the
// customer's own cloud logs.
import { call } from '../api.js';
import { h, replace, field, setError } from '../dom.js';
import { eventsTable, eventTypes } from '../events.js';
import { loadKeys, loadProjects, names } from './common.js';

const PAGE = 20;

function toLocalInput(sec) {
  if (!sec) return '';
  const d = new Date(sec * 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function fromLocalInput(v) {
  if (!v) return '';
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? String(Math.floor(t / 1000)) : null;
}

function hashFor(q) {
  const s = new URLSearchParams();
  for (const k of ['type', 'from', 'to', 'after', 'before']) if (q[k]) s.set(k, q[k]);
  const qs = s.toString();
  return '#/audit' + (qs ? '?' + qs : '');
}

export async function auditPage(ctx) {
  const q = {};
  for (const k of ['type', 'from', 'to', 'after', 'before']) q[k] = ctx.query.get(k) || '';
  if (q.type && !eventTypes.includes(q.type)) q.type = '';
  const query = { limit: PAGE };
  if (q.type) query.event_types = [q.type];
  if (/^\d+$/.test(q.from)) query['effective_at[gte]'] = q.from;
  if (/^\d+$/.test(q.to)) query['effective_at[lte]'] = q.to;
  if (q.after) query.after = q.after;
  else if (q.before) query.before = q.before;
  const [page, keys, projects] = await Promise.all([call('GET', '/v1/organization/audit_logs', { query }), loadKeys(), loadProjects()]);

  const typeSelect = h('select', { name: 'type' }, h('option', { value: '' }, 'All event types'),
    eventTypes.map((t) => h('option', { value: t, selected: t === q.type }, t)));
  const typeField = field('Event type', typeSelect);
  const fromInput = h('input', { type: 'datetime-local', name: 'from', value: toLocalInput(Number(q.from)) });
  const fromField = field('From (your local time)', fromInput);
  const toInput = h('input', { type: 'datetime-local', name: 'to', value: toLocalInput(Number(q.to)) });
  const toField = field('Until', toInput);
  const apply = h('button', { type: 'submit', class: 'btn' }, 'Apply');
  const clear = h('a', { class: 'btn btn-quiet', href: '#/audit' }, 'Clear');
  const form = h('form', { class: 'filters', novalidate: true, 'aria-label': 'Filter the audit log' }, typeField.wrap, fromField.wrap, toField.wrap, h('div', { class: 'actions' }, apply, clear));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const from = fromLocalInput(fromInput.value);
    const to = fromLocalInput(toInput.value);
    setError(fromField, from === null ? 'Not a date and time.' : '');
    setError(toField, to === null ? 'Not a date and time.' : '');
    if (from === null || to === null) return;
    window.location.hash = hashFor({ type: typeSelect.value, from, to });
  });

  const data = page.data;
  const first = !q.after && !q.before;
  const newerEnabled = q.before ? page.has_more : !first;
  const olderEnabled = q.before ? data.length > 0 : page.has_more;
  const base = { type: q.type, from: q.from, to: q.to };
  const newer = h('button', { type: 'button', class: 'btn btn-quiet', disabled: !newerEnabled || !data.length, 'data-page': 'newer' }, '← Newer');
  const older = h('button', { type: 'button', class: 'btn btn-quiet', disabled: !olderEnabled || !data.length, 'data-page': 'older' }, 'Older →');
  newer.addEventListener('click', () => { window.location.hash = hashFor({ ...base, before: page.first_id }); });
  older.addEventListener('click', () => { window.location.hash = hashFor({ ...base, after: page.last_id }); });
  const latest = h('a', { href: hashFor(base), class: 'btn btn-quiet' }, 'Latest');
  const pager = () => h('nav', { class: 'pager', 'aria-label': 'Audit log pages' }, newer, older, first ? null : latest,
    h('span', { class: 'small muted' }, data.length ? `${data.length} event${data.length === 1 ? '' : 's'}, newest first` : ''));

  replace(ctx.main,
    h('h1', null, 'Audit log'),
    h('p', { class: 'muted' }, 'Everything done to your keys and projects, and every call ekm made to your KMS. ',
      'kms.call events carry the request ids ekm sent, to find each call in your cloud\'s own logs.'),
    form,
    pager(),
    data.length ? eventsTable(data, names(keys, projects), q.type ? `Events of type ${q.type}` : 'Events', true)
      : h('p', { class: 'empty' }, 'No events match.'));
}
