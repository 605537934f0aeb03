// graphile-worker with the batching settings of its own performance page:
// concurrentJobs 24, maxPoolSize 25, localQueue 500, batched completion with no delay.
import { Logger, makeWorkerUtils, run } from "graphile-worker";

export const TASK = "noop";
export const SETTINGS = {
  concurrentJobs: 24,
  maxPoolSize: 25,
  localQueue: { size: 500 },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
};

// Per-job success lines are info; the bench keeps every system at warning or quieter.
const quiet = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

export async function startWorker(dsn, recorder) {
  const runner = await run({
    logger: quiet,
    noHandleSignals: true,
    taskList: {
      [TASK]: async (_payload, helpers) => {
        recorder.job(helpers.job.id);
      },
    },
    preset: { worker: { connectionString: dsn, ...SETTINGS } },
  });
  return async () => runner.stop();
}

export async function makeEnqueuer(dsn) {
  const utils = await makeWorkerUtils({ connectionString: dsn, logger: quiet });
  return {
    install: () => utils.migrate(),
    one: async () => (await utils.addJob(TASK, {})).id,
    bulk: async (n) => {
      await utils.addJobs(Array.from({ length: n }, () => ({ identifier: TASK, payload: {} })));
    },
    close: () => utils.release(),
  };
}
