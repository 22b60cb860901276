import type { Database } from "../db/index.ts";
import { existingVersionIds } from "../db/index.ts";
import type { Logger } from "../lib/index.ts";
import type { AdapterStore } from "./storage.ts";

/**
 * An object younger than this may belong to an upload still finishing (the version row is written
 * right after the weights land): only older ones without a row are orphans.
 */
export const ORPHAN_GRACE_MS = 60 * 60 * 1000;
/** Objects looked at per sweep; the next sweep goes on where this one stopped mattering. */
const SWEEP_OBJECTS = 100_000;
/** tenants/<tenant>/adapters/<adapter>/<version>/<file>: where uploads put a version's files. */
const VERSION_KEY = /^tenants\/[^/]+\/adapters\/[^/]+\/(ver_[0-9a-z]+)\/[^/]+$/;

/**
 * Deletes adapter files no version row names: what a crash between the S3 upload and the database
 * insert leaves. Files of versions that exist (deleted adapters' included: their cleanup job owns
 * them) and files still inside the grace period are kept. Returns the keys deleted.
 */
export async function sweepOrphanObjects(
  deps: { db: Database; store: AdapterStore; logger: Logger },
  options: { graceMs?: number; now?: Date } = {},
): Promise<string[]> {
  const cutoff = (options.now ?? new Date()).getTime() - (options.graceMs ?? ORPHAN_GRACE_MS);
  const old = (await deps.store.listObjects("tenants/", SWEEP_OBJECTS)).filter(
    (o) => o.lastModified.getTime() < cutoff,
  );
  const byVersion = new Map<string, string[]>();
  for (const { key } of old) {
    const version = VERSION_KEY.exec(key)?.[1];
    if (version) {
      byVersion.set(version, [...(byVersion.get(version) ?? []), key]);
    }
  }
  const versions = [...byVersion.keys()];
  const known = new Set<string>();
  for (let i = 0; i < versions.length; i += 1_000) {
    for (const id of await existingVersionIds(deps.db, versions.slice(i, i + 1_000))) {
      known.add(id);
    }
  }
  const orphans = versions.filter((v) => !known.has(v)).flatMap((v) => byVersion.get(v) ?? []);
  if (orphans.length > 0) {
    await deps.store.delete(orphans);
    deps.logger.warn(
      { objects: orphans.length },
      "deleted adapter files no version names (an interrupted upload's)",
    );
  }
  return orphans;
}
