// One long-lived Deno program: for every line on stdin, one kv.get; prints
// "ok" or the error's message, one JSON line each, until stdin ends.
const kv = await Deno.openKv(Deno.args[0]);
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let pending = "";
for await (const chunk of lines) {
  pending += chunk;
  while (pending.includes("\n")) {
    pending = pending.slice(pending.indexOf("\n") + 1);
    try {
      await kv.get(["rotation"]);
      console.log(JSON.stringify("ok"));
    } catch (e) {
      console.log(JSON.stringify((e as Error).message));
    }
  }
}
kv.close();
