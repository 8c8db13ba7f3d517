// Writes ["seq", i] for i = 0, 1, 2, ... with 8 concurrent loops and prints
// each i once its write was acknowledged, until killed.
const kv = await Deno.openKv(Deno.args[0]);
let next = 0;
async function loop() {
  while (true) {
    const i = next++;
    try {
      await kv.set(["seq", i], i);
      console.log(i);
    } catch {
      return;
    }
  }
}
await Promise.all(Array.from({ length: 8 }, loop));
