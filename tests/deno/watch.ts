// Watches ["w", "a"] and ["w", "b"] on the server given as argument while a
// second connection changes them; prints the sequence of states seen.
const url = Deno.args[0];
const kv = await Deno.openKv(url);
const writer = await Deno.openKv(url);
await writer.set(["w", "a"], "a0");
const seen: unknown[] = [];
const stream = kv.watch([["w", "a"], ["w", "b"]]);
const reader = stream.getReader();
const next = async () => {
  const timeout = new Promise<never>((_, rej) => setTimeout(() => rej(new Error("watch timed out")), 15000));
  const { value } = await Promise.race([reader.read(), timeout]);
  seen.push(value!.map((e) => e.value));
};
await next(); // initial state
await writer.set(["w", "b"], "b1");
await next();
await writer.set(["w", "x"], "unrelated"); // must not produce an update
await writer.delete(["w", "a"]);
await next();
await writer.set(["w", "a"], "a2");
await next();
reader.cancel();
kv.close();
writer.close();
console.log(JSON.stringify(seen));
