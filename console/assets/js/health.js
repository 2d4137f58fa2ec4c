// Key health: the words the console uses for the API's statuses, and the
// history of a key computed from its audit events.
import { h, timeEl, duration } from './dom.js';

// The API's status → the console's word.
export const statusWord = { valid: 'healthy', degraded: 'degraded', unavailable: 'revoked' };

export function statusBadge(status) {
  const word = statusWord[status] || status || 'unknown';
  const label = word.charAt(0).toUpperCase() + word.slice(1);
  return h('span', { class: 'badge badge-' + (statusWord[status] ? word : 'neutral'), 'data-status': word }, label);
}

// classOf maps a diagnosis code to the console's state, from the key
// type's codes (revoked and invalid → revoked; outage, operator → degraded).
function stateOfCode(code, codes) {
  const c = (codes || []).find((x) => x.code === code);
  if (!c) return 'degraded';
  return c.class === 'revoked' || c.class === 'invalid' ? 'revoked' : 'degraded';
}

function payload(ev) {
  return ev[ev.type] || {};
}

// keyIdOf is the external key an event is about.
export function keyIdOf(ev) {
  const p = payload(ev);
  return p.external_key_id || p.id || '';
}

// history computes a key's states from its health events (newest first, as
// the audit log answers): [{state, from, to, code, message}] oldest first,
// where to is null for the current state. codes: the key type's codes.
export function history(events, codes) {
  const evs = events.slice().reverse();
  const periods = [];
  let cur = null;
  const enter = (state, at, code, message) => {
    if (cur && cur.state === state) {
      if (code) { cur.code = code; cur.message = message; }
      return;
    }
    if (cur) cur.to = at;
    cur = { state, from: at, to: null, code: code || '', message: message || '' };
    periods.push(cur);
  };
  for (const ev of evs) {
    const p = payload(ev);
    const at = ev.effective_at;
    switch (ev.type) {
      case 'external_key.registered':
        enter('healthy', at);
        break;
      case 'external_key.unavailable':
        enter('revoked', at, p.code, p.message);
        break;
      case 'external_key.degraded':
        enter('degraded', at, p.code, p.message);
        break;
      case 'external_key.restored':
        enter('healthy', at);
        break;
      case 'external_key.validated': {
        const d = p.data || {};
        if (d.status === 'valid') enter('healthy', at);
        else enter(stateOfCode(d.code, codes), at, d.code, 'validation failed' + (d.step ? ` (step ${d.step})` : ''));
        break;
      }
      default:
    }
  }
  return periods;
}

// since is when the key entered its current status, from the history (or
// the status detail for a key that is not valid).
export function since(key, periods) {
  if (key.status !== 'valid' && key.status_detail && key.status_detail.at) return key.status_detail.at;
  const last = periods && periods.length ? periods[periods.length - 1] : null;
  if (last && last.state === 'healthy') return last.from;
  return key.created_at;
}

// historyTable renders the history (newest first) with durations.
export function historyTable(periods) {
  if (!periods.length) return h('p', { class: 'empty' }, 'No health events are in the audit log for this key (older ones may have been pruned).');
  const now = Date.now() / 1000;
  const rows = periods.slice().reverse().map((p) => h('tr', { 'data-state': p.state },
    h('td', null, h('span', { class: 'badge badge-' + p.state }, p.state.charAt(0).toUpperCase() + p.state.slice(1))),
    h('td', null, timeEl(p.from)),
    h('td', null, p.to ? timeEl(p.to) : h('span', null, 'now')),
    h('td', { class: 'num' }, p.to ? duration(p.to - p.from) : 'ongoing, ' + duration(now - p.from)),
    h('td', null, p.code ? h('code', null, p.code) : '', p.message ? h('div', { class: 'small' }, p.message) : '')));
  return h('table', { class: 'history' },
    h('caption', null, 'Health history (from the audit log)'),
    h('thead', null, h('tr', null, ['State', 'From', 'Until', 'Duration', 'Diagnosis'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', null, rows));
}
