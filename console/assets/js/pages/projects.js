// Projects: list and create (on a key); one project: re-key, archive,
// its key versions, and its service accounts (create with the key shown
// once, list, delete).
import { call, listAll, keyTypes } from '../api.js';
import { h, replace, add, link, route, field, setError, timeEl, notice, apiErrorNotice, confirmDialog, copyButton, toast } from '../dom.js';
import { statusBadge } from '../health.js';
import { diagnosisDetails, loadTemplate } from '../clouds.js';
import { eventsTable } from '../events.js';
import { loadKeys, loadProjects, names } from './common.js';

function keyOptions(keys, selected, exclude) {
  return keys.filter((k) => k.id !== exclude).map((k) => h('option', { value: k.id, selected: k.id === selected },
    `${k.name} (${k.type}, ${({ valid: 'healthy', degraded: 'degraded', unavailable: 'revoked' })[k.status] || k.status})`));
}

// kmsErrorNotice adds the diagnosis details of a KMS failure on key.
async function kmsErrorNotice(err, prefix, key) {
  const n = apiErrorNotice(err, prefix);
  if (key && err.code && err.code !== 'not_found') {
    const types = await keyTypes();
    const type = types.find((t) => t.type === key.type);
    if (type && (type.codes || []).some((c) => c.code === err.code)) add(n, diagnosisDetails(err.code, err.step, type, await loadTemplate(key.type), {}));
  }
  return n;
}

export async function projectsPage(ctx) {
  const showArchived = ctx.query.get('archived') === '1';
  const [keys, projects] = await Promise.all([loadKeys(), showArchived ? loadProjects() : listAll('/v1/organization/projects', {}, 2000)]);
  const keyById = new Map(keys.map((k) => [k.id, k]));
  const preselect = ctx.query.get('key') || (keys[0] && keys[0].id) || '';

  const nameInput = h('input', { type: 'text', name: 'name', autocomplete: 'off', maxlength: '256', required: true });
  const nameField = field('Project name', nameInput);
  const keySelect = h('select', { name: 'external_key_id' },
    keyOptions(keys, preselect),
    h('option', { value: '', selected: !preselect }, 'Operator default key (not customer-held)'));
  const keyField = field('Protected by', keySelect, 'The external key that wraps this project\'s key.');
  const submit = h('button', { type: 'submit', class: 'btn' }, 'Create project');
  const result = h('div', { class: 'result' });
  const form = h('form', { class: 'inline-form', novalidate: true, 'aria-labelledby': 'p-new' }, nameField.wrap, keyField.wrap, h('div', null, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    setError(nameField, '');
    replace(result);
    const name = nameInput.value.trim();
    if (!name) { setError(nameField, 'A project needs a name.'); nameInput.focus(); return; }
    const body = { name };
    if (keySelect.value) body.external_key_id = keySelect.value;
    submit.disabled = true;
    try {
      const p = await call('POST', '/v1/organization/projects', { body });
      toast(`Created project ${p.name}.`);
      window.location.hash = route('projects', p.id);
    } catch (err) {
      replace(result, await kmsErrorNotice(err, 'The project was not created.', keyById.get(keySelect.value)));
      result.firstChild.focus();
    } finally {
      submit.disabled = false;
    }
  });

  const archivedToggle = h('input', { type: 'checkbox', id: 'p-archived', checked: showArchived });
  archivedToggle.addEventListener('change', () => { window.location.hash = archivedToggle.checked ? '#/projects?archived=1' : '#/projects'; });

  replace(ctx.main,
    h('h1', null, 'Projects'),
    h('p', { class: 'muted' }, 'Each project\'s data is encrypted under its own project key, which is stored only wrapped by the project\'s external key.'),
    h('section', { class: 'panel', 'aria-labelledby': 'p-new' }, h('h2', { id: 'p-new' }, 'New project'), form, result),
    h('div', { class: 'page-head' }, h('h2', null, showArchived ? 'All projects' : 'Active projects'),
      h('label', { class: 'checkbox', for: 'p-archived' }, archivedToggle, 'Show archived')),
    projects.length ? h('table', { class: 'projects' },
      h('caption', null, `${projects.length} project${projects.length === 1 ? '' : 's'}`),
      h('thead', null, h('tr', null, ['Name', 'Status', 'External key', 'Key version', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, projects.map((p) => {
        const k = p.external_key_id ? keyById.get(p.external_key_id) : null;
        return h('tr', { 'data-project': p.id },
          h('td', null, link(p.name, 'projects', p.id), h('div', { class: 'small muted mono' }, p.id)),
          h('td', null, p.status),
          h('td', null, k ? [link(k.name, 'keys', k.id), ' ', statusBadge(k.status)] : h('span', { class: 'muted' }, p.external_key_id || 'operator default')),
          h('td', { class: 'num' }, String(p.current_key_version)),
          h('td', null, timeEl(p.created_at)));
      })))
      : h('p', { class: 'empty' }, 'No projects yet.'));
  if (ctx.query.get('key')) nameInput.focus();
}

export async function projectPage(ctx) {
  const id = ctx.params.id;
  const pPath = `/v1/organization/projects/${encodeURIComponent(id)}`;
  const [p, keys, rotations] = await Promise.all([call('GET', pPath), loadKeys(),
    call('GET', '/v1/organization/audit_logs', { query: { project_ids: [id], event_types: ['project.key_rotated', 'project.updated', 'project.created'], limit: 20 } })]);
  const keyById = new Map(keys.map((k) => [k.id, k]));
  const key = p.external_key_id ? keyById.get(p.external_key_id) : null;
  const archived = p.status === 'archived';
  const result = h('div', { class: 'result' });

  // Re-key.
  const rekeySelect = h('select', { name: 'external_key_id' }, keyOptions(keys, '', p.external_key_id));
  const rekeyField = field('Move to key', rekeySelect, 'ekm rewraps every version of this project\'s key under the new key; no data is re-encrypted.');
  const rekeyBtn = h('button', { type: 'submit', class: 'btn', disabled: archived || rekeySelect.options.length === 0 }, 'Re-key');
  const rekeyForm = h('form', { class: 'inline-form', novalidate: true, 'aria-labelledby': 'p-rekey' }, rekeyField.wrap, h('div', null, rekeyBtn));
  rekeyForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const to = keyById.get(rekeySelect.value);
    if (!to) return;
    const ok = await confirmDialog(`Move ${p.name} to ${to.name}?`, `ekm validates ${to.name} live, then rewraps all ${p.current_key_version} version(s) of the project key under it in one transaction. If anything fails, nothing changes.`, 'Re-key');
    if (!ok) return;
    rekeyBtn.disabled = true;
    try {
      await call('POST', pPath, { body: { external_key_id: to.id } });
      toast(`${p.name} is now protected by ${to.name}.`);
      ctx.alive() && window.dispatchEvent(new HashChangeEvent('hashchange'));
    } catch (err) {
      replace(result, await kmsErrorNotice(err, 'Re-keying failed; nothing changed.', err.param === 'external_key_id' ? to : key));
      result.firstChild.focus();
      rekeyBtn.disabled = false;
    }
  });

  const archiveBtn = h('button', { type: 'button', class: 'btn btn-danger', disabled: archived }, archived ? 'Archived' : 'Archive');
  archiveBtn.addEventListener('click', async () => {
    const ok = await confirmDialog(`Archive ${p.name}?`, 'Archived projects keep their data and keys, but their API keys stop working and they cannot be changed or get service accounts. Archiving cannot be undone.', 'Archive project', true);
    if (!ok) return;
    try {
      await call('POST', pPath + '/archive');
      toast(`Archived ${p.name}.`);
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    } catch (err) {
      replace(result, apiErrorNotice(err, 'Archiving failed.'));
      result.firstChild.focus();
    }
  });

  // Rotate (POST …/rotate_key, an ekm extension).
  const rotateBtn = h('button', { type: 'button', id: 'p-rotate', class: 'btn', disabled: archived }, 'Rotate project key');
  rotateBtn.addEventListener('click', async () => {
    const ok = await confirmDialog(`Rotate the key of ${p.name}?`, `A new version ${p.current_key_version + 1} of the project key, wrapped by the project's external key, protects new data from now on; data already stored stays readable under its version.`, 'Rotate');
    if (!ok) return;
    rotateBtn.disabled = true;
    try {
      const np = await call('POST', pPath + '/rotate_key');
      toast(`${p.name} now writes new data under key version ${np.current_key_version}.`);
      ctx.alive() && window.dispatchEvent(new HashChangeEvent('hashchange'));
    } catch (err) {
      replace(result, await kmsErrorNotice(err, 'Rotation failed; nothing changed.', key));
      result.firstChild.focus();
      rotateBtn.disabled = false;
    }
  });

  const saBox = h('section', { 'aria-labelledby': 'p-sa' });
  await renderServiceAccounts(saBox, p, archived);

  replace(ctx.main,
    h('p', { class: 'small' }, link('Projects', 'projects'), ' / ', p.id),
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, p.name), h('p', { class: 'muted' }, h('span', { class: 'badge ' + (archived ? 'badge-neutral' : 'badge-healthy') }, p.status), ' ', h('span', { class: 'mono' }, p.id))),
      h('div', { class: 'actions' }, archiveBtn)),
    result,
    h('section', { class: 'panel', 'aria-labelledby': 'p-key' },
      h('h2', { id: 'p-key' }, 'Encryption'),
      h('dl', { class: 'fields' },
        h('dt', null, 'External key'), h('dd', null, key ? [link(key.name, 'keys', key.id), ' ', statusBadge(key.status)] : (p.external_key_id || 'operator default key (not customer-held)')),
        h('dt', null, 'Project key version'), h('dd', null, String(p.current_key_version)),
        h('dt', null, 'Created'), h('dd', null, timeEl(p.created_at)),
        archived ? [h('dt', null, 'Archived'), h('dd', null, timeEl(p.archived_at))] : null),
      h('h3', { id: 'p-rekey' }, 'Re-key'),
      archived ? h('p', { class: 'muted' }, 'Archived projects cannot be re-keyed.') : (rekeySelect.options.length ? rekeyForm : h('p', { class: 'muted' }, 'Register another key to move this project to it.')),
      h('h3', null, 'Rotate the project key'),
      h('p', { class: 'small' }, 'A rotation makes a new project key version for new data; old versions keep decrypting (',
        h('code', null, 'ekm reencrypt'), ' moves stored files to the new version). Rotations also run on a schedule when the operator sets ',
        h('code', null, '--project-key-rotation-period'), '. Rotations appear below.'),
      archived ? h('p', { class: 'muted' }, 'Archived projects cannot be rotated.') : h('div', null, rotateBtn)),
    saBox,
    h('section', { 'aria-labelledby': 'p-events' }, h('h2', { id: 'p-events' }, 'Key changes'),
      rotations.data.length ? eventsTable(rotations.data, names(keys, [p]), 'Creation, re-keys and rotations of this project', false) : h('p', { class: 'empty' }, 'None.')));
}

async function renderServiceAccounts(box, p, archived, oneTime) {
  const base = `/v1/organization/projects/${encodeURIComponent(p.id)}/service_accounts`;
  const accounts = await listAll(base, {}, 1000);
  const once = h('div', { class: 'result', 'aria-live': 'polite' });
  const nameInput = h('input', { type: 'text', name: 'sa-name', autocomplete: 'off', maxlength: '256' });
  const nameField = field('Service account name', nameInput, 'Its project API key (sk-proj-…) authenticates the Files and crypto APIs.');
  const submit = h('button', { type: 'submit', class: 'btn', disabled: archived }, 'Create service account');
  const form = h('form', { class: 'inline-form', novalidate: true, 'aria-labelledby': 'p-sa' }, nameField.wrap, h('div', null, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    setError(nameField, '');
    const name = nameInput.value.trim();
    if (!name) { setError(nameField, 'A service account needs a name.'); nameInput.focus(); return; }
    submit.disabled = true;
    try {
      const sa = await call('POST', base, { body: { name } });
      nameInput.value = '';
      const value = sa.api_key.value;
      const code = h('code', { class: 'secret-value' }, value);
      const done = h('button', { type: 'button', class: 'btn btn-quiet' }, 'I have stored it');
      const n = notice('warn', h('h3', null, `API key of ${sa.name}`),
        h('p', null, h('strong', null, 'Copy it now: this is the only time ekm shows it. '), 'ekm stores only its hash.'),
        h('div', { class: 'secret' }, code, copyButton('API key', value)),
        h('p', { class: 'actions' }, done));
      n.setAttribute('data-outcome', 'created');
      done.addEventListener('click', () => { n.remove(); box.querySelector('input[name="sa-name"]').focus(); });
      await renderServiceAccounts(box, p, archived, n);
    } catch (err) {
      replace(once, apiErrorNotice(err, 'The service account was not created.'));
      once.firstChild.focus();
      submit.disabled = false;
    }
  });
  if (oneTime) add(once, oneTime);
  replace(box,
    h('h2', { id: 'p-sa', tabindex: '-1' }, 'Service accounts'),
    archived ? h('p', { class: 'muted' }, 'Archived projects cannot get service accounts.') : form,
    once,
    accounts.length ? h('table', { class: 'service-accounts' },
      h('caption', null, `${accounts.length} service account${accounts.length === 1 ? '' : 's'}`),
      h('thead', null, h('tr', null, ['Name', 'Id', 'Role', 'Created', ''].map((t) => h('th', { scope: 'col' }, t || h('span', { class: 'visually-hidden' }, 'Actions'))))),
      h('tbody', null, accounts.map((sa) => {
        const del = h('button', { type: 'button', class: 'btn btn-quiet btn-small' }, 'Delete');
        del.setAttribute('aria-label', `Delete service account ${sa.name}`);
        del.addEventListener('click', async () => {
          const ok = await confirmDialog(`Delete ${sa.name}?`, 'Its project API key stops working at once.', 'Delete service account', true);
          if (!ok) return;
          try {
            await call('DELETE', `${base}/${encodeURIComponent(sa.id)}`);
            toast(`Deleted service account ${sa.name}.`);
            await renderServiceAccounts(box, p, archived);
            box.querySelector('h2').focus();
          } catch (err) {
            replace(once, apiErrorNotice(err, 'Deleting failed.'));
          }
        });
        return h('tr', { 'data-sa': sa.id },
          h('td', null, sa.name), h('td', { class: 'mono small' }, sa.id), h('td', null, sa.role), h('td', null, timeEl(sa.created_at)), h('td', null, del));
      })))
      : h('p', { class: 'empty' }, 'No service accounts.'));
  const ot = once.querySelector('.notice');
  if (ot) ot.focus();
}
