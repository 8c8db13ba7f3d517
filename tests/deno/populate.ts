// Writes a fixed, varied data set into the database given as argument.
const kv = await Deno.openKv(Deno.args[0]);
await kv.set(["str", "hello"], "world");
await kv.set(["num", 1], 1.5);
await kv.set(["num", -0.0], "negative zero key");
await kv.set(["big", 12345678901234567890n], -98765432109876543210n);
await kv.set(["bytes", new Uint8Array([0, 0, 1])], new Uint8Array([9, 8, 7]));
await kv.set(["bool", true], false);
await kv.set(["obj"], { a: [1, "two", { three: 3 }], n: null, u: undefined, inf: Infinity });
await kv.set(["date"], new Date(1700000000000));
await kv.set(["map"], new Map<unknown, unknown>([["k", 1], [2, "v"]]));
await kv.set(["set"], new Set([1, 2, 3]));
await kv.set(["u64"], new Deno.KvU64(18446744073709551615n));
await kv.atomic().sum(["counter"], 5n).commit();
await kv.set(["unicode", "ключ 🔑"], "значение");
await kv.delete(["str", "hello"]);
await kv.set(["str", "hello"], "again");
kv.close();
console.log(JSON.stringify({ ok: true }));
