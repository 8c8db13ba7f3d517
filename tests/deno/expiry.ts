// Sets a key that expires in 300 ms, reads it before and after.
const kv = await Deno.openKv(Deno.args[0]);
await kv.set(["exp", "k"], "soon gone", { expireIn: 300 });
const before = (await kv.get(["exp", "k"])).value;
await new Promise((r) => setTimeout(r, 700));
const after = (await kv.get(["exp", "k"])).value;
const listed = (await Array.fromAsync(kv.list({ prefix: ["exp"] }))).map((e) => e.value);
const check = await kv.atomic().check({ key: ["exp", "k"], versionstamp: null }).set(["exp", "k"], 1).commit();
kv.close();
console.log(JSON.stringify({ before, after, listed, checkAsAbsent: check.ok }));
