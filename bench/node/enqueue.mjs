// The harness's enqueuer for a Node system, driven over stdin/stdout one JSON line each way:
//   {"op": "install"} | {"op": "one"} | {"op": "bulk", "n": N}
// "one" answers with the job id and the wall time right after the enqueue committed;
// "bulk" answers with the seconds one call took to enqueue n jobs in one statement.
import { createInterface } from "node:readline";
import { nowSeconds } from "./record.mjs";
import { pick } from "./systems.mjs";

const [system, dsn] = process.argv.slice(2);
const enqueuer = await pick(system).makeEnqueuer(dsn);
const reply = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

reply({ ready: true });
for await (const line of createInterface({ input: process.stdin })) {
  const request = JSON.parse(line);
  try {
    if (request.op === "install") {
      await enqueuer.install();
      reply({ ok: true });
    } else if (request.op === "one") {
      const id = await enqueuer.one();
      reply({ id: String(id), t: nowSeconds() });
    } else if (request.op === "bulk") {
      const started = performance.now();
      await enqueuer.bulk(request.n);
      reply({ seconds: (performance.now() - started) / 1000 });
    } else {
      reply({ error: `unknown op ${request.op}` });
    }
  } catch (err) {
    reply({ error: String(err && err.stack ? err.stack : err) });
  }
}
await enqueuer.close();
