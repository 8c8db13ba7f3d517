// Writes or reads the interop data set through the npm client (@deno/kv).
// tests/deno/interop.ts does the same with the Deno CLI; the two must agree.
// Usage: node interop.mjs URL write PREFIX | node interop.mjs URL read PREFIX
import v8 from "node:v8";
import { KvU64 } from "@deno/kv";
import { args, describe, finish, open, part } from "./common.mjs";

const [mode, prefix] = args;

// V8 values start with 0xFF and the serializer's format version. Deno 2.9's V8 writes
// version 16; the V8 inside Node 20 reads at most 15 and refuses the whole value. For the
// kinds of values used here the two formats are the same after the header, so when Node
// refuses a newer header the value is decoded again with the header lowered to 15. The
// versions seen and the number of values that needed this are reported.
const formatVersions = new Set();
let loweredHeaders = 0;
function decodeV8(bytes) {
  formatVersions.add(bytes[1]);
  try {
    return v8.deserialize(bytes);
  } catch (e) {
    if (bytes[0] !== 0xff || bytes[1] <= 15) throw e;
    loweredHeaders++;
    const copy = Uint8Array.from(bytes);
    copy[1] = 15;
    return v8.deserialize(copy);
  }
}

// Keep in step with tests/deno/interop.ts.
const VALUES = {
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
  u64: new KvU64(18446744073709551615n),
  u64Zero: new KvU64(0n),
  date: new Date(86400000),
  map: new Map([["a", 1], ["b", [2]]]),
};
const KEY_PARTS = ["str", "", 7n, -7n, 0n, 3.5, -0.5, 0, true, false, new Uint8Array([1, 2]), new Uint8Array([])];

const kv = await open({ encodeV8: v8.serialize, decodeV8 });
const out = { mode, prefix };

if (mode === "write") {
  const op = kv.atomic();
  for (const [name, value] of Object.entries(VALUES)) op.set([prefix, "values", name], value);
  KEY_PARTS.forEach((p, i) => op.set([prefix, "keys", p], i));
  op.set([prefix, "counter"], new KvU64(10n));
  const res = await op.commit();
  out.ok = res.ok;
  out.versionstamp = res.versionstamp;
} else if (mode === "read") {
  out.values = {};
  out.keys = [];
  out.versionstamps = [];
  for await (const e of kv.list({ prefix: [prefix] })) {
    out.versionstamps.push(e.versionstamp);
    if (e.key[1] === "values") out.values[e.key[2]] = describe(e.value);
    else if (e.key[1] === "keys") out.keys.push([part(e.key[2]), e.value]);
  }
  // a sum by this client on a KvU64 the other client wrote
  out.sum = (await kv.atomic().sum([prefix, "counter"], 1n).commit()).ok;
  out.counter = describe((await kv.get([prefix, "counter"])).value);
  out.v8FormatVersions = [...formatVersions].sort((a, b) => a - b);
  out.loweredHeaders = loweredHeaders;
  out.nodeV8 = process.versions.v8;
} else {
  throw new Error(`unknown mode ${mode}`);
}

kv.close();
finish(out);
