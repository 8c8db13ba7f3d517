// Core Deno.Kv operations through the npm client (@deno/kv) against a denokv server.
// Usage: node core.mjs URL   (token in DENO_KV_ACCESS_TOKEN)
import { KvU64 } from "@deno/kv";
import { describe, finish, open, part, show, vsOk } from "./common.mjs";

const kv = await open();
const out = {};
const collect = async (iter) => {
  const got = [];
  for await (const e of iter) got.push(e);
  return got;
};
const values = async (iter) => (await collect(iter)).map((e) => e.value);

// set / get / getMany
const r1 = await kv.set(["k", "str"], "hello");
await kv.set(["k", 1n], { nested: { list: [1, 2, 3], ok: true } });
await kv.set(["k", 1], 12.5);
await kv.set(["k", true], new Uint8Array([0, 1, 255]));
await kv.set(["k", new Uint8Array([7, 0])], 99n);
await kv.set(["k", "u64"], new KvU64(42n));
out.setOk = r1.ok === true && vsOk(r1.versionstamp);
out.get = show(await kv.get(["k", "str"]));
out.getMissing = show(await kv.get(["k", "nope"]));
// the npm client reads [key, 0xFF) with limit 1 and compares keys: a missing key
// that sorts just before an existing one must still come back as missing
out.getBeforeExisting = show(await kv.get(["k", "st"]));
out.getMany = (await kv.getMany([
  ["k", 1n], ["k", 1], ["k", true], ["k", new Uint8Array([7, 0])], ["k", "u64"], ["k", "missing"],
])).map(show);
out.listKinds = (await collect(kv.list({ prefix: ["k"] }))).map((e) => e.key.map(part));

// list: 250 items, so the default batch of 100 needs three round trips
const ops = kv.atomic();
for (let i = 0; i < 250; i++) ops.set(["items", i], i);
out.bulk = (await ops.commit()).ok;
const all = await values(kv.list({ prefix: ["items"] }));
out.listAll = { count: all.length, inOrder: all.every((v, i) => v === i) };
const small = await values(kv.list({ prefix: ["items"] }, { batchSize: 7 }));
out.listSmallBatches = { count: small.length, inOrder: small.every((v, i) => v === i) };
out.listLimit = await values(kv.list({ prefix: ["items"] }, { limit: 5 }));
out.listReverse = await values(kv.list({ prefix: ["items"] }, { limit: 3, reverse: true }));
const revAll = await values(kv.list({ prefix: ["items"] }, { reverse: true, batchSize: 40 }));
out.listReverseAll = { count: revAll.length, inOrder: revAll.every((v, i) => v === 249 - i) };
out.listStartEnd = await values(kv.list({ start: ["items", 10], end: ["items", 15] }));
out.listPrefixStart = await values(kv.list({ prefix: ["items"], start: ["items", 247] }));
out.listPrefixEnd = await values(kv.list({ prefix: ["items"], end: ["items", 2] }));
// an entry whose key equals the prefix is not part of a prefix listing. (The npm client
// reads [P, P‖FF) and drops P itself; with limit 1 it would re-read the same batch forever,
// a client bug, so this uses limit 3.)
await kv.set(["items"], "the prefix itself");
out.listExcludesPrefixKey = await values(kv.list({ prefix: ["items"] }, { limit: 3 }));

// cursor paging: pages of 100 fetched in batches of 30, resuming from the npm cursor
const pages = [];
let cursor = undefined;
for (let page = 0; page < 10; page++) {
  const iter = kv.list({ prefix: ["items"] }, { limit: 100, cursor, batchSize: 30 });
  const got = await values(iter);
  pages.push([got.length, got[0], got[got.length - 1]]);
  if (got.length < 100) break;
  cursor = iter.cursor;
}
out.cursorPages = pages;
const revIter = kv.list({ prefix: ["items"] }, { limit: 10, reverse: true });
await collect(revIter);
out.reverseResume = await values(
  kv.list({ prefix: ["items"] }, { limit: 3, reverse: true, cursor: revIter.cursor }),
);

// delete
await kv.delete(["k", "str"]);
out.afterDelete = show(await kv.get(["k", "str"]));

// atomic: a check that passes, the same (now stale) check failing, and "must not exist"
const cur = await kv.get(["k", 1]);
const pass = await kv.atomic().check(cur).set(["k", 1], 13.5).commit();
const fail = await kv.atomic().check(cur).set(["k", 1], 14.5).set(["k", "side"], 1).commit();
const fresh1 = await kv.atomic().check({ key: ["k", "fresh"], versionstamp: null })
  .set(["k", "fresh"], 1).commit();
const fresh2 = await kv.atomic().check({ key: ["k", "fresh"], versionstamp: null })
  .set(["k", "fresh"], 2).commit();
out.atomic = {
  pass: pass.ok,
  passVersionstamp: vsOk(pass.versionstamp),
  fail,
  value: (await kv.get(["k", 1])).value,
  failedWriteLeftNoTrace: (await kv.get(["k", "side"])).versionstamp === null,
  fresh1: fresh1.ok,
  fresh2: fresh2.ok,
  freshValue: (await kv.get(["k", "fresh"])).value,
  stampsIncrease: pass.versionstamp > r1.versionstamp,
};

// sum / min / max on KvU64 (the npm client sends them as LE64 values)
await kv.atomic().sum(["n"], 5n).sum(["n"], 7n).commit();
await kv.atomic().min(["lo"], 10n).min(["lo"], 3n).max(["hi"], 3n).max(["hi"], 10n).commit();
await kv.atomic().sum(["wrap"], 0xffffffffffffffffn).sum(["wrap"], 2n).commit();
await kv.set(["mixed"], new KvU64(100n));
await kv.atomic().sum(["mixed"], 1n).min(["mixed"], 50n).commit();
out.sums = Object.fromEntries(await Promise.all(["n", "lo", "hi", "wrap", "mixed"].map(
  async (name) => [name, describe((await kv.get([name])).value)],
)));
try {
  await kv.atomic().sum(["k", 1], 1n).commit(); // ["k", 1] holds a V8 number, not a KvU64
  out.sumOnNumber = "no error";
} catch (e) {
  out.sumOnNumber = String(e.message);
}

// expireIn: the value is readable right after the write
const exp = await kv.set(["exp"], "soon gone", { expireIn: 60_000 });
out.expireIn = { ok: exp.ok, value: (await kv.get(["exp"])).value };

kv.close();
finish(out);
