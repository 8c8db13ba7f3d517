// Stores every case of tests/node/values_cases.mjs, plus values only Deno can
// make or store (KvU64, top-level Uint8Array, Float16Array, a resizable
// ArrayBuffer whose maxByteLength needs format 16), under ["v", name] in the KV
// file given as argument. Prints the stored names as JSON.
import { cases } from "../node/values_cases.mjs";

const denoOnly: [string, unknown][] = [
  ["u64", new Deno.KvU64(123n)],
  ["u64_max", new Deno.KvU64(2n ** 64n - 1n)],
  ["u8_top", new Uint8Array([1, 2])],
  ["float16array", new Float16Array([1.5, -2])],
  ["rab_huge_max", new ArrayBuffer(3, { maxByteLength: 2 ** 33 })],
];
const kv = await Deno.openKv(Deno.args[0]);
const names: string[] = [];
for (const [name, value] of [...cases(), ...denoOnly]) {
  await kv.set(["v", name], value);
  names.push(name);
}
kv.close();
console.log(JSON.stringify(names));
