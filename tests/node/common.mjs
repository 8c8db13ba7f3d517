// Shared helpers for the Node scripts run by tests/test_node_interop.py.
// Every script takes the server URL as its first argument and the access token
// from DENO_KV_ACCESS_TOKEN, and prints exactly one line of JSON on stdout.
import { KvU64, openKv } from "@deno/kv";

export const [url, ...rest] = process.argv.slice(2);
export const args = rest;

/** Opens the remote database through the npm client's KV Connect implementation. */
export async function open(extraOptions = {}) {
  const accessToken = process.env.DENO_KV_ACCESS_TOKEN;
  if (!url || !accessToken) throw new Error("usage: node script.mjs URL (token in DENO_KV_ACCESS_TOKEN)");
  // maxRetries: 0 so that a 5xx answer fails the script instead of being retried for a minute.
  return await openKv(url, { accessToken, maxRetries: 0, ...extraOptions });
}

/** A key part as a JSON-friendly string; the same format as tests/deno/*.ts use. */
export const part = (p) =>
  typeof p === "bigint" ? `${p}n` : p instanceof Uint8Array ? `u8:${Array.from(p)}` : `${typeof p}:${String(p)}`;

/** A value as JSON-friendly data that keeps the distinctions JSON would lose. */
export function describe(v) {
  if (v instanceof KvU64) return { u64: String(v.value) };
  if (v instanceof Uint8Array) return { bytes: Array.from(v) };
  if (typeof v === "bigint") return { bigint: String(v) };
  if (v instanceof Date) return { date: v.toISOString() };
  if (v instanceof Map) return { map: [...v.entries()].map(([k, x]) => [describe(k), describe(x)]) };
  if (v === undefined) return { undefined: true };
  if (Array.isArray(v)) return v.map(describe);
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, describe(x)]));
  }
  return v;
}

export const vsOk = (vs) => typeof vs === "string" && /^[0-9a-f]{20}$/.test(vs);

/** An entry as {key, value, vs}; vs is whether the versionstamp is well formed (or null). */
export const show = (e) => ({
  key: e.key.map(part),
  value: describe(e.value),
  vs: e.versionstamp === null ? null : vsOk(e.versionstamp),
});

/** Awaits `promise` but fails after `ms` milliseconds, so a hung stream cannot hang the script. */
export async function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Prints the result and exits (open watch streams would otherwise keep Node alive). */
export function finish(out) {
  process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
}
