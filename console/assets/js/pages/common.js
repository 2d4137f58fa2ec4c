// Data several pages need.
import { listAll } from '../api.js';

// loadKeys returns every external key of the org.
export function loadKeys() {
  return listAll('/v1/organization/external_keys', {}, 1000);
}

// loadProjects returns every project, archived ones included.
export function loadProjects() {
  return listAll('/v1/organization/projects', { include_archived: 'true' }, 2000);
}

// names maps ids to names for links in events and tables.
export function names(keys, projects) {
  return {
    keys: new Map((keys || []).map((k) => [k.id, k.name])),
    projects: new Map((projects || []).map((p) => [p.id, p.name])),
  };
}

// REFRESH_MS is how often pages that show key health poll the API while
// visible (a revocation shows within the server's probe interval plus this).
export const REFRESH_MS = 2000;
