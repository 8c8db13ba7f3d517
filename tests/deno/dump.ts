// Prints every entry of the database given as argument, in key order, with
// values in a JSON-safe form. Used to compare two databases entry by entry.
const kv = await Deno.openKv(Deno.args[0]);
const enc = (v: unknown): unknown => {
  if (v instanceof Deno.KvU64) return { u64: String(v.value) };
  if (v instanceof Uint8Array) return { bytes: Array.from(v) };
  if (typeof v === "bigint") return { bigint: String(v) };
  if (v instanceof Date) return { date: v.toISOString() };
  if (v instanceof Map) return { map: [...v.entries()].map(([k, x]) => [enc(k), enc(x)]) };
  if (v instanceof Set) return { set: [...v].map(enc) };
  if (Array.isArray(v)) return v.map(enc);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, enc(x)]));
  }
  if (typeof v === "number" && !Number.isFinite(v)) return { number: String(v) };
  return v;
};
const part = (p: Deno.KvKeyPart) =>
  typeof p === "bigint" ? { bigint: String(p) } : p instanceof Uint8Array ? { bytes: Array.from(p) } : p;
const rows = [];
for await (const e of kv.list({ prefix: [] })) {
  rows.push({ key: e.key.map(part), value: enc(e.value), versionstamp: e.versionstamp });
}
kv.close();
console.log(JSON.stringify(rows));
