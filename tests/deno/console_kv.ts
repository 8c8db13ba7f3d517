// One read or write from a real Deno client, for the console's browser tests.
//   console_kv.ts URL get '["t", "string"]'             prints {type, text, versionstamp}
//   console_kv.ts URL set '["t", "string"]' '"value"'   sets a JSON value, prints {versionstamp}
const [url, op, keyJson, valueJson] = Deno.args;
const kv = await Deno.openKv(url);
const key = JSON.parse(keyJson);
if (op === "get") {
  const entry = await kv.get(key);
  const v = entry.value;
  const type = v instanceof Deno.KvU64 ? "KvU64" : v === null ? "null" : typeof v;
  console.log(JSON.stringify({ type, text: String(v), versionstamp: entry.versionstamp }));
} else {
  const result = await kv.set(key, JSON.parse(valueJson));
  console.log(JSON.stringify({ versionstamp: result.versionstamp }));
}
kv.close();
