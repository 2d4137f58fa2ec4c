// External keys: the list, and one key's detail (provider fields, KEK
// versions, health history, last diagnosis, KMS calls), validate and delete.
import { call, healthEvents, keyTypes, listAudit } from '../api.js';
import { h, replace, link, timeEl, ago, notice, apiErrorNotice, confirmDialog, toast } from '../dom.js';
import { statusBadge, history, since, keyIdOf, historyTable } from '../health.js';
import { eventsTable } from '../events.js';
import { loadTemplate, diagnosisDetails } from '../clouds.js';
import { loadKeys, loadProjects, names, REFRESH_MS } from './common.js';

export async function keysPage(ctx) {
  const box = h('div');
  let last = '';
  async function load() {
    const [keys, health, types] = await Promise.all([loadKeys(), healthEvents(300), keyTypes()]);
    if (!ctx.alive()) return;
    const sig = JSON.stringify(keys.map((k) => [k.id, k.name, k.status, k.status_detail, k.api_project_ids, k.current_kek_version]));
    if (sig === last) return;
    last = sig;
    const codesOf = new Map(types.map((t) => [t.type, t.codes]));
    replace(box, keys.length ? h('table', { class: 'keys' },
      h('caption', null, `${keys.length} external key${keys.length === 1 ? '' : 's'}`),
      h('thead', null, h('tr', null, ['Name', 'Type', 'Status', 'Since', 'Projects', 'Registered'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, keys.map((k) => {
        const at = since(k, history(health.filter((e) => keyIdOf(e) === k.id), codesOf.get(k.type)));
        return h('tr', { 'data-key': k.id, 'data-status': k.status },
          h('td', null, link(k.name, 'keys', k.id), h('div', { class: 'small muted mono' }, k.id)),
          h('td', null, k.type),
          h('td', null, statusBadge(k.status)),
          h('td', null, timeEl(at), h('div', { class: 'small muted' }, ago(at))),
          h('td', { class: 'num' }, String((k.api_project_ids || []).length)),
          h('td', null, timeEl(k.created_at)));
      })))
      : h('p', { class: 'empty' }, 'No external keys yet.'));
  }
  await load();
  replace(ctx.main,
    h('div', { class: 'page-head' }, h('h1', null, 'External keys'), h('a', { class: 'btn', href: '#/register' }, 'Register a key')),
    box);
  ctx.every(REFRESH_MS, () => load().catch(() => {}));
}

export async function keyPage(ctx) {
  const id = ctx.params.id;
  const [key0, types, projects] = await Promise.all([call('GET', `/v1/organization/external_keys/${encodeURIComponent(id)}`), keyTypes(), loadProjects()]);
  let key = key0;
  const type = types.find((t) => t.type === key.type) || { fields: [], onboarding_steps: [], codes: [] };
  const tpl = await loadTemplate(key.type);
  const nm = names([key], projects);

  const statusBox = h('section', { class: 'panel', 'aria-labelledby': 'k-status' });
  const historyBox = h('section', { 'aria-labelledby': 'k-history' });
  const projectsBox = h('section', { 'aria-labelledby': 'k-projects' });
  const kekBox = h('section', { 'aria-labelledby': 'k-kek' });
  const callsBox = h('section', { 'aria-labelledby': 'k-calls' });
  const result = h('div', { class: 'result', 'aria-live': 'polite' });
  const headBadge = h('span');
  let lastSig = '';

  function renderKey(health) {
    const periods = history(health.filter((e) => keyIdOf(e) === key.id), type.codes);
    const at = since(key, periods);
    replace(headBadge, statusBadge(key.status));
    const d = key.status_detail;
    replace(statusBox,
      h('h2', { id: 'k-status' }, 'Health'),
      h('p', { class: 'key-status' }, statusBadge(key.status), ' since ', timeEl(at), ` (${ago(at)})`),
      d ? h('div', { class: 'diagnosis' },
        h('h3', null, 'Last diagnosis'),
        h('p', null, h('code', null, d.code), ' at ', timeEl(d.at)),
        h('p', { class: 'server-message' }, d.message),
        diagnosisDetails(d.code, '', type, tpl))
        : h('p', { class: 'muted' }, 'The last check succeeded.'));
    replace(historyBox, h('h2', { id: 'k-history' }, 'Health history'), historyTable(periods));
    const pids = key.api_project_ids || [];
    replace(projectsBox, h('h2', { id: 'k-projects' }, 'Projects on this key'),
      pids.length ? h('ul', null, pids.map((pid) => {
        const p = projects.find((x) => x.id === pid);
        return h('li', null, link(nm.projects.get(pid) || pid, 'projects', pid), p && p.status === 'archived' ? ' (archived)' : '');
      })) : h('p', { class: 'empty' }, 'No project uses this key.'));
    const versions = Object.entries(key.kek_versions || {});
    replace(kekBox, h('h2', { id: 'k-kek' }, 'KEK versions'),
      h('dl', { class: 'fields' }, h('dt', null, 'Current version'), h('dd', { class: 'mono' }, key.current_kek_version || '—')),
      versions.length ? h('table', null, h('caption', null, 'Project key versions wrapped by each KEK version'),
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'KEK version'), h('th', { scope: 'col' }, 'Project key versions'))),
        h('tbody', null, versions.map(([v, n]) => h('tr', null, h('td', { class: 'mono' }, v), h('td', { class: 'num' }, String(n))))))
        : h('p', { class: 'empty' }, 'Nothing is wrapped by this key yet.'));
  }

  async function loadCalls() {
    const calls = (await listAudit({ event_types: ['kms.call'] }, 300)).filter((e) => keyIdOf(e) === key.id).slice(0, 10);
    if (!ctx.alive()) return;
    replace(callsBox, h('h2', { id: 'k-calls' }, 'Recent KMS calls'),
      h('p', { class: 'small muted' }, 'Each call names the request id ekm sent, which you can find in your cloud\'s own logs (Azure: x-ms-client-request-id in the Key Vault logs).'),
      calls.length ? eventsTable(calls, nm, 'The 10 most recent calls to this key', false) : h('p', { class: 'empty' }, 'No recent calls.'),
      h('p', null, h('a', { href: '#/audit?type=kms.call' }, 'All KMS calls in the audit log')));
  }

  async function refresh() {
    const [k, health] = await Promise.all([call('GET', `/v1/organization/external_keys/${encodeURIComponent(id)}`), healthEvents(500)]);
    if (!ctx.alive()) return;
    key = k;
    const sig = JSON.stringify([k.status, k.status_detail, k.api_project_ids, k.kek_versions, k.current_kek_version, health.length && health[0].id]);
    if (sig === lastSig) return;
    lastSig = sig;
    renderKey(health);
  }

  const validateBtn = h('button', { type: 'button', class: 'btn' }, 'Validate now');
  const deleteBtn = h('button', { type: 'button', class: 'btn btn-danger' }, 'Delete');
  validateBtn.addEventListener('click', async () => {
    validateBtn.disabled = true;
    replace(result, notice('info', 'Checking the key with its KMS (a wrap/unwrap round trip)…'));
    try {
      const v = await call('POST', `/v1/organization/external_keys/${encodeURIComponent(id)}/validate`);
      if (v.status === 'valid') {
        replace(result, notice('ok', h('strong', null, 'The key works. '), 'The KMS wrapped and unwrapped a test key.'));
      } else {
        const e = v.error || {};
        replace(result, notice('error', h('h3', null, 'Validation failed'),
          h('p', null, h('code', null, e.code), e.retryable ? ' (temporary: try again later)' : ''),
          h('p', { class: 'server-message' }, e.message),
          diagnosisDetails(e.code, e.step, type, tpl)));
      }
      lastSig = '';
      await refresh();
    } catch (err) {
      replace(result, apiErrorNotice(err, 'Validation could not run.'));
    } finally {
      validateBtn.disabled = false;
      const n = result.querySelector('.notice');
      if (n) n.focus();
    }
  });
  deleteBtn.addEventListener('click', async () => {
    const ok = await confirmDialog(`Delete ${key.name}?`,
      'This removes the registration from ekm. Your key stays in your KMS. The server refuses while any project\'s key is wrapped by it.', 'Delete key', true);
    if (!ok) return;
    try {
      await call('DELETE', `/v1/organization/external_keys/${encodeURIComponent(id)}`);
      toast(`Deleted ${key.name}.`);
      window.location.hash = '#/keys';
    } catch (err) {
      replace(result, apiErrorNotice(err, 'The server refused to delete this key:'));
      result.querySelector('.notice').focus();
    }
  });

  const fieldRows = [];
  for (const f of type.fields || []) {
    if (key[f.name] === undefined || key[f.name] === '') continue;
    fieldRows.push(h('dt', null, f.name), h('dd', { class: 'mono' }, String(key[f.name])));
  }
  for (const extra of ['local_key_id', 'key_version']) {
    if (key[extra] && !(type.fields || []).some((f) => f.name === extra)) fieldRows.push(h('dt', null, extra), h('dd', { class: 'mono' }, String(key[extra])));
  }

  await refresh();
  replace(ctx.main,
    h('p', { class: 'small' }, link('External keys', 'keys'), ' / ', key.id),
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, key.name), h('p', { class: 'muted' }, headBadge, ' ', type.title || key.type, ' · ', h('span', { class: 'mono' }, key.id))),
      h('div', { class: 'actions' }, validateBtn, deleteBtn)),
    result,
    key.note ? notice('warn', key.note) : null,
    statusBox,
    h('section', { class: 'panel', 'aria-labelledby': 'k-fields' },
      h('h2', { id: 'k-fields' }, 'Registration'),
      h('dl', { class: 'fields' },
        h('dt', null, 'type'), h('dd', null, key.type),
        h('dt', null, 'purpose'), h('dd', null, key.purpose),
        h('dt', null, 'registered'), h('dd', null, timeEl(key.created_at)),
        fieldRows)),
    h('div', { class: 'grid2' }, projectsBox, kekBox),
    historyBox,
    callsBox);
  loadCalls().catch(() => {});
  ctx.every(REFRESH_MS, () => refresh().catch(() => {}));
}
