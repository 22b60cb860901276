import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, inject } from "vitest";
import { createApp } from "../api/app.ts";
import { OPERATOR_SCOPES, type Scope, TENANT_SCOPES } from "../api/auth/scopes.ts";
import type { AppDeps } from "../api/deps.ts";
import { buildDeps } from "../api/runtime.ts";
import { createTenant, type TenantLimits, type TenantRow } from "../db/queries/tenants.ts";
import { S3RVER_CREDENTIALS } from "../infra/dev/s3-server.ts";
import { type Config, parseConfig } from "../lib/env.ts";
import { createLogger } from "../lib/logger.ts";
import { closeAll } from "../lib/shutdown.ts";
import { databaseUrl } from "./setup/global.ts";

export interface TestResponse<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

export interface TestTenant {
  row: TenantRow;
  id: string;
  token: (scopes?: readonly Scope[]) => Promise<string>;
}

/** A multipart upload body as a client would send it. */
export function adapterForm(files: {
  config?: Buffer | string;
  model?: Buffer;
  modelFilename?: string;
}): FormData {
  const form = new FormData();
  if (files.config !== undefined) {
    form.append("adapter_config", new Blob([files.config]), "adapter_config.json");
  }
  if (files.model !== undefined) {
    form.append("adapter_model", new Blob([files.model]), files.modelFilename ?? "adapter_model.safetensors");
  }
  return form;
}

export interface Harness {
  config: Config;
  deps: AppDeps;
  app: ReturnType<typeof createApp>;
  databaseName: string;
  adminToken: () => Promise<string>;
  newTenant: (input?: { name?: string; limits?: Partial<TenantLimits> }) => Promise<TestTenant>;
  request: <T = unknown>(
    method: string,
    path: string,
    options?: { token?: string; body?: unknown; headers?: Record<string, string> },
  ) => Promise<TestResponse<T>>;
}

const suffix = () => randomBytes(5).toString("hex");

/** Config for an isolated world: its own database (cloned from the template), Redis prefix and bucket. */
export function isolatedConfig(databaseName: string, overrides: Record<string, string> = {}): Config {
  return parseConfig({
    NODE_ENV: "test",
    LOG_LEVEL: "silent",
    DATABASE_URL: databaseUrl(inject("pgBaseUrl"), databaseName),
    DATABASE_POOL_SIZE: "4",
    REDIS_URL: inject("redisUrl"),
    USAGE_REDIS_URL: inject("usageRedisUrl"),
    // Test files run side by side: no fixed metrics port (the public /metrics serves operators).
    API_METRICS_PORT: "0",
    REDIS_PREFIX: `${databaseName}:`,
    S3_ENDPOINT: inject("s3Endpoint"),
    S3_BUCKET: `b-${databaseName.replaceAll("_", "-")}`,
    S3_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
    S3_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
    KEY_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
    ...overrides,
  });
}

/**
 * Clones the migrated template into a fresh database for one test file. `timezone`: the database's
 * default session time zone (what a connection gets unless it sets its own).
 */
export async function cloneDatabase(options: { timezone?: string } = {}): Promise<string> {
  const name = `${inject("runId")}_${suffix()}`;
  const sql = postgres(inject("pgBaseUrl"), { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`create database "${name}" template "${inject("templateDb")}"`);
    if (options.timezone !== undefined) {
      await sql.unsafe(`alter database "${name}" set timezone to '${options.timezone.replaceAll("'", "")}'`);
    }
  } finally {
    await sql.end();
  }
  return name;
}

/**
 * A test world: real Postgres (own database), Redis (own prefix), S3 (own bucket), the real app
 * served in-process through `app.request`. `close` releases what it holds.
 */
export async function startHarness(
  overrides: Record<string, string> = {},
  database: { timezone?: string } = {},
): Promise<{ h: Harness; close: () => Promise<void> }> {
  const databaseName = await cloneDatabase(database);
  const config = isolatedConfig(databaseName, overrides);
  const logger = createLogger(config.log);
  const { deps, closers } = await buildDeps(config, logger, { defaultMetrics: false });
  const close = async () => {
    await closeAll(closers, 5_000, logger);
  };
  await deps.store.ensureBucket().catch(async (error: unknown) => {
    await close();
    throw error;
  });
  const app = createApp(deps);
  const request: Harness["request"] = async (method, path, options = {}) => {
    const headers: Record<string, string> = { ...options.headers };
    if (options.token) {
      headers.authorization = `Bearer ${options.token}`;
    }
    let body: string | FormData | undefined;
    if (options.body instanceof FormData) {
      body = options.body;
    } else if (options.body !== undefined) {
      body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
      headers["content-type"] ??= "application/json";
    }
    const res = await app.request(path, { method, headers, ...(body !== undefined && { body }) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, headers: res.headers, body: parsed as never, text };
  };
  const h: Harness = {
    config,
    deps,
    app,
    databaseName,
    request,
    adminToken: async () =>
      (
        await deps.keyRing.sign({
          subject: "operator:test",
          tenantId: null,
          scopes: [...OPERATOR_SCOPES],
          ttlSeconds: 600,
        })
      ).token,
    newTenant: async (input = {}) => {
      const row = await createTenant(deps.db, {
        name: input.name ?? `tenant-${suffix()}`,
        ...(input.limits && { limits: input.limits }),
      });
      return {
        row,
        id: row.id,
        token: async (scopes = TENANT_SCOPES) =>
          (
            await deps.keyRing.sign({
              subject: `tenant:${row.id}`,
              tenantId: row.id,
              scopes: [...scopes],
              ttlSeconds: 600,
            })
          ).token,
      };
    },
  };
  return { h, close };
}

/** A proxy that reads `current()`'s fields, or says when they are read before the hooks ran. */
export function readyOnlyInHooks<T extends object>(what: string, current: () => T | undefined): T {
  return new Proxy({} as T, {
    get: (_, key) => {
      const value = current();
      if (!value) {
        throw new Error(`${what} is ready only inside tests and hooks (after beforeAll)`);
      }
      return value[key as keyof T];
    },
  });
}

/** The per-file test world (see startHarness). Call at the top of a test file. */
export function useHarness(
  overrides: Record<string, string> = {},
  database: { timezone?: string } = {},
): Harness {
  let started: Awaited<ReturnType<typeof startHarness>> | undefined;
  beforeAll(async () => {
    started = await startHarness(overrides, database);
  });
  afterAll(async () => {
    await started?.close();
  });
  return readyOnlyInHooks("the harness", () => started?.h);
}
