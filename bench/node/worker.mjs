// One worker process: node worker.mjs SYSTEM DSN RECORD_DIR [stamp]
// Writes ready.<pid> once it takes jobs; on SIGTERM stops gracefully, then writes what it ran.
import { Recorder } from "./record.mjs";
import { pick } from "./systems.mjs";

const [system, dsn, dir, mode] = process.argv.slice(2);
const recorder = new Recorder(dir, mode === "stamp");
const stop = await pick(system).startWorker(dsn, recorder);
recorder.ready();

let stopping = false;
process.on("SIGTERM", async () => {
  if (stopping) return;
  stopping = true;
  await stop();
  recorder.dump();
  process.exit(0);
});
