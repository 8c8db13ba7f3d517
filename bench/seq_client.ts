// Sequential latency of one Deno program: `calls` awaited kv.get, then `calls`
// awaited kv.set, one at a time, after `warmup` of each. Prints every latency
// (ms) as JSON. The target is a file path or a KV Connect URL.
//
//   deno run --unstable-kv -A bench/seq_client.ts '{"target": "...", "calls": 300}'
type Config = { target: string; calls: number; warmup?: number };
const cfg: Config = JSON.parse(Deno.args[0]);
const kv = await Deno.openKv(cfg.target);
const key = ["latency", "k"];
await kv.set(key, { n: 0, text: "x".repeat(32) });

async function timed(n: number, op: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await op(i);
    out.push(performance.now() - t0);
  }
  return out;
}
const get = (_: number) => kv.get(key);
const set = (i: number) => kv.set(key, { n: i, text: "x".repeat(32) });
const warmup = cfg.warmup ?? 20;
await timed(warmup, get);
const gets = await timed(cfg.calls, get);
await timed(warmup, set);
const sets = await timed(cfg.calls, set);
kv.close();
console.log(JSON.stringify({ get_ms: gets, set_ms: sets }));
