// Bank-transfer workload for bench/bank.py, run with the real Deno CLI.
//
//   deno run --unstable-kv -A bench/bank_client.ts '<json config>'
//
// The config's `target` is what Deno.openKv gets: an http:// URL (the denokv
// server, KV Connect) or a file path (Deno's own in-process SQLite engine).
// Modes:
//   init    write accounts 0..N-1 with the same starting balance
//   run     `readers` reader loops and `writers` writer loops, concurrently,
//           from `startAt` (epoch ms) for `seconds`; prints counts and
//           latency histograms as JSON
//   verify  list prefix ["account"] and print the count and the balance sum
//
// Latencies go into log-spaced buckets (2 % wide) so the driver can merge the
// histograms of several processes and take percentiles of the union.

type Config = {
  mode: "init" | "run" | "verify";
  target: string;
  accounts: number;
  initial?: number;
  readers?: number;
  writers?: number;
  seconds?: number;
  startAt?: number;
  maxAmount?: number;
};

const cfg: Config = JSON.parse(Deno.args[0]);
const kv = await Deno.openKv(cfg.target);

const LOG_BASE = Math.log(1.02);

class Histogram {
  buckets = new Map<number, number>();
  count = 0;
  sumUs = 0;
  maxUs = 0;
  add(ms: number) {
    const us = Math.max(1, ms * 1000);
    const b = Math.floor(Math.log(us) / LOG_BASE);
    this.buckets.set(b, (this.buckets.get(b) ?? 0) + 1);
    this.count++;
    this.sumUs += us;
    if (us > this.maxUs) this.maxUs = us;
  }
  toJSON() {
    return {
      count: this.count,
      sum_us: this.sumUs,
      max_us: this.maxUs,
      buckets: Object.fromEntries(this.buckets),
    };
  }
}

const randInt = (n: number) => Math.floor(Math.random() * n);

async function init() {
  const BATCH = 500;
  for (let start = 0; start < cfg.accounts; start += BATCH) {
    const op = kv.atomic();
    for (let i = start; i < Math.min(cfg.accounts, start + BATCH); i++) {
      op.set(["account", i], cfg.initial ?? 1000);
    }
    const res = await op.commit();
    if (!res.ok) throw new Error(`init batch at ${start} failed`);
  }
  return { accounts: cfg.accounts, initial: cfg.initial ?? 1000 };
}

async function verify() {
  let count = 0;
  let sum = 0;
  let bad = 0;
  let negative = 0;
  for await (const e of kv.list<unknown>({ prefix: ["account"] })) {
    count++;
    if (typeof e.value === "number" && Number.isInteger(e.value)) {
      sum += e.value;
      if (e.value < 0) negative++;
    } else {
      bad++;
    }
  }
  return { count, sum, bad, negative };
}

async function run() {
  const n = cfg.accounts;
  const readLat = new Histogram();
  const xferLat = new Histogram();
  let reads = 0;
  let readMisses = 0;
  let transfers = 0;
  let conflicts = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  const noteError = (e: unknown) => {
    errors++;
    if (errorSamples.length < 5) errorSamples.push(String(e instanceof Error ? e.message : e));
  };
  const maxAmount = cfg.maxAmount ?? 10;

  // Connect (for KV Connect: the metadata exchange) before the clock starts.
  await kv.get(["account", 0]);
  const startAt = cfg.startAt ?? Date.now();
  const lateMs = Math.max(0, Date.now() - startAt);
  if (Date.now() < startAt) await new Promise((r) => setTimeout(r, startAt - Date.now()));
  const endAt = startAt + (cfg.seconds ?? 10) * 1000;

  async function reader() {
    while (Date.now() < endAt) {
      const t0 = performance.now();
      try {
        const e = await kv.get<number>(["account", randInt(n)]);
        readLat.add(performance.now() - t0);
        reads++;
        if (typeof e.value !== "number") readMisses++;
      } catch (e) {
        noteError(e);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }

  async function writer() {
    while (Date.now() < endAt) {
      const a = randInt(n);
      let b = randInt(n - 1);
      if (b >= a) b++;
      const t0 = performance.now();
      try {
        const [from, to] = await kv.getMany<[number, number]>([["account", a], ["account", b]]);
        if (typeof from.value !== "number" || typeof to.value !== "number") {
          throw new Error(`account ${a} or ${b} is missing`);
        }
        const amount = 1 + randInt(maxAmount);
        const res = await kv.atomic()
          .check(from)
          .check(to)
          .set(from.key, from.value - amount)
          .set(to.key, to.value + amount)
          .commit();
        xferLat.add(performance.now() - t0);
        if (res.ok) transfers++;
        else conflicts++;
      } catch (e) {
        noteError(e);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  }

  const loops: Promise<void>[] = [];
  for (let i = 0; i < (cfg.readers ?? 0); i++) loops.push(reader());
  for (let i = 0; i < (cfg.writers ?? 0); i++) loops.push(writer());
  await Promise.all(loops);
  const elapsedS = (Date.now() - startAt) / 1000;
  return {
    elapsed_s: elapsedS,
    late_ms: lateMs,
    reads,
    read_misses: readMisses,
    transfers,
    conflicts,
    errors,
    error_samples: errorSamples,
    read_latency: readLat.toJSON(),
    transfer_latency: xferLat.toJSON(),
  };
}

let result: unknown;
if (cfg.mode === "init") result = await init();
else if (cfg.mode === "verify") result = await verify();
else result = await run();
kv.close();
console.log(JSON.stringify(result));
