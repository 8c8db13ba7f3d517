// Prints [[name, description], ...] for every ["v", name] entry of the KV file
// given as argument. Descriptions are JSON that keep what JSON alone would lose:
// number vs bigint, -0/NaN, undefined, holes, and the JS class of each object.
type D = unknown;

function describe(v: unknown, path: unknown[] = []): D {
  if (v === undefined) return { undefined: true };
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    if (Object.is(v, -0)) return { number: "-0" };
    return { number: Number.isFinite(v) ? v : String(v) };
  }
  if (typeof v === "bigint") return { bigint: String(v) };
  if (typeof v !== "object") return { unexpected: typeof v };
  if (path.includes(v)) return { cycle: path.length - path.indexOf(v) };
  const inner = [...path, v];
  const d = (x: unknown) => describe(x, inner);
  if (v instanceof Deno.KvU64) return { u64: String(v.value) };
  if (v instanceof Uint8Array) return { u8: Array.from(v) };
  if (v instanceof ArrayBuffer) {
    const out: Record<string, D> = { arraybuffer: Array.from(new Uint8Array(v)) };
    if (v.resizable) out.maxByteLength = v.maxByteLength;
    return out;
  }
  if (v instanceof DataView) {
    return { dataview: Array.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
  }
  if (ArrayBuffer.isView(v)) {
    return { typed: v.constructor.name, items: Array.from(v as unknown as ArrayLike<unknown>, d) };
  }
  if (v instanceof Date) return { date: isNaN(v.getTime()) ? "Invalid" : v.toISOString() };
  if (v instanceof RegExp) return { regexp: v.source, flags: v.flags };
  if (v instanceof Error) {
    const out: Record<string, D> = { error: v.name, message: v.message };
    if ("cause" in v) out.cause = d(v.cause);
    return out;
  }
  if (v instanceof Map) return { map: [...v].map(([k, x]) => [d(k), d(x)]) };
  if (v instanceof Set) return { set: [...v].map(d) };
  if (v instanceof Number || v instanceof String || v instanceof Boolean || v instanceof BigInt) {
    return { boxed: d(v.valueOf()) };
  }
  if (Array.isArray(v)) {
    const props = Object.keys(v).filter((k) => !/^\d+$/.test(k)).map((k) => [k, d((v as any)[k])]);
    const dense = Object.keys(v).length - props.length === v.length;
    const out: Record<string, D> = dense
      ? { array: v.map(d) }
      : { sparse: v.length, items: Object.keys(v).filter((k) => /^\d+$/.test(k)).map((k) => [Number(k), d(v[Number(k)])]) };
    if (props.length) out.props = props;
    return out;
  }
  return { object: Object.entries(v).map(([k, x]) => [k, d(x)]) };
}

const kv = await Deno.openKv(Deno.args[0]);
const out: [unknown, D][] = [];
for await (const e of kv.list({ prefix: ["v"] })) out.push([e.key[1], describe(e.value)]);
kv.close();
console.log(JSON.stringify(out));
