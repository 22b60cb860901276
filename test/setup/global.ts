import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import type { TestProject } from "vitest/node";
import { prepareDatabase } from "../../api/runtime.ts";
import { startS3Server } from "../../infra/dev/s3-server.ts";
import { ensureServices, startRedisServer } from "../../infra/dev/services.ts";
import { parseConfig } from "../../lib/env.ts";

declare module "vitest" {
  interface ProvidedContext {
    runId: string;
    pgBaseUrl: string;
    templateDb: string;
    redisUrl: string;
    /** The usage stream's Redis: our own, fsyncing every write, as production's must (USAGE_REDIS_URL). */
    usageRedisUrl: string;
    s3Endpoint: string;
  }
}

const PG_BASE_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export function databaseUrl(base: string, name: string): string {
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

/**
 * Once per `npm test`: real Postgres and Redis (started if stopped), a migrated and seeded template
 * database that each test file clones in milliseconds, and a real S3-protocol server on a temp folder.
 */
export async function setup(project: TestProject) {
  await ensureServices({ databaseUrl: PG_BASE_URL, redisUrl: REDIS_URL });
  const runId = `lpt_${Date.now().toString(36)}_${process.pid}`;
  const templateDb = `${runId}_tpl`;
  await prepareDatabase(
    parseConfig({
      DATABASE_URL: databaseUrl(PG_BASE_URL, templateDb),
      KEY_ENCRYPTION_KEY: Buffer.alloc(32).toString("base64"),
    }),
  );
  const s3Dir = mkdtempSync(join(tmpdir(), "loraplane-s3-"));
  const s3 = await startS3Server({ directory: s3Dir, port: 0 });
  const usageRedisDir = mkdtempSync(join(tmpdir(), "loraplane-usage-redis-"));
  const usageRedis = await startRedisServer({ dir: usageRedisDir, durable: true });

  project.provide("runId", runId);
  project.provide("pgBaseUrl", PG_BASE_URL);
  project.provide("templateDb", templateDb);
  project.provide("redisUrl", REDIS_URL);
  project.provide("usageRedisUrl", usageRedis.url);
  project.provide("s3Endpoint", s3.endpoint);

  return async () => {
    await s3.close();
    rmSync(s3Dir, { recursive: true, force: true });
    await usageRedis.close();
    rmSync(usageRedisDir, { recursive: true, force: true });
    const sql = postgres(PG_BASE_URL, { max: 1, onnotice: () => {} });
    try {
      const rows = await sql<
        { datname: string }[]
      >`select datname from pg_database where datname like ${`${runId}%`}`;
      for (const { datname } of rows) {
        await sql.unsafe(`drop database if exists "${datname}" with (force)`);
      }
    } finally {
      await sql.end();
    }
  };
}
