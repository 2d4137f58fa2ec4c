// The console's shell: sign-in, navigation and the hash router.
import { session, call, clearCaches, APIError } from './api.js';
import { h, replace, field, setError, notice, apiErrorNotice } from './dom.js';
import { overviewPage } from './pages/overview.js';
import { keysPage, keyPage } from './pages/keys.js';
import { registerPage, wizardPage } from './pages/register.js';
import { projectsPage, projectPage } from './pages/projects.js';
import { auditPage } from './pages/audit.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const orgEl = document.getElementById('org');
const signoutBtn = document.getElementById('signout');

// Routes: [pattern segments, nav key, page]. ":x" captures a segment.
const routes = [
  [[], 'overview', overviewPage],
  [['keys'], 'keys', keysPage],
  [['keys', ':id'], 'keys', keyPage],
  [['register'], 'register', registerPage],
  [['register', ':type'], 'register', wizardPage],
  [['projects'], 'projects', projectsPage],
  [['projects', ':id'], 'projects', projectPage],
  [['audit'], 'audit', auditPage],
];

// parseHash splits "#/a/b?x=1" into segments and query.
export function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, '');
  const [p, q] = raw.split('?');
  const segs = p ? p.split('/').map((s) => { try { return decodeURIComponent(s); } catch { return s; } }) : [];
  return { segs, query: new URLSearchParams(q || '') };
}

function match(segs) {
  for (const [pat, navKey, page] of routes) {
    if (pat.length !== segs.length) continue;
    const params = {};
    let ok = true;
    pat.forEach((p, i) => {
      if (p.startsWith(':')) params[p.slice(1)] = segs[i];
      else if (p !== segs[i]) ok = false;
    });
    if (ok) return { navKey, page, params };
  }
  return null;
}

let cleanup = null;
let renderSeq = 0;

// A page gets ctx: {params, query, main, alive(), every(ms, fn)}. Timers
// registered with every stop when the page is left.
async function render() {
  if (cleanup) { cleanup(); cleanup = null; }
  const seq = ++renderSeq;
  if (!session.signedIn) {
    showSignedOut();
    signInPage();
    main.dataset.rendered = window.location.hash || '#/';
    return;
  }
  delete main.dataset.rendered;
  const { segs, query } = parseHash();
  const m = match(segs);
  for (const a of nav.querySelectorAll('a')) {
    if (m && a.dataset.nav === m.navKey) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!m) {
    replace(main, h('h1', { tabindex: '-1' }, 'Not found'), h('p', null, 'No console page has this address. ', h('a', { href: '#/' }, 'Go to the overview.')));
    focusHeading();
    return;
  }
  const timers = [];
  cleanup = () => timers.forEach((t) => clearInterval(t));
  const ctx = {
    params: m.params, query, main,
    alive: () => seq === renderSeq,
    every(ms, fn) {
      const t = setInterval(() => { if (seq === renderSeq && !document.hidden) fn(); }, ms);
      timers.push(t);
    },
  };
  replace(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    await m.page(ctx);
  } catch (err) {
    if (seq !== renderSeq) return;
    if (err instanceof APIError && err.status === 401) return; // signed out meanwhile
    replace(main, h('h1', { tabindex: '-1' }, 'Something went wrong'), err instanceof APIError ? apiErrorNotice(err) : notice('error', String(err)));
  }
  if (seq === renderSeq) {
    focusHeading();
    // Marks the page as rendered for this address (tests wait for it).
    main.dataset.rendered = window.location.hash || '#/';
  }
}

// focusHeading moves focus to the page's heading after navigation, so
// keyboard and screen reader users start at the new content.
let firstRender = true;
function focusHeading() {
  const h1 = main.querySelector('h1');
  if (!h1) return;
  h1.setAttribute('tabindex', '-1');
  const title = h1.textContent;
  document.title = title + ' · ekm console';
  if (firstRender) { firstRender = false; return; }
  h1.focus({ preventScroll: false });
}

function showSignedOut() {
  nav.hidden = true;
  orgEl.hidden = true;
  signoutBtn.hidden = true;
}

function showSignedIn(org) {
  nav.hidden = false;
  orgEl.hidden = false;
  orgEl.textContent = `${org.name} · ${org.id}`;
  orgEl.title = `Signed in with admin key ${org.admin_api_key.name} (${org.admin_api_key.redacted_value})`;
  signoutBtn.hidden = false;
}

let signInMessage = '';

function signInPage() {
  const input = h('input', { type: 'password', name: 'admin-key', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off', required: true, class: 'mono' });
  const f = field('Admin API key', input, 'An organization admin key (sk-admin-…), from "ekm org create" or the Admin API. The console keeps it in this tab\'s memory only: reloading or closing the tab signs you out.');
  const submit = h('button', { type: 'submit', class: 'btn' }, 'Sign in');
  const status = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'stack', novalidate: true }, f.wrap, h('div', null, submit), status);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    setError(f, '');
    if (!key.startsWith('sk-admin-')) {
      setError(f, 'An admin key starts with sk-admin-.');
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      // Check the key before keeping it.
      const org = await call('GET', '/v1/organization/me', { key });
      input.value = '';
      session.signIn(key);
      clearCaches();
      showSignedIn(org);
      signInMessage = '';
      if (window.location.hash === '' || window.location.hash === '#/signin') window.location.hash = '#/';
      firstRender = false;
      render();
    } catch (err) {
      submit.disabled = false;
      setError(f, err.status === 401 ? 'This key was not accepted: it is unknown, deleted, or not an admin key.' : err.message);
      input.focus();
    }
  });
  replace(main,
    h('div', { class: 'signin panel' },
      h('h1', { tabindex: '-1' }, 'Sign in'),
      h('p', { class: 'muted' }, 'Manage your organization\'s customer keys, projects and audit log.'),
      signInMessage ? notice('warn', signInMessage) : null,
      form));
  document.title = 'Sign in · ekm console';
  input.focus();
}

function signOut(message) {
  session.signOut();
  clearCaches();
  signInMessage = message || '';
  // Drop everything rendered with the key, then show the sign-in form.
  replace(main);
  showSignedOut();
  render();
}

signoutBtn.addEventListener('click', () => signOut('You signed out. The key is no longer held by this page.'));
session.onExpired(() => signOut('The server no longer accepts the admin key (it may have been deleted). Sign in again.'));
window.addEventListener('hashchange', () => render());

render();
