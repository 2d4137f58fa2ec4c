// DOM helpers. Every string given to them becomes a text node or an
// attribute value: nothing here (or anywhere in the console) parses HTML,
// so names, messages and audit payloads from the server are shown as text.

// h creates an element. attrs: "class", "on<event>" (functions only),
// boolean true for empty attributes; null/false/undefined are skipped.
// Children: nodes, strings, numbers, arrays of them; null/false skipped.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) {
      if (typeof v !== 'function') throw new Error('event handler must be a function: ' + k);
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'value' && (tag === 'input' || tag === 'select' || tag === 'textarea')) {
      el.value = v;
    } else if (k === 'checked' || k === 'disabled' || k === 'selected') {
      el[k] = Boolean(v);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
  add(el, children);
  return el;
}

// add appends children (as h does) to el.
export function add(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// replace empties el and appends children.
export function replace(el, ...children) {
  el.replaceChildren();
  return add(el, ...children);
}

// link is an in-console link (hash route). Parts are URI-encoded.
export function link(text, ...parts) {
  return h('a', { href: route(...parts) }, text);
}

export function route(...parts) {
  return '#/' + parts.map((p) => encodeURIComponent(String(p))).join('/');
}

let seq = 0;
// uid returns a document-unique id for label/aria wiring.
export function uid(prefix) {
  seq += 1;
  return `${prefix || 'id'}-${seq}`;
}

// field is a labelled input with optional help text and an error slot.
// Returns {wrap, input, error, help}.
export function field(label, input, helpText) {
  const id = input.id || uid('f');
  input.id = id;
  const help = helpText ? h('div', { class: 'help', id: id + '-help' }, helpText) : null;
  const error = h('div', { class: 'error', id: id + '-error', hidden: true });
  const described = [help ? help.id : null, error.id].filter(Boolean).join(' ');
  input.setAttribute('aria-describedby', described);
  const wrap = h('div', { class: 'field' }, h('label', { for: id }, label), input, help, error);
  return { wrap, input, error, help };
}

export function setError(f, message) {
  if (message) {
    f.error.textContent = message;
    f.error.hidden = false;
    f.input.setAttribute('aria-invalid', 'true');
  } else {
    f.error.textContent = '';
    f.error.hidden = true;
    f.input.removeAttribute('aria-invalid');
  }
}

// time formats unix seconds as local "YYYY-MM-DD HH:MM:SS".
export function time(sec) {
  if (!sec) return '—';
  const d = new Date(sec * 1000);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// timeEl is a <time> with the local time as text and the UTC instant as
// its datetime attribute and title.
export function timeEl(sec) {
  if (!sec) return '—';
  const iso = new Date(sec * 1000).toISOString();
  return h('time', { datetime: iso, title: iso }, time(sec));
}

// duration formats seconds as "3 d 4 h", "2 h 5 min", "4 min 3 s", "12 s".
export function duration(s) {
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), ss = s % 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${m} min`;
  if (m) return `${m} min ${ss} s`;
  return `${ss} s`;
}

export function ago(sec) {
  return duration(Date.now() / 1000 - sec) + ' ago';
}

// copyButton copies text() to the clipboard; it says so in its label and
// in the page's status region.
export function copyButton(label, text) {
  const b = h('button', { type: 'button', class: 'btn btn-quiet btn-small' }, 'Copy');
  b.setAttribute('aria-label', 'Copy ' + label);
  b.addEventListener('click', async () => {
    const value = typeof text === 'function' ? text() : text;
    let ok = false;
    try {
      await navigator.clipboard.writeText(value);
      ok = true;
    } catch {
      ok = false;
    }
    b.textContent = ok ? 'Copied' : 'Select and copy';
    toast(ok ? `Copied ${label}.` : `The browser refused clipboard access: select the text and copy it.`);
    setTimeout(() => { b.textContent = 'Copy'; }, 2000);
  });
  return b;
}

let toastTimer = null;
export function toast(message) {
  const t = document.getElementById('toast');
  if (!t) return;
  t.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.textContent = ''; }, 4000);
}

// confirmDialog asks a yes/no question in a modal <dialog>; resolves true
// when confirmed. Focus starts on Cancel and returns to the opener.
export function confirmDialog(title, body, confirmLabel, danger) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const titleId = uid('dlg');
    const cancel = h('button', { type: 'button', class: 'btn btn-quiet' }, 'Cancel');
    const ok = h('button', { type: 'button', class: danger ? 'btn btn-danger' : 'btn' }, confirmLabel);
    const dlg = h('dialog', { 'aria-labelledby': titleId },
      h('h2', { id: titleId }, title),
      typeof body === 'string' ? h('p', null, body) : body,
      h('div', { class: 'actions' }, cancel, ok));
    let result = false;
    cancel.addEventListener('click', () => dlg.close());
    ok.addEventListener('click', () => { result = true; dlg.close(); });
    dlg.addEventListener('close', () => {
      dlg.remove();
      if (opener && opener.focus) opener.focus();
      resolve(result);
    });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

// notice is a message block; kind: error, ok, warn, info.
export function notice(kind, ...children) {
  return h('div', { class: 'notice notice-' + kind, role: kind === 'error' ? 'alert' : null, tabindex: '-1' }, ...children);
}

// apiErrorNotice shows an API error exactly as the server worded it, with
// its code and ekm's request id (to find the call in ekm's logs and in
// kms.call audit events).
export function apiErrorNotice(err, prefix) {
  const parts = [];
  if (prefix) parts.push(h('strong', null, prefix + ' '));
  parts.push(h('span', { class: 'server-message' }, err.message || String(err)));
  const meta = [];
  if (err.code) meta.push(h('span', null, 'code ', h('code', null, err.code)));
  if (err.status) meta.push(h('span', null, ' · HTTP ' + err.status));
  if (err.requestId) meta.push(h('span', null, ' · ekm request id ', h('code', null, err.requestId)));
  return notice('error', h('p', null, parts), meta.length ? h('p', { class: 'small' }, meta) : null);
}
