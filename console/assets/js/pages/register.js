// Register a key: the key types from GET /external_key_types, and a wizard
// per type: the customer's onboarding steps (with the commands of the
// type's template, values filled in), then the registration form with live
// checks. A failed registration highlights the onboarding step(s) its
// diagnosis names, with the fix.
import { call, keyTypes, me } from '../api.js';
import { h, replace, add, link, route, field, setError, notice, apiErrorNotice, copyButton, uid } from '../dom.js';
import { loadTemplate, fill, stepIds, diagnosisDetails } from '../clouds.js';

export async function registerPage(ctx) {
  const types = await keyTypes();
  const customer = types.filter((t) => !t.development);
  const dev = types.filter((t) => t.development);
  const card = (t) => h('div', { class: 'typecard', 'data-type': t.type },
    h('h2', null, t.title || t.type),
    h('p', null, t.enabled ? h('span', { class: 'badge badge-healthy' }, 'Available')
      : h('span', { class: 'badge badge-neutral' }, 'Not enabled on this server')),
    h('p', { class: 'small muted' }, `${(t.onboarding_steps || []).length} onboarding steps · type `, h('code', null, t.type)),
    t.enabled ? h('a', { class: 'btn', href: route('register', t.type) }, `Start the ${t.title || t.type} wizard`)
      : h('a', { href: route('register', t.type) }, 'Preview the onboarding steps'));
  replace(ctx.main,
    h('h1', null, 'Register a key'),
    h('p', { class: 'muted' }, 'Choose where your key lives. Each wizard lists the steps to run in your own cloud account, with your values filled in, then registers the key and proves it works.'),
    h('div', { class: 'typecards' }, customer.map(card)),
    dev.length ? [h('h2', null, 'For development'),
      h('p', { class: 'small muted' }, 'These keys are held by the ekm server itself: they do not put data under a key you control.'),
      h('div', { class: 'typecards' }, dev.map(card))] : null);
}

export async function wizardPage(ctx) {
  const [types, org] = await Promise.all([keyTypes(), me()]);
  const type = types.find((t) => t.type === ctx.params.type);
  if (!type) {
    replace(ctx.main, h('h1', null, 'Unknown key type'), h('p', null, 'This server does not know that key type. ', link('Choose a key type', 'register'), '.'));
    return;
  }
  const tpl = await loadTemplate(type.type);
  const values = { ORG_ID: org.id, EKM_ORIGIN: window.location.origin };
  for (const [name, idField] of Object.entries((tpl && tpl.identity) || {})) {
    if (type.identity && type.identity[idField]) values[name] = type.identity[idField];
  }
  const refreshers = []; // re-fill commands when a value changes

  // --- Your values (inputs the commands use) and ours.
  const valueInputs = [];
  let valuesPanel = null;
  if (tpl && tpl.inputs && tpl.inputs.length) {
    const fields = tpl.inputs.map((inp) => {
      const input = h('input', { type: 'text', name: inp.name, autocomplete: 'off', spellcheck: 'false', class: 'mono', 'data-var': inp.name });
      const f = field(inp.label, input, inp.help ? h('span', null, 'Find it with ', h('code', null, inp.help)) : null);
      const re = new RegExp(inp.pattern);
      input.addEventListener('input', () => {
        const v = input.value.trim();
        const ok = v === '' || re.test(v);
        setError(f, ok ? '' : inp.message);
        values[inp.name] = ok ? v : '';
        refreshers.forEach((fn) => fn());
      });
      valueInputs.push(f);
      return f.wrap;
    });
    const ours = [['Your organization id', org.id]];
    for (const [name, idField] of Object.entries(tpl.identity || {})) {
      if (values[name]) ours.push([`ekm's ${idField.replace(/_/g, ' ')}`, values[name]]);
    }
    valuesPanel = h('section', { class: 'panel', 'aria-labelledby': 'w-values' },
      h('h2', { id: 'w-values' }, 'Your values'),
      h('p', { class: 'small muted' }, 'Type your own names: the commands below fill them in as you type. Nothing here is sent anywhere until you register.'),
      h('dl', { class: 'fields' }, ours.map(([k, v]) => [h('dt', null, k), h('dd', { class: 'mono' }, v, ' ', copyButton(k, v))])),
      h('div', { class: 'values' }, fields));
  } else {
    const ours = Object.entries(type.identity || {});
    valuesPanel = h('section', { class: 'panel', 'aria-labelledby': 'w-values' },
      h('h2', { id: 'w-values' }, 'Values for your set-up'),
      h('dl', { class: 'fields' },
        h('dt', null, 'Your organization id'), h('dd', { class: 'mono' }, org.id, ' ', copyButton('organization id', org.id)),
        ours.map(([k, v]) => [h('dt', null, `ekm's ${k.replace(/_/g, ' ')}`), h('dd', { class: 'mono' }, v, ' ', copyButton(k, v))])),
      !tpl && (type.onboarding_steps || []).length ? h('p', { class: 'small muted' }, 'The console has no command templates for this type yet: follow its documentation for each step.') : null);
  }

  // --- The onboarding steps.
  const stepEls = new Map();
  const failSlots = new Map();
  const steps = (type.onboarding_steps || []).map((s) => {
    const t = tpl && tpl.steps ? tpl.steps[s.step] : null;
    const headingId = uid('step');
    const slot = h('div', { class: 'step-failure', 'aria-live': 'polite' });
    const cmds = t ? (t.commands || []).map((c) => commandBlock(c.label, () => fill(c.text, values, tpl.placeholders), refreshers)) : [];
    const links = t ? (t.links || []).map((l) => {
      const a = h('a', { rel: 'noreferrer noopener', target: '_blank' }, l.label);
      const upd = () => {
        const u = fill(l.url, values, tpl.placeholders);
        if (/^https:\/\//.test(u) && !u.includes('$')) { a.setAttribute('href', u); a.removeAttribute('aria-disabled'); } else { a.removeAttribute('href'); a.setAttribute('aria-disabled', 'true'); }
      };
      refreshers.push(upd);
      upd();
      return h('p', { class: 'small' }, a, ' (fill in your tenant id first)');
    }) : [];
    const li = h('li', { class: 'step', id: `step-${s.step}`, 'data-step': s.step, tabindex: '-1', 'aria-labelledby': headingId },
      h('h3', { id: headingId }, h('span', { class: 'step-no' }, `Step ${s.step}`), h('span', null, s.title)),
      t ? h('p', null, t.text) : null,
      cmds, links, slot);
    stepEls.set(s.step, li);
    failSlots.set(s.step, slot);
    return li;
  });

  // --- The registration form.
  const nameInput = h('input', { type: 'text', name: 'name', autocomplete: 'off', value: type.type === 'local' ? 'dev key' : 'primary', maxlength: '256' });
  const nameField = field('Name', nameInput, 'How this key is called in ekm (≤ 256 characters).');
  const formFields = new Map();
  const required = [];
  const optional = [];
  const order = Object.keys((tpl && tpl.form) || {});
  const rank = (f) => (order.includes(f.name) ? order.indexOf(f.name) : order.length);
  const specFields = (type.fields || []).slice().sort((a, b) => rank(a) - rank(b));
  for (const f of specFields) {
    const input = h('input', { type: 'text', name: f.name, autocomplete: 'off', spellcheck: 'false', class: 'mono', maxlength: String(f.max_length || 2048), 'aria-required': f.required ? 'true' : null });
    const ff = field(f.name + (f.required ? '' : ' (optional)'), input, f.description);
    ff.spec = f;
    ff.touched = false;
    ff.edited = false;
    input.addEventListener('input', () => { ff.edited = true; if (ff.touched) check(ff); });
    input.addEventListener('blur', () => { ff.touched = true; check(ff); });
    formFields.set(f.name, ff);
    (f.required ? required : optional).push(ff.wrap);
  }
  // Prefill from the values until the customer edits a field.
  if (tpl && tpl.form) {
    refreshers.push(() => {
      for (const [name, text] of Object.entries(tpl.form)) {
        const ff = formFields.get(name);
        if (!ff || ff.edited) continue;
        const v = fill(text, values, tpl.placeholders);
        ff.input.value = v.includes('$') ? '' : v;
        if (ff.touched) check(ff);
      }
    });
  }

  function check(ff) {
    const v = ff.input.value.trim();
    const f = ff.spec;
    let msg = '';
    if (f.required && !v) msg = `${f.name} is required.`;
    else if (f.max_length && v.length > f.max_length) msg = `${f.name} is at most ${f.max_length} characters.`;
    else if (v && tpl && tpl.checks && tpl.checks[f.name]) {
      const c = tpl.checks[f.name];
      const re = new RegExp(fill(c.pattern, { ORG_ID: escapeRe(org.id) }));
      if (!re.test(v)) msg = fill(c.message, values);
    } else if (!v && tpl && tpl.checks && tpl.checks[f.name]) {
      msg = '';
    }
    setError(ff, msg);
    return !msg;
  }

  const submit = h('button', { type: 'submit', class: 'btn', disabled: !type.enabled }, 'Register and verify');
  const result = h('div', { class: 'result' });
  const form = h('form', { class: 'stack', novalidate: true, 'aria-labelledby': 'w-register' },
    nameField.wrap, required,
    optional.length ? h('details', null, h('summary', null, 'Optional fields'), h('div', { class: 'stack' }, optional)) : null,
    h('div', { class: 'actions' }, submit, !type.enabled ? h('span', { class: 'muted' }, 'This key type is not enabled on this server: its operator has not configured it.') : null));

  function clearFailures() {
    for (const [id, li] of stepEls) {
      li.classList.remove('step-failed', 'step-ok');
      li.removeAttribute('aria-invalid');
      replace(failSlots.get(id));
    }
    for (const ff of formFields.values()) setError(ff, '');
    setError(nameField, '');
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearFailures();
    replace(result);
    let firstBad = null;
    if (!nameInput.value.trim()) { setError(nameField, 'Name is required.'); firstBad = nameInput; }
    for (const ff of formFields.values()) {
      ff.touched = true;
      if (!check(ff) && !firstBad) firstBad = ff.input;
    }
    if (firstBad) { firstBad.focus(); return; }
    const body = { type: type.type, name: nameInput.value.trim() };
    for (const [name, ff] of formFields) {
      const v = ff.input.value.trim();
      if (v) body[name] = v;
    }
    submit.disabled = true;
    add(result, notice('info', 'Registering: ekm checks the values, then wraps and unwraps a test key with your KMS…'));
    try {
      const key = await call('POST', '/v1/organization/external_keys', { body });
      for (const li of stepEls.values()) li.classList.add('step-ok');
      const n = notice('ok', h('h3', null, `Registered ${key.name}`),
        h('p', null, 'ekm wrapped and unwrapped a test key with it: the key works.'),
        h('p', { class: 'actions' }, h('a', { class: 'btn', href: route('keys', key.id) }, 'Open the key'),
          h('a', { class: 'btn btn-quiet', href: '#/projects?key=' + encodeURIComponent(key.id) }, 'Create a project on it')));
      n.setAttribute('data-outcome', 'registered');
      n.setAttribute('data-key', key.id);
      replace(result, n);
      n.focus();
    } catch (err) {
      replace(result, failure(err));
      const n = result.querySelector('.notice');
      if (n) n.focus();
    } finally {
      submit.disabled = !type.enabled;
    }
  });

  function failure(err) {
    const ids = stepIds(err.step);
    const known = ids.filter((id) => stepEls.has(id));
    for (const id of known) {
      const li = stepEls.get(id);
      li.classList.add('step-failed');
      li.setAttribute('aria-invalid', 'true');
      replace(failSlots.get(id), notice('error', h('strong', null, 'This step failed: '), h('span', { class: 'server-message' }, err.message),
        diagnosisDetails(err.code, '', type, tpl, values, false)));
    }
    const badField = formFields.get(err.param) || (err.param === 'name' ? nameField : null);
    if (badField) setError(badField, err.message);
    const n = apiErrorNotice(err, 'Registration failed.');
    n.setAttribute('data-outcome', 'failed');
    n.setAttribute('data-code', err.code || '');
    if (err.step) n.setAttribute('data-step', err.step);
    if (known.length) {
      add(n, diagnosisDetails(err.code, err.step, type, tpl, values),
        h('p', { class: 'actions' }, known.map((id) => {
          const b = h('button', { type: 'button', class: 'btn btn-quiet btn-small' }, `Go to step ${id}`);
          b.addEventListener('click', () => { const li = stepEls.get(id); li.scrollIntoView({ block: 'start' }); li.focus(); });
          return b;
        })));
    } else if (badField) {
      add(n, diagnosisDetails(err.code, '', type, tpl, values), h('p', { class: 'small' }, `Check the field ${err.param}.`));
    } else if (err.code) {
      add(n, diagnosisDetails(err.code, '', type, tpl, values));
    }
    return n;
  }

  refreshers.forEach((fn) => fn());
  replace(ctx.main,
    h('p', { class: 'small' }, link('Register a key', 'register'), ' / ', type.title || type.type),
    h('h1', null, `Register ${/^[aeiou]/i.test(type.title || type.type) ? 'an' : 'a'} ${type.title || type.type} key`),
    !type.enabled ? notice('warn', h('strong', null, 'Not enabled on this server. '), 'You can read the steps, but registration will be refused until the operator configures this key type.') : null,
    type.development ? notice('warn', 'This is a development key type: the key is held by the ekm server, not by you.') : null,
    tpl && tpl.intro ? h('p', null, tpl.intro) : null,
    valuesPanel,
    steps.length ? [h('h2', null, 'Onboarding steps'), h('ol', { class: 'steps' }, steps)] : null,
    h('section', { class: 'panel', 'aria-labelledby': 'w-register' },
      h('h2', { id: 'w-register' }, 'Register the key'),
      h('p', { class: 'small muted' }, 'ekm checks the values, then proves the key works with a wrap/unwrap round trip before storing anything.'),
      form, result,
      tpl && tpl.register ? h('details', null, h('summary', null, tpl.register.label), commandBlock(tpl.register.title || 'Register with curl', () => fill(tpl.register.text, values, tpl.placeholders), refreshers)) : null));
}

// commandBlock is one copyable command whose text follows the values.
function commandBlock(label, text, refreshers) {
  const code = h('code');
  const upd = () => { code.textContent = text(); };
  refreshers.push(upd);
  upd();
  return h('div', { class: 'cmd' },
    h('div', { class: 'cmd-head' }, h('span', null, label), copyButton(label.toLowerCase(), () => code.textContent)),
    h('pre', null, code));
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
