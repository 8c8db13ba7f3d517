// Prints every entry of the database at the URL given (or under the prefix given as
// JSON), with each key and value in V8's own serialization (node:v8), so two
// databases compare equal only when Deno reads back exactly the same data: the
// same types, structure, shared references and all.
import { serialize } from "node:v8";

const [url, prefixJson] = Deno.args;
const kv = await Deno.openKv(url);
const prefix = prefixJson ? JSON.parse(prefixJson) : [];
const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const rows: unknown[] = [];
for await (const entry of kv.list({ prefix })) {
  const value = entry.value instanceof Deno.KvU64
    ? `u64:${entry.value.value}`
    : hex(serialize(entry.value));
  rows.push({ key: hex(serialize(entry.key)), value });
}
kv.close();
console.log(JSON.stringify(rows));
