import { type Job, type JobsOptions, Queue, UnrecoverableError, Worker } from "bullmq";
import type { Config, Logger } from "../lib/index.ts";
import { bullPrefix, createRedis } from "../lib/index.ts";
import type { LeaderContext, ReplicaQueues } from "./context.ts";
import { jobNamed } from "./jobs/registry.ts";
import { PLACEMENT_QUEUE, replicaOpJobOptions, replicaOpsQueue } from "./queues.ts";

/** Runs a job through the registry: its payload is checked against the job's schema first. */
export async function runJob(ctx: LeaderContext, job: Job): Promise<string> {
  const definition = jobNamed(job.name);
  if (definition === undefined) {
    throw new UnrecoverableError(`no job is named ${JSON.stringify(job.name)}`);
  }
  const payload = definition.payload.safeParse(job.data);
  if (!payload.success) {
    throw new UnrecoverableError(`job ${job.name} has a bad payload: ${payload.error.message}`);
  }
  return definition.handle(ctx, payload.data, job);
}

/**
 * A job failed: if for good (out of retries, or unrecoverable), its definition hears of it and the
 * policy re-reads the fleet before its next decision.
 */
async function jobFailed(ctx: LeaderContext, job: Job | undefined, error: Error): Promise<void> {
  if (job === undefined) {
    return;
  }
  const final = job.attemptsMade >= (job.opts.attempts ?? 1) || error instanceof UnrecoverableError;
  const definition = jobNamed(job.name);
  const payload = definition?.payload.safeParse(job.data);
  if (!final) {
    return;
  }
  try {
    if (definition?.failedForGood && payload?.success) {
      await definition.failedForGood(ctx, payload.data, error);
    }
  } finally {
    // What the job left in Postgres (a dropped placement, say) is not what the policy planned.
    ctx.markStale();
  }
}

/** The placement queue's worker: one decision at a time, each in the leader's exclusive turn. */
export function startPlacementWorker(ctx: LeaderContext): Worker {
  const { redis, logger } = ctx.deps;
  const worker = new Worker(PLACEMENT_QUEUE, (job) => ctx.exclusive(() => runJob(ctx, job)), {
    connection: createRedis(redis, "worker"),
    prefix: bullPrefix(redis),
    concurrency: 1,
  });
  worker.on("error", (error) => logger.error({ err: error }, "placement worker error"));
  worker.on("failed", (job, error) => void jobFailed(ctx, job, error));
  return worker;
}

/**
 * One queue and one worker per replica, made on first use: loads and unloads run one at a time
 * there, since a load pauses every stream on its replica.
 */
export class BullReplicaQueues implements ReplicaQueues {
  private readonly queues = new Map<string, Queue>();
  private readonly workers = new Map<string, Worker>();
  private readonly redis: Config["redis"];
  private readonly logger: Logger;
  private readonly context: () => LeaderContext;

  /** `context`: the term's context, read when a job runs (it is built after its queues). */
  constructor(redis: Config["redis"], logger: Logger, context: () => LeaderContext) {
    this.redis = redis;
    this.logger = logger;
    this.context = context;
  }

  async add(replicaId: string, job: { name: string; data: object; opts?: JobsOptions }): Promise<Job> {
    return this.queueFor(replicaId).add(job.name, job.data, job.opts);
  }

  /** Also starts the replica's worker, so that jobs a previous leader queued there run. */
  async holds(replicaId: string, jobId: string): Promise<boolean> {
    const job = await this.queueFor(replicaId).getJob(jobId);
    return job !== undefined && job !== null;
  }

  private queueFor(replicaId: string): Queue {
    let queue = this.queues.get(replicaId);
    if (!queue) {
      const name = replicaOpsQueue(replicaId);
      queue = new Queue(name, {
        connection: createRedis(this.redis, "producer"),
        prefix: bullPrefix(this.redis),
        defaultJobOptions: replicaOpJobOptions,
      });
      this.queues.set(replicaId, queue);
      const worker = new Worker(name, (job) => runJob(this.context(), job), {
        connection: createRedis(this.redis, "worker"),
        prefix: bullPrefix(this.redis),
        concurrency: 1,
      });
      worker.on("error", (error) =>
        this.logger.error({ err: error, replica_id: replicaId }, "op worker error"),
      );
      worker.on("failed", (job, error) => void jobFailed(this.context(), job, error));
      this.workers.set(replicaId, worker);
    }
    return queue;
  }

  async close(): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.close()));
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}
