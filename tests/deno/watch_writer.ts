// Sets ["watched"] to the value given, from a Deno client.
const [url, value] = Deno.args;
const kv = await Deno.openKv(url);
await kv.set(["watched"], value);
kv.close();
console.log(JSON.stringify({ ok: true }));
