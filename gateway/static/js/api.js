// Thin client for the gateway REST API (docs/API.md). URLs are relative to the page so
// that the page also works behind a reverse proxy that mounts the gateway under a prefix.

const KEY_STORAGE = "elastichash.apiKey";

export function getApiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled (private mode, file://): run without a key
  }
}

export function setApiKey(value) {
  try {
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
    return true;
  } catch {
    return false;
  }
}

/** Resolve an API path ("v1/stats") or a URL the API handed out ("/v1/images/x/thumbnail"). */
export function apiUrl(path) {
  if (/^[a-z][a-z0-9+.-]*:/i.test(path)) return path; // absolute (external thumbnail)
  if (path.startsWith("/")) return new URL(path.slice(1), document.baseURI).href;
  return new URL(path, document.baseURI).href;
}

/** An API failure carrying the stable error code, message and per-item errors. */
export class ApiError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = extra.field ?? null;
    this.errors = extra.errors ?? [];
  }
}

/** Build an ApiError from a status and a (maybe JSON) body of the {"error": {...}} shape. */
export function errorFrom(status, bodyText) {
  let body = null;
  try {
    body = bodyText ? JSON.parse(bodyText) : null;
  } catch {
    body = null;
  }
  const e = body && typeof body === "object" ? body.error : null;
  if (e && typeof e === "object") {
    return new ApiError(status, e.code || "error", e.message || `HTTP ${status}`, {
      field: e.field,
      errors: Array.isArray(body.errors) ? body.errors : [],
    });
  }
  const snippet = (bodyText || "").trim().slice(0, 200);
  const code = status === 0 ? "network" : `http_${status}`;
  const msg = status === 0 ? "The server could not be reached." : `HTTP ${status}${snippet ? `: ${snippet}` : ""}`;
  return new ApiError(status, code, msg);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const key = getApiKey();
  if (key) h["X-API-Key"] = key;
  return h;
}

/** fetch + JSON + error shape. `body` may be FormData or a plain object (sent as JSON). */
export async function request(method, path, body = undefined, { signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let res;
  try {
    res = await fetch(apiUrl(path), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The server could not be reached.");
  }
  const text = await res.text();
  if (!res.ok) throw errorFrom(res.status, text);
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(res.status, "bad_response", "The server sent a response that is not JSON.");
  }
}

export const getStats = () => request("GET", "v1/stats");
export const getImage = (id) => request("GET", `v1/images/${encodeURIComponent(id)}`);
export const getFailures = (limit = 50) => request("GET", `v1/failures?limit=${limit}`);
export const search = (body, opts) => request("POST", "v1/search", body, opts);

/**
 * Upload files with POST /v1/images through XMLHttpRequest, because fetch cannot report
 * upload progress. Resolves with the parsed 202 body; rejects with ApiError.
 */
export function uploadFiles(files, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const f of files) form.append("file", f, f.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl("v1/images"));
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) onProgress(ev.loaded / ev.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, "bad_response", "The server sent a response that is not JSON."));
        }
      } else {
        reject(errorFrom(xhr.status, xhr.responseText));
      }
    });
    xhr.addEventListener("error", () => reject(errorFrom(0, "")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "Upload cancelled.")));
    xhr.send(form);
  });
}

/** Human wording for an ApiError, with a hint for the one the user can fix here. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  if (err.code === "unauthorized") {
    return `${err.message} — set an API key under Settings.`;
  }
  return `${err.message} (${err.code})`;
}
