// The API, as the page uses it. The key lives in sessionStorage and travels only in the Authorization header.
const KEY = "lector.apiKey";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
  },
};

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// fetch with the key; follows the API's 302s to signed links (which need no key).
export async function call(path, init = {}) {
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${session.key}`);
  const response = await fetch(path, { ...init, headers, cache: "no-store" });
  if (response.ok) return response;
  let code = "error", message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    code = body.error.code;
    message = body.error.message;
  } catch { /* not JSON */ }
  throw new APIError(response.status, code, message);
}

export async function json(path, init) {
  return (await call(path, init)).json();
}

export const languages = () => json("/v1/languages");

export function listJobs({ status, cursor, limit = 10 }) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (status) query.set("status", status);
  if (cursor) query.set("cursor", cursor);
  return json(`/v1/jobs?${query}`);
}

export const job = (id) => json(`/v1/jobs/${encodeURIComponent(id)}`);

export function submit(file, options) {
  const form = new FormData();
  form.append("document", file, file.name);
  form.append("options", new Blob([JSON.stringify(options)], { type: "application/json" }));
  return json("/v1/jobs", { method: "POST", body: form });
}

// The signed link behind a result format (the body is not read); null when the job has no such format.
export async function resultLink(id, format) {
  try {
    const response = await call(`/v1/jobs/${encodeURIComponent(id)}/result?format=${format}`);
    if (response.status !== 200) { response.body?.cancel(); return null; }
    response.body?.cancel();
    return response.url;
  } catch (error) {
    if (error instanceof APIError && error.status === 404) return null;
    throw error;
  }
}

// A page picture as an object URL (img-src allows blob:), or null when the job has none.
export async function pagePicture(id, page, size) {
  try {
    const response = await call(`/v1/jobs/${encodeURIComponent(id)}/pages/${page}?size=${size}`);
    if (response.status !== 200) return null;
    return URL.createObjectURL(await response.blob());
  } catch (error) {
    if (error instanceof APIError && error.status === 404) return null;
    throw error;
  }
}
