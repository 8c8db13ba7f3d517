// A small HTTP load generator for bench/bank.py: `concurrency` loops POST one
// of the given bodies (chosen at random) to `url` over keep-alive connections
// from `startAt` (epoch ms) for `seconds`, and print status counts and a
// latency histogram (2 % wide log buckets, mergeable across loaders) as JSON.
// The same loader, bodies and headers drive both the denokv server and the
// trivial endpoint, so only the server side differs.
//
//   deno run -A bench/http_load.ts '<json config>'
//
// `http2: true` speaks h2c with prior knowledge (what Deno's KV client uses);
// otherwise HTTP/1.1.

type Config = {
  url: string;
  headers: Record<string, string>;
  bodies: string[]; // base64
  seconds: number;
  concurrency: number;
  startAt?: number;
  http2?: boolean;
};

const cfg: Config = JSON.parse(Deno.args[0]);
const bodies = cfg.bodies.map((b) => Uint8Array.from(atob(b), (c) => c.charCodeAt(0)));
const client = cfg.http2
  ? Deno.createHttpClient({ http1: false, http2: true })
  : Deno.createHttpClient({ http1: true, http2: false });

const LOG_BASE = Math.log(1.02);
const statuses: Record<string, number> = {};
const buckets = new Map<number, number>();
let requests = 0;
let sumUs = 0;
let maxUs = 0;
const addLatency = (ms: number) => {
  const us = Math.max(1, ms * 1000);
  const b = Math.floor(Math.log(us) / LOG_BASE);
  buckets.set(b, (buckets.get(b) ?? 0) + 1);
  requests++;
  sumUs += us;
  if (us > maxUs) maxUs = us;
};
let ok = 0;
let errors = 0;
const errorSamples: string[] = [];
let bodyBytes = 0;

async function once(): Promise<void> {
  const body = bodies[Math.floor(Math.random() * bodies.length)];
  const res = await fetch(cfg.url, { method: "POST", headers: cfg.headers, body, client });
  const buf = await res.arrayBuffer();
  bodyBytes += buf.byteLength;
  statuses[res.status] = (statuses[res.status] ?? 0) + 1;
  if (res.status === 200) ok++;
}

// Warm up: open connections and let both sides' code paths settle.
for (let i = 0; i < 3; i++) {
  await Promise.all(Array.from({ length: cfg.concurrency }, () => once()));
}
for (const k of Object.keys(statuses)) delete statuses[k];
ok = 0;
bodyBytes = 0;

const startAt = cfg.startAt ?? Date.now();
if (Date.now() < startAt) await new Promise((r) => setTimeout(r, startAt - Date.now()));
const endAt = startAt + cfg.seconds * 1000;

async function loop() {
  while (Date.now() < endAt) {
    const t0 = performance.now();
    try {
      await once();
      addLatency(performance.now() - t0);
    } catch (e) {
      errors++;
      if (errorSamples.length < 5) errorSamples.push(String(e instanceof Error ? e.message : e));
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
await Promise.all(Array.from({ length: cfg.concurrency }, () => loop()));
const elapsed = (Date.now() - startAt) / 1000;
client.close();
console.log(JSON.stringify({
  elapsed_s: elapsed,
  requests,
  ok,
  statuses,
  errors,
  error_samples: errorSamples,
  body_bytes: bodyBytes,
  latency: { count: requests, sum_us: sumUs, max_us: maxUs, buckets: Object.fromEntries(buckets) },
}));
