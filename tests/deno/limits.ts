// Runs each limit case against the database at Deno.args[0] (a file or a
// server URL) and prints what happened: "ok" or the error message. Used to
// check that a program moves between Deno's own engine and denokv unchanged.
const kv = await Deno.openKv(Deno.args[0]);
const k = (i: number) => ["lim", i];
const bigKey = (n: number) => ["b", "x".repeat(n)]; // encoded size n + 5

const cases: Record<string, () => Promise<unknown>> = {
  checks_10: () => checks(10),
  checks_11: () => checks(11),
  checks_100: () => checks(100),
  checks_101: () => checks(101),
  mutations_1000: () => mutations(1000, 1),
  mutations_1001: () => mutations(1001, 1),
  get_many_10: () => kv.getMany(Array.from({ length: 10 }, (_, i) => k(i))),
  get_many_11: () => kv.getMany(Array.from({ length: 11 }, (_, i) => k(i))),
  list_limit_1000: () => list(1000),
  list_batch_1000: () => listBatch(1000),
  list_batch_1001: () => listBatch(1001),
  key_2048: () => kv.set(bigKey(2043), 1),
  key_2049: () => kv.set(bigKey(2044), 1),
  check_key_2048: () => kv.atomic().check({ key: bigKey(2043), versionstamp: null }).commit(),
  check_key_2049: () => kv.atomic().check({ key: bigKey(2044), versionstamp: null }).commit(),
  total_size_819200: () => totalSize(12, 65536 - 11 - 200),
  total_size_over: () => totalSize(13, 65536 - 11 - 200),
  total_keys_81920: () => totalKeys(40, 2043),
  total_keys_over: () => totalKeys(41, 2043),
};

async function checks(n: number) {
  const op = kv.atomic();
  for (let i = 0; i < n; i++) op.check({ key: k(i), versionstamp: null });
  return await op.set(["lim-ok"], n).commit();
}
async function mutations(n: number, _: number) {
  const op = kv.atomic();
  for (let i = 0; i < n; i++) op.set(k(i), i);
  return await op.commit();
}
async function list(limit: number) {
  const out = [];
  for await (const e of kv.list({ prefix: ["lim"] }, { limit })) out.push(e);
  return out.length;
}
async function listBatch(batchSize: number) {
  const out = [];
  for await (const e of kv.list({ prefix: ["lim"] }, { batchSize })) out.push(e);
  return out.length;
}
async function totalSize(n: number, size: number) {
  const op = kv.atomic();
  for (let i = 0; i < n; i++) op.set(k(i), new Uint8Array(size));
  return await op.commit();
}
async function totalKeys(n: number, size: number) {
  const op = kv.atomic();
  for (let i = 0; i < n; i++) op.set(["t", i, "x".repeat(size - 10)], 1);
  return await op.commit();
}

const only = Deno.args.slice(1);
const out: Record<string, string> = {};
for (const [name, run] of Object.entries(cases)) {
  if (only.length && !only.includes(name)) continue;
  try {
    await run();
    out[name] = "ok";
  } catch (e) {
    out[name] = (e as Error).message;
  }
}
kv.close();
console.log(JSON.stringify(out));
