import { randomBytes } from "node:crypto";
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { OPERATOR_SCOPES, TENANT_SCOPES } from "../../api/auth/scopes.ts";
import { startAdapterCleanupWorker } from "../../adapters/cleanup.ts";
import { buildDeps, prepareDatabase, startHttp } from "../../api/runtime.ts";
import { createTenant, findTenantByName } from "../../db/queries/tenants.ts";
import { loadConfig } from "../../lib/env.ts";
import { createLogger } from "../../lib/logger.ts";
import { type Closer, installShutdown } from "../../lib/shutdown.ts";
import { S3RVER_CREDENTIALS, startS3Server } from "./s3-server.ts";
import { ensureServices, isListening } from "./services.ts";

const ENV_FILE = ".env";
const DEMO_TENANT = "demo";
const S3_DEV_PORT = 9310;

/** Dev secrets live in a git-ignored .env so that `npm run token` signs with the same keys later. */
function ensureDevEnvFile(): void {
  const current = existsSync(ENV_FILE) ? readFileSync(ENV_FILE, "utf8") : "";
  if (!/^KEY_ENCRYPTION_KEY=/m.test(current) && !process.env.KEY_ENCRYPTION_KEY) {
    appendFileSync(
      ENV_FILE,
      `${current && !current.endsWith("\n") ? "\n" : ""}# written by npm start for local development\nKEY_ENCRYPTION_KEY=${randomBytes(32).toString("base64")}\n`,
    );
  }
}

const say = (line: string) => process.stdout.write(`${line}\n`);

ensureDevEnvFile();
process.loadEnvFile(ENV_FILE);
process.env.LOG_LEVEL ??= "warn";

await ensureServices({
  databaseUrl: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/loraplane",
  redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
});

const closers: Closer[] = [];
if (!process.env.S3_ENDPOINT) {
  const port = (await isListening("127.0.0.1", S3_DEV_PORT)) ? 0 : S3_DEV_PORT;
  const s3 = await startS3Server({ directory: ".loraplane/s3", port });
  process.env.S3_ENDPOINT = s3.endpoint;
  process.env.S3_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
  process.env.S3_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
  closers.push({ name: "s3rver", close: () => s3.close() });
}

const config = loadConfig(ENV_FILE);
const logger = createLogger(config.log, "loraplane");
await prepareDatabase(config);
const { deps, closers: depClosers } = await buildDeps(config, logger);
await deps.store.ensureBucket();

const demo =
  (await findTenantByName(deps.db, DEMO_TENANT)) ??
  (await createTenant(deps.db, { name: DEMO_TENANT, limits: { rpm: 600, tpm: 200_000 } }));
const cleanupWorker = await startAdapterCleanupWorker({ ...deps, config: config.redis });
const http = await startHttp(deps);
installShutdown(
  [http.closer, { name: "adapter-cleanup", close: cleanupWorker.close }, ...depClosers, ...closers.reverse()],
  config.shutdownTimeoutMs,
  logger,
);

const week = 7 * 24 * 3600;
const admin = await deps.keyRing.sign({
  subject: "operator:dev",
  tenantId: null,
  scopes: [...OPERATOR_SCOPES],
  ttlSeconds: week,
});
const tenant = await deps.keyRing.sign({
  subject: `tenant:${demo.id}`,
  tenantId: demo.id,
  scopes: [...TENANT_SCOPES],
  ttlSeconds: week,
});

say("");
say("loraplane is ready");
say(`  API           ${http.url}`);
say(`  OpenAPI       ${http.url}/openapi.json`);
say(`  readiness     ${http.url}/readyz`);
say(`  metrics       ${http.url}/metrics`);
say(`  S3            ${config.s3.endpoint ?? "(AWS default)"} bucket ${config.s3.bucket}`);
say(`  demo tenant   ${demo.id}`);
say("");
say(`admin token (scopes: ${OPERATOR_SCOPES.join(" ")}; valid 7 days):`);
say(admin.token);
say("");
say(`demo tenant token (scopes: ${TENANT_SCOPES.join(" ")}; valid 7 days):`);
say(tenant.token);
say("");
say(`try: curl -H "Authorization: Bearer <demo token>" ${http.url}/v1/base-models`);
say("Ctrl-C stops everything.");
