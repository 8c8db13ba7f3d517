// Counts the ["seq", i] keys and reports the largest i.
const kv = await Deno.openKv(Deno.args[0]);
let count = 0;
let max = -1;
for await (const e of kv.list<number>({ prefix: ["seq"] })) {
  count++;
  max = Math.max(max, e.value);
}
kv.close();
console.log(JSON.stringify({ count, max }));
