// Talking to /api/console: the API key lives in sessionStorage and goes in the Authorization header.
const KEY = "modelfab.key";
const BASE = "/api/console";

export const auth = {
  get: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const key = auth.get();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function failure(resp) {
  let code = "error";
  let message = resp.statusText;
  try {
    const body = await resp.json();
    ({ code, message } = body.error);
  } catch { /* not a JSON error body */ }
  return new ApiFailure(resp.status, code, message);
}

async function request(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}), signal };
  if (body) init.body = JSON.stringify(body);
  const resp = await fetch(BASE + path, init);
  if (!resp.ok) throw await failure(resp);
  return resp;
}

/** GET or POST JSON; throws ApiFailure(status, code, message) on an error response. */
export async function api(path, options) {
  return (await request(path, options)).json();
}

export async function text(path) {
  return (await request(path)).text();
}

const blobs = new Map();
/** An object URL for an authenticated image (img tags cannot send the Authorization header). */
export async function blobUrl(path) {
  if (!blobs.has(path)) {
    const p = request(path).then(async (r) => URL.createObjectURL(await r.blob()));
    blobs.set(path, p);
    p.catch(() => blobs.delete(path));
  }
  return blobs.get(path);
}

/** Server-sent events read through fetch (EventSource cannot send headers); calls onEvent(name, data). */
export async function streamEvents(path, onEvent, signal) {
  const resp = await request(path, { signal });
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}
