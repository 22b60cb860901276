import type { Job } from "bullmq";
import type { z } from "zod";
import type { LeaderContext } from "../context.ts";

/** One kind of job the leader works: its name on the queue, its payload's schema, and its handler. */
export interface JobDefinition<P> {
  name: string;
  payload: z.ZodType<P>;
  /** Runs the job; the string is kept as the job's result. Throwing retries it (unless unrecoverable). */
  handle(ctx: LeaderContext, payload: P, job: Job): Promise<string>;
  /** The job failed for good (out of retries, or unrecoverable). */
  failedForGood?(ctx: LeaderContext, payload: P, error: Error): Promise<void>;
}
