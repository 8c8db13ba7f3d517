// Writes or reads the interop data set through the Deno CLI's KV Connect client.
// tests/node/interop.mjs does the same with the npm client (@deno/kv); the two must agree.
// Usage: deno run --unstable-kv -A interop.ts URL write|read PREFIX  (token in DENO_KV_ACCESS_TOKEN)
const [url, mode, prefix] = Deno.args;

// Keep in step with tests/node/interop.mjs.
const VALUES: Record<string, unknown> = {
  ascii: "plain text",
  unicode: "héllo wörld ✓ 🦕",
  emptyString: "",
  integer: 42,
  negativeFloat: -12.5,
  maxSafe: 9007199254740991,
  boolean: true,
  null: null,
  nested: { a: { b: [1, "two", { c: null }] }, flag: false },
  array: [1, [2, [3]], "x"],
  bigint: 12345678901234567890n,
  negativeBigint: -5n,
  bytes: new Uint8Array([0, 1, 2, 255]),
  emptyBytes: new Uint8Array([]),
  u64: new Deno.KvU64(18446744073709551615n),
  u64Zero: new Deno.KvU64(0n),
  date: new Date(86400000),
  map: new Map<string, unknown>([["a", 1], ["b", [2]]]),
};
const KEY_PARTS: Deno.KvKeyPart[] = [
  "str", "", 7n, -7n, 0n, 3.5, -0.5, 0, true, false, new Uint8Array([1, 2]), new Uint8Array([]),
];

// Same output format as tests/node/common.mjs.
const part = (p: Deno.KvKeyPart) =>
  typeof p === "bigint" ? `${p}n` : p instanceof Uint8Array ? `u8:${Array.from(p)}` :
  `${typeof p}:${String(p)}`;
function describe(v: unknown): unknown {
  if (v instanceof Deno.KvU64) return { u64: String(v.value) };
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

const kv = await Deno.openKv(url);
const out: Record<string, unknown> = { mode, prefix };

if (mode === "write") {
  const op = kv.atomic();
  for (const [name, value] of Object.entries(VALUES)) op.set([prefix, "values", name], value);
  KEY_PARTS.forEach((p, i) => op.set([prefix, "keys", p], i));
  op.set([prefix, "counter"], new Deno.KvU64(10n));
  const res = await op.commit();
  out.ok = res.ok;
  out.versionstamp = res.ok ? res.versionstamp : null;
} else if (mode === "read") {
  const values: Record<string, unknown> = {};
  const keys: unknown[] = [];
  const versionstamps: string[] = [];
  for await (const e of kv.list({ prefix: [prefix] })) {
    versionstamps.push(e.versionstamp);
    if (e.key[1] === "values") values[e.key[2] as string] = describe(e.value);
    else if (e.key[1] === "keys") keys.push([part(e.key[2]), e.value]);
  }
  Object.assign(out, { values, keys, versionstamps });
  // a sum by this client on a KvU64 the other client wrote
  out.sum = (await kv.atomic().sum([prefix, "counter"], 1n).commit()).ok;
  out.counter = describe((await kv.get([prefix, "counter"])).value);
} else {
  throw new Error(`unknown mode ${mode}`);
}

kv.close();
console.log(JSON.stringify(out));
