import type { Job } from "bullmq";
import type { z } from "zod";
import type { LeaderContext } from "../context.ts";
import { loadJob } from "./load.ts";
import { placeJob } from "./place.ts";
import { unloadJob } from "./unload.ts";

/** One kind of job the leader works: its name on the queue, its payload's schema, and its handler. */
export interface JobDefinition<P> {
  name: string;
  payload: z.ZodType<P>;
  /** Runs the job; the string is kept as the job's result. Throwing retries it (unless unrecoverable). */
  handle(ctx: LeaderContext, payload: P, job: Job): Promise<string>;
  /** The job failed for good (out of retries, or unrecoverable). */
  failedForGood?(ctx: LeaderContext, payload: P, error: Error): Promise<void>;
}

/** Lets a definition with its own payload type sit in the registry beside the others. */
function define<P>(definition: JobDefinition<P>): JobDefinition<unknown> {
  return definition as JobDefinition<unknown>;
}

const JOBS: ReadonlyMap<string, JobDefinition<unknown>> = new Map(
  [define(placeJob), define(loadJob), define(unloadJob)].map((job) => [job.name, job]),
);

export function jobNamed(name: string): JobDefinition<unknown> | undefined {
  return JOBS.get(name);
}
