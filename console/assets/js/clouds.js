// Per-cloud onboarding templates (assets/clouds/<type>.json): the
// customer's commands for each onboarding step, exactly as in the cloud's
// doc (docs/azure.md, aws.md, gcp.md, oci.md), with $VARIABLES the console
// fills in, and the fix for each diagnosis code. Key types without a
// template show their steps and fields only.
import { h } from './dom.js';

const cache = new Map();

export async function loadTemplate(type) {
  if (!/^[a-z0-9_]{1,64}$/.test(type)) return null;
  if (!cache.has(type)) {
    cache.set(type, (async () => {
      const res = await fetch(new URL(`assets/clouds/${type}.json`, document.baseURI), { credentials: 'omit', cache: 'no-cache' });
      if (!res.ok) return null;
      return res.json();
    })().catch(() => null));
  }
  return cache.get(type);
}

// Values that may be put into a command: anything else stays a $VARIABLE
// (or <placeholder>) for the customer to fill in.
const safeValue = /^[A-Za-z0-9._:\/-]{1,200}$/;

// fill replaces $NAME and <placeholder> tokens whose values are known.
export function fill(text, values, placeholders) {
  let out = text.replace(/\$([A-Z][A-Z0-9_]*)/g, (m, name) => {
    const v = values[name];
    return v && safeValue.test(v) ? v : m;
  });
  for (const [ph, name] of Object.entries(placeholders || {})) {
    const v = values[name];
    if (v && safeValue.test(v)) out = out.split(ph).join(v);
  }
  return out;
}

// stepIds splits a diagnosis step ("2,4") into its parts.
export function stepIds(step) {
  return String(step || '').split(',').map((s) => s.trim()).filter(Boolean);
}

// failedSteps names the onboarding steps a diagnosis points at, with their
// titles: [{id, title}].
export function failedSteps(step, type) {
  const ids = stepIds(step);
  return (type.onboarding_steps || []).filter((s) => ids.includes(s.step)).map((s) => ({ id: s.step, title: s.title }));
}

// diagnosisDetails explains a diagnosis code: the steps to fix, the code's
// description from the driver's Spec and the template's fix.
export function diagnosisDetails(code, step, type, tpl, values, withSteps = true) {
  const spec = (type.codes || []).find((c) => c.code === code);
  const steps = withSteps ? failedSteps(step || (spec && spec.step), type) : [];
  const fix = tpl && tpl.fixes && tpl.fixes[code] ? fill(tpl.fixes[code], values || {}, tpl.placeholders) : '';
  return h('div', { class: 'diagnosis-details' },
    steps.length ? h('p', null, h('strong', null, steps.length > 1 ? 'Steps to check: ' : 'Step to check: '),
      steps.map((s, i) => [i ? '; ' : '', `${s.id}. ${s.title}`])) : null,
    spec ? h('p', { class: 'small' }, h('strong', null, 'Cause: '), spec.description, spec.class ? ` (class: ${spec.class})` : '') : null,
    fix ? h('p', null, h('strong', null, 'Fix: '), fix) : null);
}
