// Exercises the Deno.Kv API against the database named on the command line
// (an http:// URL served by denokv, or a local file for Deno's own engine) and
// prints what it saw as JSON. Versionstamps differ between engines (random
// increments), so they are reported by their shape and order, not their value.
const kv = await Deno.openKv(Deno.args[0]);
const out: Record<string, unknown> = {};
const vsOk = (vs: string) => /^[0-9a-f]{20}$/.test(vs);
const part = (p: Deno.KvKeyPart) =>
  typeof p === "bigint" ? `${p}n` : p instanceof Uint8Array ? `u8:${Array.from(p)}` :
  `${typeof p}:${String(p)}`;
const show = (e: Deno.KvEntryMaybe<unknown>) => ({
  key: e.key.map(part),
  value: e.value instanceof Deno.KvU64 ? `u64:${e.value.value}` :
    e.value instanceof Uint8Array ? `bytes:${Array.from(e.value)}` :
    typeof e.value === "bigint" ? `bigint:${e.value}` : e.value,
  vs: e.versionstamp === null ? null : vsOk(e.versionstamp),
});

// set / get / getMany, every key part and value kind
const r1 = await kv.set(["k", "str"], "hello");
await kv.set(["k", 1n], { nested: { list: [1, 2, 3], ok: true } });
await kv.set(["k", 1], 12.5);
await kv.set(["k", true], new Uint8Array([0, 1, 255]));
await kv.set(["k", new Uint8Array([7, 0])], 99n);
await kv.set(["k", "u64"], new Deno.KvU64(42n));
await kv.set(["k", "date"], new Date(86400000));
await kv.set(["k", "map"], new Map([["a", 1]]));
out.setOk = r1.ok && vsOk(r1.versionstamp);
out.get = show(await kv.get(["k", "str"]));
out.getMissing = show(await kv.get(["k", "nope"]));
out.getMany = (await kv.getMany([["k", 1n], ["k", 1], ["k", true], ["k", new Uint8Array([7, 0])],
  ["k", "u64"], ["k", "missing"]])).map(show);
const date = (await kv.get<Date>(["k", "date"])).value;
out.date = date instanceof Date ? date.toISOString() : null;
const map = (await kv.get<Map<string, number>>(["k", "map"])).value;
out.map = map instanceof Map ? [...map.entries()] : null;
out.listAllKinds = (await Array.fromAsync(kv.list({ prefix: ["k"] }))).map((e) => e.key.map(part));

// list: 250 items, paging with cursors over several batches
const ops = kv.atomic();
for (let i = 0; i < 250; i++) ops.set(["items", i], i * 2);
out.bulk = (await ops.commit()).ok;
out.listAll = (await Array.fromAsync(kv.list({ prefix: ["items"] }))).length;
out.listSmallBatches = (await Array.fromAsync(kv.list({ prefix: ["items"] }, { batchSize: 7 })))
  .map((e) => e.value as number).reduce((a, b) => a + b, 0);
out.listLimit = (await Array.fromAsync(kv.list({ prefix: ["items"] }, { limit: 5 }))).map((e) => e.value);
out.listReverse = (await Array.fromAsync(kv.list({ prefix: ["items"] }, { limit: 3, reverse: true })))
  .map((e) => e.value);
out.listStartEnd = (await Array.fromAsync(kv.list({ start: ["items", 10], end: ["items", 15] })))
  .map((e) => e.value);
out.listPrefixStart = (await Array.fromAsync(kv.list({ prefix: ["items"], start: ["items", 247] })))
  .map((e) => e.value);
out.listPrefixEnd = (await Array.fromAsync(kv.list({ prefix: ["items"], end: ["items", 2] })))
  .map((e) => e.value);
const pages: number[][] = [];
let cursor: string | undefined = undefined;
for (let page = 0; page < 10; page++) {
  const iter = kv.list<number>({ prefix: ["items"] }, { limit: 100, cursor, batchSize: 30 });
  const got = (await Array.fromAsync(iter)).map((e) => e.value);
  pages.push(got);
  cursor = iter.cursor;
  if (got.length < 100) break;
}
out.cursorPages = pages.map((p) => [p.length, p[0], p[p.length - 1]]);
const revIter = kv.list<number>({ prefix: ["items"] }, { limit: 10, reverse: true });
await Array.fromAsync(revIter);
out.reverseResume = (await Array.fromAsync(kv.list<number>({ prefix: ["items"] },
  { limit: 3, reverse: true, cursor: revIter.cursor }))).map((e) => e.value);

// delete
await kv.delete(["k", "str"]);
out.afterDelete = (await kv.get(["k", "str"])).value;

// atomic checks
const cur = await kv.get(["k", 1]);
const pass = await kv.atomic().check(cur).set(["k", 1], 13.5).commit();
const fail = await kv.atomic().check(cur).set(["k", 1], 14.5).commit();
const mustBeNew = await kv.atomic().check({ key: ["k", "fresh"], versionstamp: null })
  .set(["k", "fresh"], 1).commit();
const mustBeNewAgain = await kv.atomic().check({ key: ["k", "fresh"], versionstamp: null })
  .set(["k", "fresh"], 2).commit();
out.atomic = {
  pass: pass.ok, fail: fail.ok, value: (await kv.get(["k", 1])).value,
  mustBeNew: mustBeNew.ok, mustBeNewAgain: mustBeNewAgain.ok,
  stampsIncrease: pass.ok && r1.ok && pass.versionstamp > r1.versionstamp,
};

// sum / min / max on KvU64
await kv.atomic().sum(["n"], 5n).sum(["n"], 7n).commit();
await kv.atomic().min(["lo"], 10n).min(["lo"], 3n).max(["hi"], 3n).max(["hi"], 10n).commit();
await kv.atomic().sum(["wrap"], 0xffffffffffffffffn).sum(["wrap"], 2n).commit();
out.sums = {
  n: String((await kv.get<Deno.KvU64>(["n"])).value?.value),
  lo: String((await kv.get<Deno.KvU64>(["lo"])).value?.value),
  hi: String((await kv.get<Deno.KvU64>(["hi"])).value?.value),
  wrap: String((await kv.get<Deno.KvU64>(["wrap"])).value?.value),
};
try {
  await kv.atomic().sum(["k", 1], 1n).commit();
  out.sumOnNumber = "no error";
} catch (e) {
  out.sumOnNumber = String((e as Error).message).includes("non-U64") ? "non-U64 error" : String(e);
}

// versionstamped keys
const vsw = await kv.atomic().set(["vs", kv.commitVersionstamp()], "stamped").commit();
const stamped = await Array.fromAsync(kv.list({ prefix: ["vs"] }));
out.commitVersionstamp = {
  count: stamped.length,
  lastPartIsCommitStamp: vsw.ok && stamped[0]?.key[1] === vsw.versionstamp,
  value: stamped[0]?.value,
};

// sizes the client refuses before sending anything
for (const [name, f] of [
  ["bigKey", () => kv.set(["x".repeat(3000)], 1)],
  ["bigValue", () => kv.set(["big"], new Uint8Array(70000))],
] as const) {
  try {
    await f();
    out[name] = "accepted";
  } catch (e) {
    out[name] = (e as Error).message;
  }
}
kv.close();
console.log(JSON.stringify(out));
