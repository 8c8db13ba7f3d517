// kv.watch() through the npm client (@deno/kv): the initial state, then changes.
// Changes are written through a second, independent client connection.
// Usage: node watch.mjs URL   (token in DENO_KV_ACCESS_TOKEN)
import { finish, open, show, within } from "./common.mjs";

const watcher = await open();
const writer = await open();
const out = {};

const first = await writer.set(["w", "a"], "first");
const stream = watcher.watch([["w", "a"], ["w", "b"]]);
const reader = stream.getReader();
const next = async (what) => {
  const { done, value } = await within(10_000, what, reader.read());
  if (done) throw new Error(`watch stream ended while waiting for ${what}`);
  return value;
};

const initial = await next("initial state");
out.initial = initial.map(show);
out.initialVersionstampIsTheWrites = initial[0].versionstamp === first.versionstamp;

await writer.set(["w", "b"], { n: 2 });
out.afterSetB = (await next("b being set")).map(show);

await writer.set(["w", "a"], "second");
out.afterSetA = (await next("a being changed")).map(show);

await writer.delete(["w", "a"]);
out.afterDeleteA = (await next("a being deleted")).map(show);

await reader.cancel();
watcher.close();
writer.close();
finish(out);
