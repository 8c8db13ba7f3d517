// Value kinds stored by the values interop tests. Shared by the Deno writer
// (tests/deno/values_write.ts) and the Node serializer (values_serialize.mjs)
// so both runtimes encode exactly the same JavaScript values.

function plainError(make) {
  const e = make();
  delete e.stack; // the stack text differs between runtimes and file paths
  return e;
}

export function cases() {
  const sparse = [1, , 3];
  sparse[10] = "x";
  const big = new Array(2000);
  big[1500] = 1;
  const withProp = [1, 2];
  withProp.extra = true;
  const shared = { s: 1 };
  const cyclic = { name: "loop" };
  cyclic.self = cyclic;
  const errCause = new Error("outer", { cause: "inner" });
  delete errCause.stack;
  return [
    ["str_ascii", "hello"],
    ["str_empty", ""],
    ["str_latin1", "caf\u00e9 \u00ff"],
    ["str_bmp", "\u65e5\u672c\u8a9e \u0416"],
    ["str_emoji", "hi \u{1F600}!"],
    ["str_lone_surrogate", "a\ud800b"],
    ["num_zero", 0],
    ["num_neg_zero", -0],
    ["num_int", 42],
    ["num_neg_int", -7],
    ["num_int32_max", 2147483647],
    ["num_int32_over", 2147483648],
    ["num_safe_max", Number.MAX_SAFE_INTEGER],
    ["num_double", 3.25],
    ["num_nan", NaN],
    ["num_inf", Infinity],
    ["num_neg_inf", -Infinity],
    ["bigint_zero", 0n],
    ["bigint_small", 5n],
    ["bigint_neg", -12345678901234567890n],
    ["bigint_u64_max", 18446744073709551615n],
    ["bigint_huge", 2n ** 200n + 1n],
    ["true", true],
    ["false", false],
    ["null", null],
    ["undefined", undefined],
    ["object", { a: 1, b: "two", c: [true, null] }],
    ["object_int_keys", { 1: "one", b: 2, 0: "zero" }],
    ["object_nested", { outer: { inner: { deep: [1, { x: 2n }] } } }],
    ["object_empty", {}],
    ["array", [1, "a", null, undefined, 2.5]],
    ["array_empty", []],
    ["array_sparse", sparse],
    ["array_holes_only", new Array(5)],
    ["array_large_sparse", big],
    ["array_with_prop", withProp],
    ["shared_refs", [shared, shared]],
    ["cyclic", cyclic],
    ["date", new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678))],
    ["date_epoch", new Date(0)],
    ["date_invalid", new Date(NaN)],
    ["map", new Map([["k", 1], [2, "v"], [3n, { z: true }]])],
    ["set", new Set([1, "two", 3n])],
    ["regexp", /ab+c/gi],
    ["regexp_flags", /x/msuy],
    ["u8_in_object", { data: new Uint8Array([1, 2, 255]) }],
    ["arraybuffer", new Uint8Array([9, 8, 7]).buffer],
    ["uint8array_empty", { u: new Uint8Array([]) }],
    ["rab_small", new ArrayBuffer(2, { maxByteLength: 16 })],
    ["int16array", new Int16Array([-1, 2, 300])],
    ["float64array", new Float64Array([1.5, -0, NaN])],
    ["bigint64array", new BigInt64Array([-1n, 2n])],
    ["dataview", new DataView(new Uint8Array([1, 2, 3, 4]).buffer, 1, 2)],
    ["subarray", new Uint8Array([0, 1, 2, 3, 4, 5]).subarray(2, 4)],
    ["error", plainError(() => new Error("boom"))],
    ["type_error", plainError(() => new TypeError("bad type"))],
    ["range_error", plainError(() => new RangeError("out"))],
    ["error_cause", errCause],
    ["boxed_number", new Number(1.5)],
    ["boxed_string", new String("boxed")],
    ["boxed_true", new Boolean(true)],
    ["boxed_false", new Boolean(false)],
    ["boxed_bigint", Object(7n)],
  ];
}
