// Against a replica URL: waits (eventually consistent reads) until ["r", "k"]
// shows the value given, then watches ["r", "w"] until it shows the second value.
// Usage: replica.ts URL EXPECTED WATCH_EXPECTED [WRITE]
const [url, expected, watchExpected, write] = Deno.args;
const kv = await Deno.openKv(url);
const out: Record<string, unknown> = {};
const deadline = Date.now() + 20000;
while (true) {
  const e = await kv.get(["r", "k"], { consistency: "eventual" });
  if (e.value === expected) {
    out.eventual = e.value;
    break;
  }
  if (Date.now() > deadline) throw new Error(`never saw ${expected}, last ${e.value}`);
  await new Promise((r) => setTimeout(r, 50));
}
console.log(JSON.stringify({ ready: true })); // the test now changes ["r", "w"] at the primary
const reader = kv.watch([["r", "w"]]).getReader();
const timer = setTimeout(() => { console.error("watch timed out"); Deno.exit(3); }, 20000);
while (true) {
  const { value } = await reader.read();
  if (value![0].value === watchExpected) break;
}
clearTimeout(timer);
out.watched = watchExpected;
if (write) {
  try {
    const res = await kv.set(["r", "from-replica"], write);
    out.write = res.ok;
    out.strongRead = (await kv.get(["r", "from-replica"])).value;
  } catch (e) {
    out.write = (e as Error).message;
  }
}
reader.cancel();
kv.close();
console.log(JSON.stringify(out));
