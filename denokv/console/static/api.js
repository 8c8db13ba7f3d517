// Calls to the console's JSON API. The session cookie is HttpOnly, so this
// module never sees it; it keeps only the CSRF token the server handed out and
// sends it on every POST.

let csrf = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, text, body = null) {
    super(text || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function setCsrf(token) {
  csrf = token;
}

export function onSignedOut(fn) {
  listeners.add(fn);
}

function url(path, params = {}) {
  const u = new URL(`/console/api/${path}`, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, v);
  }
  return u;
}

async function check(response) {
  if (response.ok) return response;
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  const text = body ? body.message || body.error : await response.text();
  if (response.status === 401) listeners.forEach((fn) => fn(text));
  throw new ApiError(response.status, text, body);
}

export async function get(path, params) {
  const response = await fetch(url(path, params), { credentials: "same-origin" });
  return (await check(response)).json();
}

export async function post(path, body, contentType = "application/json") {
  const response = await fetch(url(path), {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": contentType, "x-csrf-token": csrf || "" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return (await check(response)).json();
}

export function exportUrl(prefixText) {
  return url("export", { prefix: prefixText }).toString();
}

// A stream of JSON lines (live updates). Reconnects after errors until `signal` aborts.
export function stream(path, body, onMessage, signal) {
  let delay = 500;
  const run = async () => {
    while (!signal.aborted) {
      try {
        const response = await check(await fetch(url(path), {
          method: "POST",
          credentials: "same-origin",
          headers: { "content-type": "application/json", "x-csrf-token": csrf || "" },
          body: JSON.stringify(body),
          signal,
        }));
        delay = 500;
        await readLines(response.body, onMessage);
      } catch (err) {
        if (signal.aborted || (err instanceof ApiError && err.status < 500)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  };
  run();
}

async function readLines(body, onMessage) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.trim()) onMessage(JSON.parse(line));
    }
  }
}
