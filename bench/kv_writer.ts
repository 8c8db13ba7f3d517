// Write load for bench/backup.py and bench/replica.py, run with the real Deno CLI.
//
//   deno run --unstable-kv -A bench/kv_writer.ts '<json config>'
//
// `concurrency` async loops write from `startAt` (epoch ms) for `seconds`.
// With `rate` > 0 the writes are paced: write n (counted over all loops) is
// due at startAt + n / rate, and a loop that is behind does not wait, so the
// achieved rate is min(rate, what the server takes). With `rate` 0 every loop
// writes as fast as its answers come back.
//
// Each write is one atomic write: `set(["w", id], value)`, and with `counter`
// also `set(["c"], id)`, so every commit touches ["c"] and the versionstamp of
// ["c"] on a replica tells which commit it has applied. With `record` the
// output lists [versionstamp, ack time in epoch ms] for every write.
//
// Values are Uint8Arrays (stored raw, encoding BYTES) of `valueSize` bytes of
// JSON-like text: a record with an id, a random 16-hex token, a number, a
// timestamp and filler words (log segments of them compress about 4x with zstd).
// Keys ["w", id] are (string, number) keys of 12 bytes; ids are
// `idBase + n`, distinct over all processes when the driver gives each process
// its own idBase.

type Config = {
  url: string;
  seconds: number;
  startAt: number;
  rate: number;
  concurrency: number;
  valueSize: number;
  idBase: number;
  counter?: boolean;
  record?: boolean;
};

const cfg: Config = JSON.parse(Deno.args[0]);
const kv = await Deno.openKv(cfg.url);
const enc = new TextEncoder();

const WORDS = [
  "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
  "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
  "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
];
const hex = (n: number) => Math.floor(Math.random() * 16 ** n).toString(16).padStart(n, "0");

function makeValue(id: number): Uint8Array {
  let text = JSON.stringify({
    id,
    token: hex(8) + hex(8),
    amount: Math.floor(Math.random() * 100000),
    at: new Date().toISOString(),
  });
  while (text.length < cfg.valueSize) {
    text += " " + WORDS[Math.floor(Math.random() * WORDS.length)];
  }
  return enc.encode(text.slice(0, cfg.valueSize));
}

// Connect (the metadata exchange) before the clock starts.
await kv.get(["c"]);
const lateMs = Math.max(0, Date.now() - cfg.startAt);
if (Date.now() < cfg.startAt) await new Promise((r) => setTimeout(r, cfg.startAt - Date.now()));
const endAt = cfg.startAt + cfg.seconds * 1000;
const interval = cfg.rate > 0 ? 1000 / cfg.rate : 0;

let next = 0;
let writes = 0;
let valueBytes = 0;
let errors = 0;
let behindMax = 0;
const errorSamples: string[] = [];
const records: [string, number][] = [];

async function loop() {
  while (true) {
    const n = next++;
    if (interval > 0) {
      const due = cfg.startAt + n * interval;
      if (due >= endAt) return;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      else behindMax = Math.max(behindMax, -wait);
    } else if (Date.now() >= endAt) {
      return;
    }
    const id = cfg.idBase + n;
    const value = makeValue(id);
    try {
      const op = kv.atomic().set(["w", id], value);
      if (cfg.counter) op.set(["c"], id);
      const res = await op.commit();
      const ack = Date.now();
      if (!res.ok) throw new Error("commit not ok");
      writes++;
      valueBytes += value.length;
      if (cfg.record) records.push([res.versionstamp, ack]);
    } catch (e) {
      errors++;
      if (errorSamples.length < 5) errorSamples.push(String(e instanceof Error ? e.message : e));
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

const t0 = Date.now();
await Promise.all(Array.from({ length: cfg.concurrency }, () => loop()));
const elapsed = Math.max(cfg.seconds, (Date.now() - t0) / 1000);
console.log(JSON.stringify({
  writes,
  value_bytes: valueBytes,
  errors,
  error_samples: errorSamples,
  elapsed_s: elapsed,
  late_ms: lateMs,
  behind_max_ms: behindMax,
  records: cfg.record ? records : undefined,
}));
kv.close();
