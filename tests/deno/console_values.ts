// Writes the data the console's browser tests look at, from a real Deno client.
//   console_values.ts URL types   one value of every type under ["t", name], a key of every
//                                 part type, and an entry with an expiry
//   console_values.ts URL xss     values and key parts holding HTML and script
//   console_values.ts URL many N  N entries under ["many", i]
// Prints the versionstamps it got as JSON.
const [url, mode, count] = Deno.args;
const kv = await Deno.openKv(url);
const stamps: Record<string, string> = {};

async function set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number }) {
  const result = await kv.set(key, value, options);
  stamps[JSON.stringify(key, (_, v) => (typeof v === "bigint" ? `${v}n` : v))] = result.versionstamp;
}

if (mode === "types") {
  const values: [string, unknown][] = [
    ["string", "hello"],
    ["string_digit", "1"],
    ["number", 1],
    ["number_float", 1.5],
    ["number_neg_zero", -0],
    ["number_nan", NaN],
    ["bigint", 1n],
    ["bigint_huge", 2n ** 100n],
    ["boolean", true],
    ["null", null],
    ["undefined", undefined],
    ["date", new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678))],
    ["bytes", new Uint8Array([1, 2, 255])],
    ["map", new Map<unknown, unknown>([["a", 1], [2n, new Date(0)]])],
    ["set", new Set(["x", 1])],
    ["nested", { name: "Ada", tags: ["a", { deep: [1n, null] }], bytes: new Uint8Array([7]) }],
    ["u64", new Deno.KvU64(42n)],
  ];
  for (const [name, value] of values) await set(["t", name], value);
  await set(["k", "users", 1, 1n, true, new Uint8Array([1, 2])], "all part types");
  await set(["t", "expiring"], "gone in an hour", { expireIn: 3_600_000 });
} else if (mode === "xss") {
  await set(["xss", "<script>window.__xss = 2</script>", "<b>bold</b>"], "<img src=x onerror=window.__xss=1>");
  await set(["xss", "object"], { html: "<img src=x onerror=window.__xss=3>", s: "</td></tr><script>window.__xss=4</script>" });
} else if (mode === "many") {
  const n = Number(count);
  for (let i = 0; i < n; i += 500) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(n, i + 500); j++) op.set(["many", j], { i: j, label: `entry ${j}` });
    const result = await op.commit();
    if (!result.ok) throw new Error("batch failed");
  }
  stamps.count = String(n);
} else {
  throw new Error(`unknown mode ${mode}`);
}
kv.close();
console.log(JSON.stringify(stamps));
