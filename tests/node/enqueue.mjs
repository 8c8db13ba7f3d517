// Enqueues through the npm client (@deno/kv), recording what it puts on the wire.
// Usage: node enqueue.mjs URL [as-sent|no-schedule]   (token in DENO_KV_ACCESS_TOKEN)
//   as-sent      the client's own requests, unchanged (it always sends backoff [100,200,400,800])
//   no-schedule  the same requests with the backoff schedule removed before sending, as a
//                KV Connect client that leaves the field empty would send them
import { decodeBinary, encodeBinary } from "./node_modules/@deno/kv/esm/proto/messages/com/deno/kv/datapath/AtomicWrite.js";
import { args, finish, open, vsOk } from "./common.mjs";

const mode = args[0] ?? "as-sent";
if (!["as-sent", "no-schedule"].includes(mode)) throw new Error(`unknown mode ${mode}`);
const hex = (bytes) => Buffer.from(bytes).toString("hex");

// Every enqueue that reaches the server, as the server receives it.
const sent = [];
const fetcher = async (input, init) => {
  if (String(input).endsWith("/atomic_write")) {
    const write = decodeBinary(new Uint8Array(init.body));
    if (mode === "no-schedule") {
      for (const e of write.enqueues) e.backoffSchedule = [];
      init = { ...init, body: encodeBinary(write) };
    }
    for (const e of write.enqueues) {
      sent.push({
        payload: hex(e.payload),
        deadlineMs: Number(e.deadlineMs),
        backoffSchedule: e.backoffSchedule,
        keysIfUndelivered: e.keysIfUndelivered.map(hex),
      });
    }
  }
  return await fetch(input, init);
};

const kv = await open({ fetcher });
const out = { mode };
const before = Date.now();

// a plain enqueue
const plain = await kv.enqueue({ job: "email", to: ["a@example.com"], attempt: 1 });
// a delayed enqueue with dead-letter keys
const delayed = await kv.enqueue("later", {
  delay: 60_000,
  keysIfUndelivered: [["dead", "letter"], ["dead", 2]],
});
// an enqueue together with a set: one commit, one versionstamp
const both = await kv.atomic().set(["with-enqueue"], "set alongside").enqueue(12345n).commit();
const alongside = await kv.get(["with-enqueue"]);
// a failed check drops the enqueue along with everything else in the write
const failed = await kv.atomic().check({ key: ["with-enqueue"], versionstamp: null })
  .enqueue("must not be stored").commit();

out.results = {
  plain: plain.ok && vsOk(plain.versionstamp),
  delayed: delayed.ok && vsOk(delayed.versionstamp),
  both: both.ok && vsOk(both.versionstamp),
  setVisible: alongside.value,
  sameVersionstamp: alongside.versionstamp === both.versionstamp,
  failed,
};
out.before = before;
out.sent = sent;

try {
  await kv.listenQueue(() => {});
  out.listenQueue = "no error";
} catch (e) {
  out.listenQueue = String(e.message);
}

kv.close();
finish(out);
