// Drives ekm's Admin, Files and crypto APIs with the official OpenAI Node
// SDK (`openai` on npm), the way a vendor's Node service would. Run by
// internal/apispec's TestNodeSDK through a proxy that checks every
// exchange against docs/openapi.yaml; docs/API.md lists the version that
// passed.
//
//   EKM_URL=http://127.0.0.1:8080 EKM_ADMIN_KEY=sk-admin-… \
//   EKM_OPENAI_NODE=<dir with node_modules/openai> node scripts/sdk-node/smoke.mjs
//
// It prints the SDK version and exits non-zero on the first failure.
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const dir = process.env.EKM_OPENAI_NODE;
const require = createRequire(dir ? dir.replace(/\/?$/, '/') : import.meta.url);
const OpenAI = require('openai');
const { toFile } = require('openai');
const { VERSION: version } = require('openai/version');

const baseURL = process.env.EKM_URL.replace(/\/$/, '') + '/v1';
const adminKey = process.env.EKM_ADMIN_KEY;
const admin = new OpenAI({ baseURL, adminAPIKey: adminKey, apiKey: null, maxRetries: 0 });
const org = admin.admin.organization;

// A local key through the SDK's generic request (its types list only the
// cloud providers).
const key = await admin.post('/organization/external_keys', { body: { type: 'local', name: 'node dev key' }, __security: { adminAPIKeyAuth: true } });
assert.equal(key.object, 'organization.external_key');
assert.equal((await org.externalKeys.retrieve(key.id)).id, key.id);
assert.equal((await org.externalKeys.validate(key.id)).status, 'valid');
const keys = [];
for await (const k of org.externalKeys.list({ limit: 1 })) keys.push(k.id);
assert.ok(keys.includes(key.id));

const project = await org.projects.create({ name: 'node', external_key_id: key.id });
assert.equal(project.external_key_id, key.id);
await org.projects.update(project.id, { name: 'node 2' });
assert.equal((await org.projects.retrieve(project.id)).name, 'node 2');

const sa = await org.projects.serviceAccounts.create(project.id, { name: 'backend' });
assert.match(sa.api_key.value, /^sk-proj-/);
assert.equal((await org.projects.serviceAccounts.retrieve(sa.id, { project_id: project.id })).id, sa.id);
const projectKeys = (await org.projects.apiKeys.list(project.id)).data;
assert.equal(projectKeys.length, 1);
assert.equal((await org.projects.apiKeys.retrieve(projectKeys[0].id, { project_id: project.id })).owner.type, 'service_account');

// Files with the project key.
const data = new OpenAI({ baseURL, apiKey: sa.api_key.value, maxRetries: 0 });
const content = 'hello from node\n'.repeat(1000);
const file = await data.files.create({ file: await toFile(Buffer.from(content), 'hello.txt'), purpose: 'assistants' });
assert.equal(file.status, 'processed');
assert.equal((await data.files.retrieve(file.id)).filename, 'hello.txt');
assert.equal(await (await data.files.content(file.id)).text(), content);
assert.ok((await data.files.list({ purpose: 'assistants' })).data.some((f) => f.id === file.id));
assert.equal((await data.files.delete(file.id)).deleted, true);

// The crypto API has no SDK call: the SDK's generic request.
const ct = await data.post('/crypto/encrypt', { body: { plaintext: Buffer.from('secret').toString('base64') } });
const pt = await data.post('/crypto/decrypt', { body: { ciphertext: ct.ciphertext } });
assert.equal(Buffer.from(pt.plaintext, 'base64').toString(), 'secret');

// Errors are the SDK's error classes.
await assert.rejects(org.projects.retrieve('proj_doesnotexist'), (e) => e instanceof OpenAI.NotFoundError && e.code === 'not_found');
await assert.rejects(data.files.retrieve('file-doesnotexist'), OpenAI.NotFoundError);

// Admin keys and the audit log.
const ak = await org.adminAPIKeys.create({ name: 'node' });
assert.match(ak.value, /^sk-admin-/);
assert.equal((await org.adminAPIKeys.retrieve(ak.id)).id, ak.id);
assert.equal((await org.adminAPIKeys.delete(ak.id)).deleted, true);
const events = [];
for await (const ev of org.auditLogs.list({ event_types: ['project.created', 'api_key.created'], limit: 2, effective_at: { gte: 0 } })) events.push(ev.type);
assert.ok(events.includes('project.created'), events.join());

// Tear down.
await org.projects.apiKeys.delete(projectKeys[0].id, { project_id: project.id });
await org.projects.serviceAccounts.delete(sa.id, { project_id: project.id });
assert.equal((await org.projects.archive(project.id)).status, 'archived');

console.log(JSON.stringify({ sdk: 'openai', version, node: process.version, ok: true }));
