// The read API, with the key from sessionStorage as a bearer token. Nothing else is fetched.

const KEY = 'jieneng.apiKey';

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function apiKey() { return sessionStorage.getItem(KEY); }
export function setApiKey(k) { sessionStorage.setItem(KEY, k); }
export function clearApiKey() { sessionStorage.removeItem(KEY); }

/** GET `/api/v1/<path>` with query `params`; JSON, or an ApiError with the server's reason. */
export async function get(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const url = `/api/v1/${path}${q.toString() ? `?${q}` : ''}`;
  const r = await fetch(url, { headers: { Authorization: `Bearer ${apiKey() ?? ''}`, Accept: 'application/json' } });
  if (!r.ok) {
    let msg = `${r.status}`;
    try { msg = (await r.json()).error ?? msg; } catch { /* not JSON */ }
    throw new ApiError(r.status, msg);
  }
  return r.json();
}
