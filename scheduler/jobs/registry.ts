import type { JobDefinition } from "./definition.ts";
import { loadJob } from "./load.ts";
import { placeJob } from "./place.ts";
import { unloadJob } from "./unload.ts";

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
