// pg-boss polls (0.5 s is its minimum interval): each work() loop fetches a batch,
// runs the handler, completes the batch, and waits out the rest of the interval.
import PgBoss from "pg-boss";

export const QUEUE = "bench";
export const SETTINGS = { loops: 4, batchSize: 100, pollingIntervalSeconds: 0.5 };

function boss(dsn) {
  const b = new PgBoss({ connectionString: dsn, schedule: false, supervise: false });
  b.on("error", (err) => console.error(`pg-boss error: ${err.message}`));
  return b;
}

export async function startWorker(dsn, recorder) {
  const b = boss(dsn);
  await b.start();
  const options = { batchSize: SETTINGS.batchSize, pollingIntervalSeconds: SETTINGS.pollingIntervalSeconds };
  for (let i = 0; i < SETTINGS.loops; i++) {
    await b.work(QUEUE, options, async (jobs) => {
      for (const job of jobs) recorder.job(job.id);
    });
  }
  return async () => b.stop({ graceful: true, wait: true, timeout: 10000 });
}

export async function makeEnqueuer(dsn) {
  const b = boss(dsn);
  await b.start();
  return {
    install: () => b.createQueue(QUEUE),
    one: () => b.send(QUEUE, {}),
    bulk: (n) => b.insert(Array.from({ length: n }, () => ({ name: QUEUE, data: {} }))),
    close: () => b.stop({ graceful: false, wait: true }),
  };
}
