// The Admin API client. The admin key lives only in this module's closure:
// never in localStorage, sessionStorage, a cookie or the URL, and not on
// window. It is sent as a bearer header (no cookie, so no CSRF). fetch is
// captured when the module loads, so a later change to window.fetch does
// not see the key. Responses are never cached by the browser.

const nativeFetch = window.fetch.bind(window);
const nativeHeaders = window.Headers;

let adminKey = null;
let onUnauthorized = null;

export const session = {
  signIn(key) { adminKey = key; },
  signOut() { adminKey = null; },
  get signedIn() { return adminKey !== null; },
  // onExpired is called when the server refuses the key (401), e.g. after
  // it was deleted.
  onExpired(fn) { onUnauthorized = fn; },
};

export class APIError extends Error {
  constructor(status, body, requestId) {
    const e = (body && body.error) || {};
    super(e.message || (status ? `The server answered HTTP ${status}.` : 'The server could not be reached.'));
    this.status = status;
    this.code = e.code || '';
    this.param = e.param || '';
    this.step = e.step || '';
    this.type = e.type || '';
    this.requestId = requestId || '';
  }
}

// call sends one Admin API request. query: {name: value | [values]}
// (arrays use the SDK's bracket form, name[]). Answers the decoded JSON;
// throws APIError.
export async function call(method, path, { query, body, key } = {}) {
  if (!path.startsWith('/v1/organization/')) throw new Error('not an Admin API path: ' + path);
  const useKey = key !== undefined ? key : adminKey;
  if (!useKey) throw new APIError(401, { error: { message: 'Not signed in.' } }, '');
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k + '[]', x));
    else url.searchParams.set(k, String(v));
  }
  const headers = new nativeHeaders({ Authorization: 'Bearer ' + useKey, Accept: 'application/json' });
  if (body !== undefined) headers.set('Content-Type', 'application/json');
  let res;
  try {
    res = await nativeFetch(url.toString(), {
      method, headers, body: body !== undefined ? JSON.stringify(body) : undefined,
      cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer', mode: 'same-origin',
    });
  } catch {
    throw new APIError(0, null, '');
  }
  const requestId = res.headers.get('X-Request-Id') || '';
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const err = new APIError(res.status, data, requestId);
    if (res.status === 401 && key === undefined && onUnauthorized) onUnauthorized(err);
    throw err;
  }
  return data;
}

// listAll pages through a list (after/has_more) up to max items.
export async function listAll(path, query, max) {
  const out = [];
  let after;
  const limit = 100;
  for (;;) {
    const page = await call('GET', path, { query: { ...(query || {}), limit, after } });
    out.push(...page.data);
    if (!page.has_more || !page.last_id || out.length >= (max || 1000)) return out;
    after = page.last_id;
  }
}

// Cached per sign-in: the key types rarely change, and /me not at all.
let typesCache = null;
let meCache = null;
export async function keyTypes() {
  if (!typesCache) typesCache = call('GET', '/v1/organization/external_key_types').then((p) => p.data);
  try { return await typesCache; } catch (e) { typesCache = null; throw e; }
}
export async function me() {
  if (!meCache) meCache = call('GET', '/v1/organization/me');
  try { return await meCache; } catch (e) { meCache = null; throw e; }
}
export function clearCaches() { typesCache = null; meCache = null; }

// Health-related audit events of external keys.
export const healthEventTypes = ['external_key.registered', 'external_key.validated', 'external_key.unavailable',
  'external_key.degraded', 'external_key.restored'];

// healthEvents fetches the org's recent key health events, newest first
// (at most max): the console reads health history from the audit log.
export async function healthEvents(max) {
  return listAudit({ event_types: healthEventTypes }, max || 500);
}

// listAudit pages through the audit log (newest first) up to max events.
export async function listAudit(query, max) {
  const out = [];
  let after;
  for (;;) {
    const page = await call('GET', '/v1/organization/audit_logs', { query: { ...query, limit: 100, after } });
    out.push(...page.data);
    if (!page.has_more || out.length >= max) return out.slice(0, max);
    after = page.last_id;
  }
}
