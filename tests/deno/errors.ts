// Reports the errors a Deno program sees for the cases given as arguments.
const [url, ...cases] = Deno.args;
const out: Record<string, string> = {};
for (const name of cases) {
  try {
    const kv = await Deno.openKv(url);
    if (name === "get") await kv.get(["a"]);
    if (name === "set") await kv.set(["a"], 1);
    kv.close();
    out[name] = "ok";
  } catch (e) {
    out[name] = (e as Error).message;
  }
}
console.log(JSON.stringify(out));
